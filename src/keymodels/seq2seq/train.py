"""The seq2seq training engine: epochs, checkpoints, resume, loss; and evaluation (accuracy, BLEU).

A run folder holds ``last.safetensors`` (after every epoch), ``best.safetensors`` (best on
validation), ``metrics.csv`` and ``config.json``; everything a checkpoint needs to rebuild the
model (config, vocabularies) is in its metadata. The folder's lifecycle is ``keymodels.run.Run``'s;
loading a trained run is ``keymodels.runs.load_seq2seq``'s.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoint import Checkpoint, CheckpointMismatchError, check_compatible, save_checkpoint
from ..errors import InvalidInputError
from ..registry import get_config
from ..run import Run, check_same_settings, epoch_line, lr_factor
from ..runguard import NonFiniteGuard, crash_point
from ..runs import check_vocabularies
from ..runtime import (
    PrecisionChoice,
    autocast,
    check_precision,
    choice_key,
    choose_inference_precision,
)
from . import build_model, model_config_from_dict
from .config import KIND, SCHEDULES, TrainConfig
from .data import Pair, TranslationDataset, collate, load_multi30k, make_loader, make_synthetic
from .model import Seq2Seq, Seq2SeqConfig
from .search import Hypothesis, beam_search, greedy_search, output_limit
from .subwords import SubwordVocabulary, vocab_from_dict
from .transformer import Transformer, TransformerConfig
from .vocab import Vocabulary, detokenize

log = logging.getLogger(__name__)

__all__ = ["KIND", "SCHEDULES", "TrainConfig", "epoch_row_line", "evaluate", "train"]

NONFINITE_HINT = (
    "Lower --lr (tc.lr) or keep --clip-grad (tc.clip) on, then --resume (resume=True), or pass "
    "--on-nonfinite skip (tc.on_nonfinite='skip')"
)
MISMATCH_HINT = (
    "Resume with the model and task it was trained with, or use a new --out (out) folder"
)
# The TrainConfig fields a resumed run may change: how long to go on, what a NaN loss does, and
# where the data is (a path, not a setting: the stored one is used).
RESUME_MAY_CHANGE = ("epochs", "max_minutes", "on_nonfinite", "data_dir")


# ---------------------------------------------------------------------------- data


def load_task(tc: TrainConfig, split: str) -> list[Pair]:
    """The pairs of ``split`` (train/val/test) for the task; synthetic splits use distinct seeds."""
    if tc.synthetic:
        n = tc.train_size if split == "train" else tc.val_size
        seed = tc.seed * 10 + {"train": 1, "val": 2, "test": 3}[split]
        return make_synthetic(tc.task, n, tc.min_len, tc.synthetic_max_len, tc.num_symbols, seed)
    return load_multi30k(tc.data_dir, split, tc.src_lang, tc.tgt_lang, tc.lowercase)


Vocab = Vocabulary | SubwordVocabulary


def build_vocabs(tc: TrainConfig, train: Sequence[Pair]) -> tuple[Vocab, Vocab]:
    """Source and target vocabularies from the training pairs only: words (``min_freq``,
    ``max_vocab``), or subword pieces (``tc.vocab`` bpe/unigram, ``vocab_size``), one joint
    vocabulary or one per language, or the ``subword_model`` file given (used for both)."""
    if tc.vocab == "word":
        min_freq = 1 if tc.synthetic else tc.min_freq
        src = Vocabulary.build((s for s, _ in train), min_freq, tc.max_vocab, tc.lowercase)
        tgt = Vocabulary.build((t for _, t in train), min_freq, tc.max_vocab, tc.lowercase)
        return src, tgt
    if tc.subword_model:
        vocab = SubwordVocabulary.from_file(tc.subword_model, tc.lowercase)
        if vocab.model != tc.vocab:
            raise InvalidInputError(
                f"the subword model {tc.subword_model} is a {vocab.model} model but --vocab "
                f"{tc.vocab} (vocab) was given; pass --vocab {vocab.model}"
            )
        return vocab, vocab
    sources, targets = [s for s, _ in train], [t for _, t in train]
    if tc.joint_vocab:
        vocab = SubwordVocabulary.train(sources + targets, tc.vocab, tc.vocab_size, tc.lowercase)
        return vocab, vocab
    return (
        SubwordVocabulary.train(sources, tc.vocab, tc.vocab_size, tc.lowercase),
        SubwordVocabulary.train(targets, tc.vocab, tc.vocab_size, tc.lowercase),
    )


def check_subword_model(tc: TrainConfig, src_vocab: Vocab, where: str) -> None:
    """A resumed run's ``--subword-model`` file, where it still is, must still be the vocabulary
    it trained with (a moved file is no error: the checkpoint holds the vocabulary)."""
    if not tc.subword_model or not Path(tc.subword_model).is_file():
        return
    given = SubwordVocabulary.from_file(tc.subword_model, tc.lowercase)
    if given != src_vocab:
        raise CheckpointMismatchError(
            f"the subword model {tc.subword_model} (sha256 {given.sha256()[:12]}, {len(given)} "
            f"pieces) does not match the one {where} was trained with (sha256 "
            f"{src_vocab.sha256()[:12]}, {len(src_vocab)} pieces); restore that file, or train "
            "a new run (new --out) with this one"
        )


def check_model_fits(
    config: Seq2SeqConfig | TransformerConfig, tc: TrainConfig, src_vocab: Vocab, tgt_vocab: Vocab
) -> None:
    """What a Transformer cannot do with these settings, refused before any training."""
    if not isinstance(config, TransformerConfig):
        return
    if tc.teacher_forcing < 1.0:
        raise InvalidInputError(
            f"the Transformer trains with teacher forcing 1.0 only; got {tc.teacher_forcing} "
            "(--teacher-forcing is for the RNN models)"
        )
    if config.tie_embeddings == "all" and src_vocab != tgt_vocab:
        raise InvalidInputError(
            "--tie-embeddings all shares one embedding between the two languages, so it needs "
            "one joint vocabulary; add --joint-vocab (with --vocab bpe|unigram) or tie 'decoder'"
        )


def save_vocab_files(run: Run, src_vocab: Vocab, tgt_vocab: Vocab) -> None:
    """The subword models as files in the run folder (``--subword-model`` reads them back)."""
    if not isinstance(src_vocab, SubwordVocabulary):
        return
    if src_vocab is tgt_vocab:
        run.write_json("subwords.json", src_vocab.to_dict())
    else:
        run.write_json("subwords.src.json", src_vocab.to_dict())
        run.write_json("subwords.tgt.json", tgt_vocab.to_dict())


def lr_schedule(tc: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """Per step: cosine to zero after ``warmup`` steps, or inverse square root (peak at
    ``warmup``); per epoch: halve the lr when the validation score stalls (plateau)."""
    if tc.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, tc.warmup, total_steps, 0.0)
        )
    if tc.schedule == "inverse_sqrt":
        w = tc.warmup
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / w, math.sqrt(w / (s + 1)))
        )
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=1)


# ---------------------------------------------------------------------------- checkpoints


def run_checkpoint(
    model: Seq2Seq | Transformer,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    tc: TrainConfig,
    state: dict[str, Any],
) -> Checkpoint:
    """The checkpoint of a seq2seq run: weights, ``state``, and in its meta all that rebuilds the
    model (config, vocabularies, train config)."""
    meta = {
        "kind": KIND,
        "config": model.config.to_dict(),
        "train_config": tc.to_dict(),
        "src_vocab": src_vocab.to_dict(),
        "tgt_vocab": tgt_vocab.to_dict(),
        "epoch": state.get("epoch"),
    }
    return Checkpoint(model=model.state_dict(), state=state, meta=meta)


def save_run_checkpoint(
    path: Path,
    model: Seq2Seq | Transformer,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    tc: TrainConfig,
    state: dict[str, Any],
) -> Path:
    """Write :func:`run_checkpoint` atomically to ``path``."""
    return save_checkpoint(path, run_checkpoint(model, src_vocab, tgt_vocab, tc, state))


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


def epoch_row_line(row: dict[str, Any], epochs: int) -> str:
    """The summary line of an epoch's history ``row`` (as the ViT engine's, see ``epoch_line``)."""
    metric, key = ("acc", "val_acc") if "val_acc" in row else ("BLEU", "val_bleu")
    return epoch_line(
        row["epoch"], epochs, train_loss=row["train_loss"], split="val", loss=row["val_loss"],
        metric=metric, score=row[key], lr=row["lr"], seconds=row["epoch_s"],
    )  # fmt: skip


def train(
    model_name: str,
    tc: TrainConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    precision: str = "auto",
    force: bool = False,
    max_steps: int | None = None,
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

    ``max_steps`` stops after this many optimizer steps in total, a resumed run's earlier ones
    included (quick trials); the epoch it cuts short is validated and saved as done.

    Returns:
        A summary: the per-epoch history, the best validation score, the epochs and steps done.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM arrived; the step was finished and the state saved
            in ``out/last.safetensors``, from which ``resume=True`` continues exactly.
        NonFiniteLossError: the loss became NaN or infinite (``tc.on_nonfinite="stop"``).
        CheckpointMismatchError: the resumed checkpoint does not fit the model it records.
        TrainingError: nothing to resume, a resume with no epochs left (``tc.epochs`` not above
            the epochs done) or with a ``tc`` field changed other than ``epochs``,
            ``max_minutes``, ``on_nonfinite`` and ``data_dir``, or a checkpoint that could not
            be written.
        InvalidInputError: ``max_steps`` below 1.
    """
    if max_steps is not None and max_steps < 1:
        raise InvalidInputError(f"max_steps must be >= 1 (or None: no limit); got {max_steps}")
    with Run(out, "seq2seq", resume=resume, force=force, budget_minutes=tc.max_minutes) as run:
        return _train(
            model_name, tc, run, progress, on_epoch, precision, max_steps, model_overrides
        )


