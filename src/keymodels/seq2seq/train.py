"""Training and evaluation of a Seq2Seq model: epochs, checkpoints, resume, loss, accuracy, BLEU.

A run directory holds ``last.safetensors`` (after every epoch), ``best.safetensors`` (best on
validation), ``metrics.csv`` and ``config.json``; everything a checkpoint needs to rebuild the
model (config, vocabularies) is in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ..errors import InvalidInputError
from ..metrics import MetricsLogger
from ..registry import get_config
from ..rundir import claim_run_folder
from ..runguard import (
    GracefulStop,
    NonFiniteGuard,
    NonFiniteLossError,
    crash_point,
    remove_stale_temp_files,
)
from ..runtime import (
    PrecisionChoice,
    autocast,
    check_precision,
    choice_key,
    choose_inference_precision,
    choose_training_precision,
)
from .data import (
    SYNTHETIC_TASKS,
    TASKS,
    Pair,
    TranslationDataset,
    collate,
    load_multi30k,
    make_loader,
    make_synthetic,
)
from .model import Seq2Seq, Seq2SeqConfig
from .search import Hypothesis, beam_search, greedy_search
from .vocab import Vocabulary, detokenize

log = logging.getLogger(__name__)

KIND = "keymodels.seq2seq"
SCHEDULES = ("plateau", "cosine")


@dataclass
class TrainConfig:
    """How to train; saved with every checkpoint so ``--resume`` and ``eval`` rebuild the same data."""

    task: str = "reverse"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    # "plateau": halve lr when the validation score stops rising; "cosine": anneal it per step to
    # zero over ``epochs``, the better use of a fixed budget (Li et al. 2020, budgeted training).
    schedule: str = "plateau"
    clip: float = 1.0
    teacher_forcing: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    max_len: int = 50  # longest training sentence kept (tokens)
    too_long: str = "truncate"  # or "drop" / "error" for training pairs over max_len
    num_workers: int = 0
    max_minutes: float | None = None  # stop after the epoch that would overrun this budget
    on_nonfinite: str = "stop"  # a NaN/inf loss: "stop" (keep the last checkpoint) or "skip"
    # synthetic tasks
    train_size: int = 20000
    val_size: int = 1000
    min_len: int = 3
    len_max: int = 12  # longest synthetic sequence
    num_symbols: int = 20
    # translation
    data_dir: str = "../shared/data/multi30k"
    src_lang: str = "de"
    tgt_lang: str = "en"
    min_freq: int = 2
    max_vocab: int | None = None
    lowercase: bool = False
    val_beam: int = 1  # greedy on validation during training; beam at eval time

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InvalidInputError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise InvalidInputError(
                f"teacher_forcing must be in [0, 1]; got {self.teacher_forcing}"
            )
        NonFiniteGuard(self.on_nonfinite)  # validates the policy
        if self.schedule not in SCHEDULES:
            raise InvalidInputError(f"schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        for name in ("epochs", "batch_size", "max_len"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1; got {getattr(self, name)}")

    @property
    def synthetic(self) -> bool:
        return self.task in SYNTHETIC_TASKS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of :meth:`to_dict`; an unknown key is an error, not silently dropped."""
        from ..errors import reject_unknown_fields

        reject_unknown_fields("train config", d, (f.name for f in dataclasses.fields(cls)))
        return cls(**d)


# ---------------------------------------------------------------------------- data


def load_task(tc: TrainConfig, split: str) -> list[Pair]:
    """The pairs of ``split`` (train/val/test) for the task; synthetic splits use distinct seeds."""
    if tc.synthetic:
        n = tc.train_size if split == "train" else tc.val_size
        seed = tc.seed * 10 + {"train": 1, "val": 2, "test": 3}[split]
        return make_synthetic(tc.task, n, tc.min_len, tc.len_max, tc.num_symbols, seed)
    return load_multi30k(tc.data_dir, split, tc.src_lang, tc.tgt_lang, tc.lowercase)


def build_vocabs(tc: TrainConfig, train: Sequence[Pair]) -> tuple[Vocabulary, Vocabulary]:
    min_freq = 1 if tc.synthetic else tc.min_freq
    src = Vocabulary.build((s for s, _ in train), min_freq, tc.max_vocab, tc.lowercase)
    tgt = Vocabulary.build((t for _, t in train), min_freq, tc.max_vocab, tc.lowercase)
    return src, tgt


# ---------------------------------------------------------------------------- checkpoints


def save_run_checkpoint(
    path: Path,
    model: Seq2Seq,
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    tc: TrainConfig,
    state: dict[str, Any],
) -> Path:
    meta = {
        "kind": KIND,
        "config": model.config.to_dict(),
        "train_config": tc.to_dict(),
        "src_vocab": src_vocab.to_dict(),
        "tgt_vocab": tgt_vocab.to_dict(),
        "epoch": state.get("epoch"),
    }
    return save_checkpoint(path, Checkpoint(model=model.state_dict(), state=state, meta=meta))


@dataclass
class LoadedRun:
    model: Seq2Seq
    src_vocab: Vocabulary
    tgt_vocab: Vocabulary
    train_config: TrainConfig
    checkpoint: Checkpoint


def load_run(path: str | Path) -> LoadedRun:
    """Rebuild model and vocabularies from a checkpoint (file or run directory), in eval mode."""
    ckpt = load_checkpoint(resolve_checkpoint(path, "keymodels seq2seq train"))
    if ckpt.meta.get("kind") != KIND:
        what = (
            "a ViT classifier's (use keymodels eval/predict)"
            if "class_names" in ckpt.meta
            else "another model's"
        )
        raise CheckpointError(
            f"{path} is not a seq2seq model's checkpoint but {what}; pass the folder or checkpoint "
            "of a `keymodels seq2seq train` run"
        )
    config = Seq2SeqConfig.from_dict(ckpt.meta["config"])
    model = Seq2Seq(config)
    src_vocab = Vocabulary.from_dict(ckpt.meta["src_vocab"])
    tgt_vocab = Vocabulary.from_dict(ckpt.meta["tgt_vocab"])
    check_compatible(model, ckpt.model, src_vocab, tgt_vocab, str(path))
    model.load_state_dict(ckpt.model)
    return LoadedRun(
        model.eval(), src_vocab, tgt_vocab, TrainConfig.from_dict(ckpt.meta["train_config"]), ckpt
    )