def _train(
    model_name: str,
    tc: TrainConfig,
    run: Run,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    precision: str,
    max_steps: int | None,
    model_overrides: dict[str, Any],
) -> dict[str, Any]:
    ckpt = run.resume(lambda c: c.meta.get("kind") == KIND)
    if ckpt is not None:
        # The data and model come from the checkpoint; only how long to go on may change.
        stored = TrainConfig.from_dict(ckpt.meta["train_config"])
        check_same_settings(
            "training config", stored.to_dict(), tc.to_dict(), RESUME_MAY_CHANGE, run.last_path
        )
        run.check_more_epochs(tc.epochs)
        # The stored data_dir stays: the command may run from another folder now.
        tc = dataclasses.replace(
            stored, epochs=tc.epochs, max_minutes=tc.max_minutes, on_nonfinite=tc.on_nonfinite
        )  # a cosine schedule stretches to the new number of epochs
    guard = NonFiniteGuard(tc.on_nonfinite)
    torch.manual_seed(tc.seed)

    # Data and model: vocabularies built from the training pairs, or the resumed run's.
    train_pairs, val_pairs = load_task(tc, "train"), load_task(tc, "val")
    if ckpt is not None:
        src_vocab = vocab_from_dict(ckpt.meta["src_vocab"])
        tgt_vocab = vocab_from_dict(ckpt.meta["tgt_vocab"])
        if ckpt.meta["src_vocab"] == ckpt.meta["tgt_vocab"]:
            tgt_vocab = src_vocab  # joint: one object, as when it was trained
        check_subword_model(tc, src_vocab, str(run.last_path))
        config = model_config_from_dict(ckpt.meta["config"])
    else:
        src_vocab, tgt_vocab = build_vocabs(tc, train_pairs)
        sizes = {"src_vocab_size": len(src_vocab), "tgt_vocab_size": len(tgt_vocab)}
        config = get_config(model_name, **{**sizes, **model_overrides})
        # room for the longest training sentence, with <bos>/<eos>; learned positions stop there,
        # as rows past it would never be trained
        learned = getattr(config, "positions", None) == "learned"
        max_len = tc.max_len + 2 if learned else max(config.max_len, tc.max_len + 2)
        config = dataclasses.replace(config, max_len=max_len)
        check_model_fits(config, tc, src_vocab, tgt_vocab)
    model = build_model(config)
    train_set = TranslationDataset(train_pairs, src_vocab, tgt_vocab, tc.max_len, tc.too_long)
    val_set = TranslationDataset(val_pairs, src_vocab, tgt_vocab, tc.max_len, "truncate")
    loader = make_loader(train_set, tc.batch_size, True, tc.seed, tc.num_workers)

    # Optimizer and schedule: per-step cosine to zero, or halving on a validation plateau.
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(0.9, tc.adam_beta2))
    scheduler = lr_schedule(tc, optimizer, tc.epochs * len(loader))
    history: list[dict[str, Any]] = []
    step = 0  # optimizer steps so far, a resumed run's included
    if ckpt is not None:
        where = str(run.last_path)
        check_vocabularies(model, src_vocab, tgt_vocab, where)
        check_compatible(model, ckpt.model, where, MISMATCH_HINT)
        model.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.state["optimizer"])
        scheduler.load_state_dict(ckpt.state["scheduler"])
        run.restore_rng()
        history = ckpt.state["history"]
        step = int(ckpt.state.get("step", 0))  # runs saved before max_steps: counted from here
        # elapsed_s and the --max-minutes budget count the training time before a resume too
        run.credit(history[-1]["elapsed_s"] if history else 0.0)

    timing_batch = collate([train_set[i] for i in range(min(tc.batch_size, len(train_set)))])

    def timing_loss() -> torch.Tensor:  # one step on the first training sentences
        tgt = timing_batch["tgt"]
        logits, _ = model(timing_batch["src"], timing_batch["src_lengths"], tgt[:, :-1])
        return sequence_loss(logits.float(), tgt[:, 1:], tc.label_smoothing)

    choice = run.choose_precision(precision, model, timing_loss, "cpu")
    run.write_json("config.json", {"model": config.to_dict(), "train": tc.to_dict()})
    save_vocab_files(run, src_vocab, tgt_vocab)

    def checkpoint(epochs: int, **extra: Any) -> Checkpoint:
        """Everything resume needs after ``epochs`` whole epochs (and ``partial``, if given)."""
        state = run.state(
            epochs, history=history, step=step, optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), **extra,
        )  # fmt: skip
        return run_checkpoint(model, src_vocab, tgt_vocab, tc, state)

    for epoch in range(run.epoch + 1, tc.epochs + 1):
        if max_steps is not None and step >= max_steps:
            break
        t0 = run.clock()
        sums = {"total": 0.0, "tokens": 0, "batches": 0, "nonfinite": 0, "time": 0.0}
        if run.partial:  # finish the epoch a stop interrupted: its running sums, its time
            sums.update({k: run.partial[k] for k in sums})
            t0 -= sums["time"]
            run.credit(sums["time"])
            run.partial = None
        # The batch order depends only on (seed, epoch): an interrupted epoch goes on where it was.
        loader.batch_sampler.set_epoch(epoch, start=sums["batches"])
        model.train()
        bar = tqdm(
            loader, desc=f"epoch {epoch}/{tc.epochs}", disable=not progress, leave=False,
            initial=sums["batches"], total=len(loader),
        )  # fmt: skip
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
                raise run.nonfinite(f"loss became {loss_value} at {where}", NONFINITE_HINT)
            else:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tc.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
                optimizer.step()
                step += 1
                if tc.schedule != "plateau":
                    scheduler.step()
                n = int((tgt[:, 1:] != 0).sum())
                sums["total"] += loss_value * n
                sums["tokens"] += n
                crash_point("train_step")
            bar.set_postfix(loss=f"{sums['total'] / max(sums['tokens'], 1):.3f}")
            if run.stop.requested or (max_steps is not None and step >= max_steps):
                break
        bar.close()
        if run.stop.requested:
            # SIGINT/SIGTERM: the step is done; save the epoch so far, to be finished on resume.
            sums["time"] = run.clock() - t0
            run.save(checkpoint(epoch - 1, partial=sums), where=f"epoch {epoch}")
            raise run.interrupted(f"batch {sums['batches']}/{len(loader)} of epoch {epoch}")

        # Validation: sequence accuracy (synthetic tasks) or BLEU picks the best checkpoint.
        with autocast(choice.precision):
            metrics = evaluate(
                model, val_set, tgt_vocab, tc.synthetic, beam=tc.val_beam, by_length=False
            )
        score = metrics["accuracy"] if tc.synthetic else metrics["bleu"]
        if tc.schedule == "plateau":
            scheduler.step(score)
        run.epoch = epoch
        row = {
            "epoch": epoch,
            "train_loss": sums["total"] / max(sums["tokens"], 1),
            "val_loss": metrics["loss"],
            "val_ppl": metrics["ppl"],
            ("val_acc" if tc.synthetic else "val_bleu"): score,
            "lr": optimizer.param_groups[0]["lr"],
            "nonfinite_steps": sums["nonfinite"],
            "precision": choice.precision,
            "epoch_s": run.clock() - t0,
            "elapsed_s": run.elapsed(),
        }
        history.append(row)
        run.log(epoch, row)
        log.info("%s", epoch_row_line(row, tc.epochs))
        best = run.improved(score)
        run.save(checkpoint(epoch), best=best, where=f"epoch {epoch}")
        if on_epoch is not None:
            on_epoch(row)
        if max_steps is not None and step >= max_steps:
            log.info("stopping after epoch %d: max_steps=%d steps done", epoch, max_steps)
            break
        if epoch < tc.epochs and run.over_budget(next_epoch_s=run.clock() - t0):
            log.info("stopping after epoch %d: the next would exceed %s min", epoch, tc.max_minutes)
            break
    best = run.best if run.best is not None else -math.inf  # -inf: no epoch was trained
    return {"history": history, "best": best, "epochs": run.epoch, "steps": step,
            "out": str(run.out)}  # fmt: skip


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
    model: Seq2Seq | Transformer,
    dataset: TranslationDataset,
    tgt_vocab: Vocab,
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
        limit = max_len or output_limit(model, batch["src_lengths"])
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
    model: Seq2Seq | Transformer, dataset: TranslationDataset, batch_size: int = 100
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
    model: Seq2Seq | Transformer,
    tgt_vocab: Vocab,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam: int = 1,
) -> PrecisionChoice:
    """The precision to decode in: "auto" times one search over ``src`` [B, S] in fp32 and in
    bf16 autocast (the choice is cached per model, batch shape and machine)."""
    limit, bos, eos = output_limit(model, src_lengths), tgt_vocab.bos_id, tgt_vocab.eos_id

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
    model: Seq2Seq | Transformer,
    dataset: TranslationDataset,
    tgt_vocab: Vocab,
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