def check_compatible(
    model: Seq2Seq,
    weights: dict[str, torch.Tensor],
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    where: str,
) -> None:
    """Raise a CheckpointError naming the first difference between weights and model/vocabularies."""
    for side, vocab, size in (
        ("source", src_vocab, model.config.src_vocab_size),
        ("target", tgt_vocab, model.config.tgt_vocab_size),
    ):
        if len(vocab) != size:
            raise CheckpointError(
                f"{where}: the {side} vocabulary has {len(vocab)} tokens but the model expects {size}"
            )
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: architecture mismatch: missing weights {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for k, v in own.items():
        if v.shape != weights[k].shape:
            raise CheckpointError(
                f"{where}: architecture mismatch at {k}: checkpoint {tuple(weights[k].shape)}, "
                f"model {tuple(v.shape)}"
            )


# ---------------------------------------------------------------------------- training


def sequence_loss(
    logits: torch.Tensor, gold: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy over the non-padding target tokens: logits [B, T, V], gold [B, T]."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        gold.reshape(-1),
        ignore_index=0,
        label_smoothing=label_smoothing,
    )


def train(
    model_name: str,
    tc: TrainConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    precision: str = "auto",
    force: bool = False,
    **model_overrides: Any,
) -> dict[str, Any]:
    """Train the registered model ``model_name`` (with ``model_overrides``) on ``tc.task``.

    Writes ``last.safetensors`` after every epoch and ``best.safetensors`` when the validation
    score (sequence accuracy or BLEU) improves; with ``resume`` continues from
    ``out/last.safetensors`` exactly as an uninterrupted run would. A folder that holds a trained
    run is refused unless ``resume`` or ``force`` (start over: its outputs are removed first).

    ``precision`` is "auto" (time a few steps in fp32 and in bf16 autocast on a training batch,
    keep the faster; a resumed run keeps its choice), "fp32" or "bf16"; weights, optimizer state
    and checkpoints stay fp32, and the choice is written to ``out/precision.json``.

    Returns:
        A summary: the per-epoch history and the best validation score.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM arrived; the step was finished and the state saved
            in ``out/last.safetensors``, from which ``resume=True`` continues exactly.
        NonFiniteLossError: the loss became NaN or infinite (``tc.on_nonfinite="stop"``).
    """
    with claim_run_folder(out, "seq2seq", resume=resume, force=force), GracefulStop() as stop:
        return _train(
            model_name, tc, Path(out), resume, progress, on_epoch, stop, precision, model_overrides
        )


def _train(
    model_name: str,
    tc: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    stop: GracefulStop,
    precision: str,
    model_overrides: dict[str, Any],
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)
    start = time.perf_counter()
    ckpt = None
    if resume:
        last = out / "last.safetensors"
        if not last.is_file():
            raise CheckpointError(
                f"nothing to resume: {last} does not exist (train without --resume)"
            )
        ckpt = load_checkpoint(last)
        if ckpt.meta.get("kind") != KIND:
            raise CheckpointError(f"{last} is not a seq2seq checkpoint; cannot resume from it")
        # The data and model come from the checkpoint; only how long to go on may change.
        stored = TrainConfig.from_dict(ckpt.meta["train_config"])
        tc = dataclasses.replace(
            stored, epochs=tc.epochs, max_minutes=tc.max_minutes, on_nonfinite=tc.on_nonfinite
        )  # a cosine schedule stretches to the new number of epochs
    guard = NonFiniteGuard(tc.on_nonfinite)
    torch.manual_seed(tc.seed)
    train_pairs, val_pairs = load_task(tc, "train"), load_task(tc, "val")
    if ckpt is not None:
        src_vocab = Vocabulary.from_dict(ckpt.meta["src_vocab"])
        tgt_vocab = Vocabulary.from_dict(ckpt.meta["tgt_vocab"])
        config = Seq2SeqConfig.from_dict(ckpt.meta["config"])
    else:
        src_vocab, tgt_vocab = build_vocabs(tc, train_pairs)
        config = get_config(
            model_name,
            **{
                "src_vocab_size": len(src_vocab),
                "tgt_vocab_size": len(tgt_vocab),
                **model_overrides,
            },
        )
        config = dataclasses.replace(config, max_len=max(config.max_len, tc.max_len))
    model = Seq2Seq(config)
    train_set = TranslationDataset(train_pairs, src_vocab, tgt_vocab, tc.max_len, tc.too_long)
    val_set = TranslationDataset(val_pairs, src_vocab, tgt_vocab, tc.max_len, "truncate")
    loader = make_loader(train_set, tc.batch_size, True, tc.seed, tc.num_workers)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    total_steps = tc.epochs * len(loader)
    scheduler: Any = (
        torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / total_steps)))
        )
        if tc.schedule == "cosine"
        else torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=1
        )
    )
    history: list[dict[str, Any]] = []
    first_epoch, best = 1, -math.inf
    partial: dict[str, Any] | None = None  # an epoch a stop interrupted, to be finished first
    if ckpt is not None:
        check_compatible(model, ckpt.model, src_vocab, tgt_vocab, str(out / "last.safetensors"))
        model.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.state["optimizer"])
        scheduler.load_state_dict(ckpt.state["scheduler"])
        set_rng_state(ckpt.state["rng"])
        first_epoch, best = ckpt.state["epoch"] + 1, ckpt.state["best"]
        history = ckpt.state["history"]
        partial = ckpt.state.get("partial")
    timing_batch = collate([train_set[i] for i in range(min(tc.batch_size, len(train_set)))])

    def timing_loss() -> torch.Tensor:  # one step on the first training sentences
        tgt = timing_batch["tgt"]
        logits, _ = model(timing_batch["src"], timing_batch["src_lengths"], tgt[:, :-1])
        return sequence_loss(logits.float(), tgt[:, 1:], tc.label_smoothing)

    previous = ckpt.state.get("precision") if ckpt is not None else None
    choice = choose_training_precision(precision, model, timing_loss, "cpu", previous)
    (out / "precision.json").write_text(json.dumps(choice.to_dict(), indent=2))
    (out / "config.json").write_text(
        json.dumps({"model": config.to_dict(), "train": tc.to_dict()}, indent=2)
    )
    logger = MetricsLogger(out)
    # elapsed_s and the --max-minutes budget count the training time before a resume too
    start -= history[-1]["elapsed_s"] if history else 0.0

    def save(path: Path, epoch: int, **extra: Any) -> None:
        state = {
            "epoch": epoch,
            "best": best,
            "history": history,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "precision": choice.to_dict(),
            **extra,
        }
        save_run_checkpoint(path, model, src_vocab, tgt_vocab, tc, state)

    for epoch in range(first_epoch, tc.epochs + 1):
        t0 = time.perf_counter()
        sums = {"total": 0.0, "tokens": 0, "batches": 0, "nonfinite": 0, "time": 0.0}
        if partial:
            sums.update({k: partial[k] for k in sums})
            t0 -= sums["time"]
            start -= sums["time"]
        # The batch order depends only on (seed, epoch): an interrupted epoch goes on where it was.
        loader.batch_sampler.set_epoch(epoch, start=sums["batches"])
        partial = None
        model.train()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{tc.epochs}",
            disable=not progress,
            leave=False,
            initial=sums["batches"],
            total=len(loader),
        )
        for batch in bar:
            sums["batches"] += 1
            tgt = batch["tgt"]
            with autocast(choice.precision):
                logits, _ = model(
                    batch["src"], batch["src_lengths"], tgt[:, :-1], tc.teacher_forcing
                )
            loss = sequence_loss(logits.float(), tgt[:, 1:], tc.label_smoothing)
            loss_value = loss.item()
            where = f"batch {sums['batches']} of epoch {epoch}"
            if guard.should_skip(loss_value, where):
                sums["nonfinite"] += 1
            elif not math.isfinite(loss_value):
                kept = (out / "last.safetensors").is_file()
                raise NonFiniteLossError(
                    f"loss became {loss_value} at {where}; training stopped, "
                    + (
                        f"the last good checkpoint {out / 'last.safetensors'} is kept"
                        if kept
                        else "no checkpoint had been written yet"
                    )
                    + ". Lower --lr or keep --clip on, then --resume, or pass --on-nonfinite skip"
                )
            else:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tc.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
                optimizer.step()
                if tc.schedule == "cosine":
                    scheduler.step()
                n = int((tgt[:, 1:] != 0).sum())
                sums["total"] += loss_value * n
                sums["tokens"] += n
                crash_point("train_step")
            bar.set_postfix(loss=f"{sums['total'] / max(sums['tokens'], 1):.3f}")
            if stop.requested:
                break
        bar.close()
        if stop.requested:
            # SIGINT/SIGTERM: the step is done; save the epoch so far, to be finished on resume.
            sums["time"] = time.perf_counter() - t0
            last = out / "last.safetensors"
            save(last, epoch - 1, partial={**sums, "rng": rng_state()})
            raise stop.interrupted(last, f"batch {sums['batches']}/{len(loader)} of epoch {epoch}")
        with autocast(choice.precision):
            metrics = evaluate(
                model, val_set, tgt_vocab, tc.synthetic, beam=tc.val_beam, by_length=False
            )
        score = metrics["accuracy"] if tc.synthetic else metrics["bleu"]
        if tc.schedule == "plateau":
            scheduler.step(score)
        row = {
            "epoch": epoch,
            "train_loss": sums["total"] / max(sums["tokens"], 1),
            "val_loss": metrics["loss"],
            "val_ppl": metrics["ppl"],
            ("val_acc" if tc.synthetic else "val_bleu"): score,
            "lr": optimizer.param_groups[0]["lr"],
            "nonfinite_steps": sums["nonfinite"],
            "precision": choice.precision,
            "epoch_s": time.perf_counter() - t0,
            "elapsed_s": time.perf_counter() - start,
        }
        history.append(row)
        logger.log(epoch, **{k: v for k, v in row.items() if k != "epoch"})
        log.info("epoch %d: %s", epoch, row)
        is_best = score > best
        best = max(best, score)
        save(out / "last.safetensors", epoch)
        if is_best:
            save(out / "best.safetensors", epoch)
        if on_epoch is not None:
            on_epoch(row)
        if tc.max_minutes is not None and epoch < tc.epochs:
            now = time.perf_counter()
            if now - start + (now - t0) > tc.max_minutes * 60:  # the next epoch would overrun
                log.info(
                    "stopping after epoch %d: the next would exceed %s min", epoch, tc.max_minutes
                )
                break
    logger.close()
    return {"history": history, "best": best, "out": str(out)}


# ---------------------------------------------------------------------------- evaluation


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU of detokenized, cased text with sacrebleu's defaults (13a tokenizer)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise InvalidInputError(
            f"BLEU needs one reference per hypothesis; got {len(hypotheses)} and {len(references)}"
        )
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


@torch.no_grad()
def decode_dataset(
    model: Seq2Seq,
    dataset: TranslationDataset,
    tgt_vocab: Vocabulary,
    beam: int = 1,
    alpha: float = 0.6,
    batch_size: int = 100,
    max_len: int | None = None,
) -> list[Hypothesis]:
    """The best hypothesis for every source of ``dataset``, in dataset order."""
    model.eval()
    out: list[Hypothesis | None] = [None] * len(dataset)
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.src[i]))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        batch = collate([dataset[j] for j in idx])
        limit = max_len or int(batch["src_lengths"].max()) * 2 + 10
        if beam == 1:
            hyps = greedy_search(
                model,
                batch["src"],
                batch["src_lengths"],
                limit,
                tgt_vocab.bos_id,
                tgt_vocab.eos_id,
                alpha,
            )
        else:
            hyps = [
                h[0]
                for h in beam_search(
                    model,
                    batch["src"],
                    batch["src_lengths"],
                    beam,
                    limit,
                    tgt_vocab.bos_id,
                    tgt_vocab.eos_id,
                    alpha,
                )
            ]
        for j, h in zip(idx, hyps):
            out[j] = h
    return out  # type: ignore[return-value]


@torch.no_grad()
def dataset_loss(
    model: Seq2Seq, dataset: TranslationDataset, batch_size: int = 100
) -> tuple[float, int]:
    """Mean per-token cross-entropy (no label smoothing) with teacher forcing, and the token count."""
    model.eval()
    total, tokens = 0.0, 0
    loader = make_loader(dataset, batch_size, shuffle=False)
    for batch in loader:
        tgt = batch["tgt"]
        logits, _ = model(batch["src"], batch["src_lengths"], tgt[:, :-1])
        n = int((tgt[:, 1:] != 0).sum())
        total += float(sequence_loss(logits.float(), tgt[:, 1:])) * n
        tokens += n
    return total / max(tokens, 1), tokens


def choose_decode_precision(
    requested: str,
    model: Seq2Seq,
    tgt_vocab: Vocabulary,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam: int = 1,
) -> PrecisionChoice:
    """The precision to decode in: "auto" times one search over ``src`` [B, S] in fp32 and in
    bf16 autocast (the choice is cached per model, batch shape and machine)."""
    limit, bos, eos = int(src_lengths.max()) * 2 + 10, tgt_vocab.bos_id, tgt_vocab.eos_id

    def step() -> None:
        if beam == 1:
            greedy_search(model, src, src_lengths, limit, bos, eos)
        else:
            beam_search(model, src, src_lengths, beam, limit, bos, eos)

    key = f"{choice_key(model, src, 'cpu')}/beam{beam}"
    return choose_inference_precision(requested, step, key)


def length_bucket(n: int, synthetic: bool) -> str:
    """Synthetic tasks: exact source length; translation: 1-10, 11-15, 16-20, 21+ words
    (Multi30k test2016 has 397/431/131/41 sentences in these, enough for a BLEU each)."""
    if synthetic:
        return str(n)
    if n <= 10:
        return "1-10"
    if n > 20:
        return "21+"
    lo = (n - 1) // 5 * 5 + 1
    return f"{lo}-{lo + 4}"


def evaluate(
    model: Seq2Seq,
    dataset: TranslationDataset,
    tgt_vocab: Vocabulary,
    synthetic: bool,
    beam: int = 1,
    alpha: float = 0.6,
    by_length: bool = True,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Loss, perplexity, and sequence accuracy (synthetic) or BLEU (translation), overall and by
    source length (``by_length``: rows of length bucket, count, score).

    ``precision``: "fp32", "bf16" or "auto" (:func:`choose_decode_precision` on the first 100
    sentences); the result's ``precision`` says which ran.
    """
    if precision == "auto" and len(dataset):
        first = collate([dataset[i] for i in range(min(100, len(dataset)))])
        precision = choose_decode_precision(
            precision, model, tgt_vocab, first["src"], first["src_lengths"], beam
        ).precision
    check_precision(precision)
    with autocast(precision):
        loss, tokens = dataset_loss(model, dataset)
        hyps = decode_dataset(model, dataset, tgt_vocab, beam, alpha)
    outputs = [tgt_vocab.decode(h.tokens) for h in hyps]
    refs = [t for _, t in dataset.pairs]
    result: dict[str, Any] = {
        "n": len(dataset),
        "tokens": tokens,
        "loss": loss,
        "ppl": math.exp(min(loss, 50)),
        "beam": beam,
        "precision": precision,
    }
    key = "accuracy" if synthetic else "bleu"
    if synthetic:
        correct = [o == r for o, r in zip(outputs, refs)]
        result[key] = 100.0 * sum(correct) / max(len(correct), 1)
    else:
        hyp_text, ref_text = [detokenize(o) for o in outputs], [detokenize(r) for r in refs]
        result[key] = bleu(hyp_text, ref_text)
    if by_length:
        groups: dict[str, list[int]] = {}
        for i, (s, _) in enumerate(dataset.pairs):
            groups.setdefault(length_bucket(len(s), synthetic), []).append(i)
        rows = []
        for name, idx in sorted(
            groups.items(), key=lambda kv: min(len(dataset.pairs[i][0]) for i in kv[1])
        ):
            if synthetic:
                value = 100.0 * sum(outputs[i] == refs[i] for i in idx) / len(idx)
            else:
                value = bleu([hyp_text[i] for i in idx], [ref_text[i] for i in idx])
            rows.append({"length": name, "n": len(idx), key: value})
        result["by_length"] = rows
    return result
