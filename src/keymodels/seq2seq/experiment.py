"""The notes' claim, measured: accuracy/BLEU and gradient reaching the first input, against length.

A plain encoder-decoder squeezes the input into one vector and its gradient to early inputs
passes through every encoder step; attention gives each output a direct path to every h_i.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidInputError
from ..plotting import plot_alignment, plot_alignment_grid, plot_lines
from ..runs import LoadedRun, load_seq2seq
from . import build_model
from .data import TranslationDataset, collate, make_synthetic, synthetic_target
from .model import Seq2Seq
from .train import TrainConfig, evaluate, load_task, sequence_loss, train
from .transformer import Transformer
from .vocab import Vocabulary


def synthetic_pairs_of_length(task: str, length: int, n: int, num_symbols: int, seed: int):
    """``n`` random pairs of one exact source ``length``."""
    rng = random.Random(seed * 1000 + length)
    symbols = [str(i) for i in range(num_symbols)]
    pairs = []
    for _ in range(n):
        src = [rng.choice(symbols) for _ in range(length)]
        pairs.append((src, synthetic_target(task, src)))
    return pairs


def accuracy_by_length(
    run: LoadedRun, lengths: Sequence[int], n: int = 200, seed: int = 123, beam: int = 1
) -> list[dict[str, Any]]:
    """Sequence accuracy (%) of a synthetic-task run on ``n`` fresh inputs of each length."""
    tc = run.train_config
    rows = []
    for length in lengths:
        pairs = synthetic_pairs_of_length(tc.task, length, n, tc.num_symbols, seed)
        data = TranslationDataset(pairs, run.src_vocab, run.tgt_vocab)
        result = evaluate(run.model, data, run.tgt_vocab, True, beam=beam, by_length=False)
        rows.append({"length": length, "accuracy": result["accuracy"]})
    return rows


def grad_norm_first_step(
    model: Seq2Seq | Transformer,
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    task: str,
    lengths: Sequence[int],
    n: int = 32,
    num_symbols: int = 20,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """‖∂L/∂x_1‖: the gradient of the summed target loss reaching the first source embedding,
    averaged over ``n`` sentences of each length (eval mode, so no dropout noise)."""
    model.eval()
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        output.retain_grad()
        captured["emb"] = output

    embed = model.src_embed if isinstance(model, Transformer) else model.encoder.embed
    handle = embed.register_forward_hook(hook)
    rows = []
    try:
        for length in lengths:
            pairs = synthetic_pairs_of_length(task, length, n, num_symbols, seed)
            batch = collate(TranslationDataset(pairs, src_vocab, tgt_vocab))
            model.zero_grad(set_to_none=True)
            tgt = batch["tgt"]
            logits, _ = model(batch["src"], batch["src_lengths"], tgt[:, :-1])
            tokens = int((tgt[:, 1:] != 0).sum())
            (sequence_loss(logits, tgt[:, 1:]) * tokens / len(pairs)).backward()
            norm = captured["emb"].grad[:, 0].norm(dim=-1).mean()
            rows.append({"length": length, "grad_norm": float(norm)})
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    return rows


def length_experiment(
    out: str | Path,
    task: str = "reverse",
    train_lengths: tuple[int, int] = (3, 20),
    test_lengths: Sequence[int] | None = None,
    epochs: int = 6,
    train_size: int = 20000,
    num_symbols: int = 20,
    model: str = "seq2seq_gru_attn_small",
    plain_model: str = "seq2seq_gru_plain_small",
    attention: str = "concat",
    style: str = "bahdanau",
    transformer_model: str | None = "transformer_small",
    seed: int = 0,
    progress: bool = True,
    on_epoch: Callable[[str, dict[str, Any]], None] | None = None,
    force: bool = False,
    precision: str = "auto",
    **overrides: Any,
) -> dict[str, Any]:
    """Train the plain and the attention model (and a Transformer, unless ``transformer_model``
    is None) the same way, then measure them against length.

    ``overrides`` apply to the two RNNs; the Transformer keeps its registered size, with learned
    positions (on short synthetic inputs they learned reverse to 100%, sinusoidal ones to
    99-99.5%), and trains with warmup and cosine decay.

    Writes into ``out``: ``plain/``, ``attention/`` (``transformer/``) runs,
    ``accuracy_vs_length.png``, ``grad_norm_vs_length.png``, ``attention_example.png``
    (``attention_example_transformer[_heads].png``) and ``length_experiment.json``.
    Runs already trained there are refused unless ``force`` (start them over).
    """
    out = Path(out)
    lo, hi = train_lengths
    test_lengths = list(test_lengths or range(lo, hi + 1))
    tc = TrainConfig(
        task=task,
        epochs=epochs,
        train_size=train_size,
        val_size=500,
        min_len=lo,
        synthetic_max_len=hi,
        num_symbols=num_symbols,
        seed=seed,
        batch_size=64,
        lr=2e-3,
        max_len=max(hi, max(test_lengths)),
    )
    runs = {}
    # A one-directional encoder, as in the notes: x_1 is then N steps from the context vector.
    rnn = {"bidirectional": False, **overrides}
    models = [
        ("plain", plain_model, {**rnn, "attention": "none"}),
        ("attention", model,
         {**rnn, "attention": attention, "style": style, "input_feeding": False}),
    ]  # fmt: skip
    if transformer_model is not None:
        models.append(("transformer", transformer_model, {"positions": "learned"}))
    # Each architecture with its usual recipe, the same data and epochs: the RNNs with a constant
    # lr (halved on plateaus), the Transformer with warmup and cosine decay and Adam's β2 = 0.98
    # (with the RNNs' constant 2e-3 and no warmup it copied only 39% of the inputs after 4 epochs).
    steps = epochs * math.ceil(train_size / tc.batch_size)
    recipes = {"transformer": dataclasses.replace(
        tc, schedule="cosine", warmup=max(1, steps // 10), adam_beta2=0.98
    )}  # fmt: skip
    for label, name, kw in models:
        train(
            name,
            recipes.get(label, tc),
            out / label,
            progress=progress,
            force=force,
            precision=precision,
            on_epoch=None if on_epoch is None else (lambda row, label=label: on_epoch(label, row)),
            **kw,
        )
        runs[label] = load_seq2seq(out / label / "last.safetensors")
    result: dict[str, Any] = {"task": task, "train_lengths": [lo, hi], "epochs": epochs}
    for label, run in runs.items():
        torch.manual_seed(seed)
        fresh = build_model(run.model.config)  # untrained: the architecture's effect alone
        args = (run.src_vocab, run.tgt_vocab, task, test_lengths)
        result[label] = {
            "accuracy": accuracy_by_length(run, test_lengths, seed=seed + 7),
            "grad_norm_init": grad_norm_first_step(
                fresh, *args, num_symbols=num_symbols, seed=seed
            ),
            "grad_norm": grad_norm_first_step(run.model, *args, num_symbols=num_symbols, seed=seed),
        }
    plot_length_experiment(result, out)
    example = " ".join(make_synthetic(task, 1, hi, hi, num_symbols, seed + 99)[0][0])
    attention_heatmap(
        runs["attention"], example, out / "attention_example.png", f"{task} (attention model)"
    )
    if "transformer" in runs:  # + attention_example_transformer_heads.png: every layer and head
        attention_heatmap(
            runs["transformer"], example, out / "attention_example_transformer.png",
            f"{task} (Transformer, last layer)",
        )  # fmt: skip
    (out / "length_experiment.json").write_text(json.dumps(result, indent=2))
    return result


def plot_length_experiment(result: dict[str, Any], out: str | Path) -> None:
    """The two PNGs of :func:`length_experiment` from its result (also from the saved JSON)."""
    out = Path(out)
    labels = [k for k in ("plain", "attention", "transformer") if k in result]
    plot_lines(
        {k: [(r["length"], r["accuracy"]) for r in result[k]["accuracy"]] for k in labels},
        out / "accuracy_vs_length.png",
        "input length",
        "sequence accuracy (%)",
        f"{result['task']}: " + " vs ".join(labels),
    )
    # Untrained models show the architecture's effect; a trained model's gradient also depends
    # on how well it already fits (small loss, small gradient), so those stay in the JSON.
    plot_lines(
        {k: [(r["length"], r["grad_norm"]) for r in result[k]["grad_norm_init"]] for k in labels},
        out / "grad_norm_vs_length.png",
        "input length",
        "‖∂L/∂x₁‖ (first encoder input)",
        f"{result['task']}: gradient reaching the first input (at initialization)",
        logy=True,
    )


def _bucket_mid(name: str) -> float:
    return int(name[:-1]) + 2.0 if name.endswith("+") else sum(map(int, name.split("-"))) / 2


def run_label(run: LoadedRun) -> str:
    """How a report names a run: plain, attention or transformer, and its subword vocabulary."""
    if isinstance(run.model, Transformer):
        label = "transformer"
    else:
        label = "attention" if run.model.has_attention else "plain"
    vocab = run.train_config.vocab
    return label if vocab == "word" else f"{label}+{vocab}"


def multi30k_report(
    *run_dirs: str | Path,
    out: str | Path,
    beam: int = 5,
    data_dir: str | None = None,
    examples: Sequence[int] = (0, 1, 2, 3),
    alpha: float = 0.6,
) -> dict[str, Any]:
    """Test BLEU, perplexity and BLEU by source length of Multi30k runs (plain, attention,
    Transformer, any number), ``bleu_vs_length.png`` and, for each run that attends, heatmaps
    of a few test sentences (``attention_test{i}.png`` for the first such run,
    ``attention_{label}_test{i}.png`` for the others).

    Results are keyed by :func:`run_label` (the folder name added when two labels collide).
    """
    if not run_dirs:
        raise InvalidInputError("give at least one Multi30k run to report on")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, LoadedRun] = {}
    for d in run_dirs:
        run = load_seq2seq(d)
        label = run_label(run)
        runs[label if label not in runs else f"{label} ({Path(d).name})"] = run
    result = {k: bleu_by_length(run, "test", beam, data_dir, alpha) for k, run in runs.items()}
    plot_lines(
        {
            k: [(_bucket_mid(r["length"]), r["bleu"]) for r in v["by_length"]]
            for k, v in result.items()
        },
        out / "bleu_vs_length.png",
        "source length (words, bucket middle)",
        "BLEU",
        f"Multi30k test2016 De→En, beam {beam}, α {alpha}",
    )
    from .data import multi30k_files, read_lines

    attending = [k for k, run in runs.items() if run.model.has_attention]
    for n, label in enumerate(attending):
        tc = runs[label].train_config
        if data_dir is not None:
            tc = TrainConfig.from_dict({**tc.to_dict(), "data_dir": data_dir})
        sources = read_lines(multi30k_files(tc.data_dir, "test", tc.src_lang, tc.tgt_lang)[0])
        stem = "attention" if n == 0 else f"attention_{label.replace('+', '_')}"
        for i in examples:
            attention_heatmap(
                runs[label], sources[i], out / f"{stem}_test{i + 1}.png",
                f"{label}, test line {i + 1}", beam,
            )  # fmt: skip
    (out / "multi30k_report.json").write_text(json.dumps(result, indent=2))
    return result


def attention_heatmap(
    run: LoadedRun, sentence: str, path: str | Path, title: str | None = None, beam: int = 1
) -> Path:
    """Translate ``sentence`` and write its source × output attention heatmap (a Transformer's:
    the last layer's mean over heads, and every layer and head in ``<path stem>_heads.png``)."""
    from .translate import translate

    t = translate(run, [sentence], beam=beam, too_long="truncate")[0]
    if t.attention is None:
        from ..errors import InvalidInputError

        raise InvalidInputError(
            "this model has no attention: it was trained with --attention none "
            "(attention='none'); nothing to show"
        )
    src = [*t.source_pieces, "<eos>"]
    tgt = t.pieces + (["<eos>"] if t.attention.shape[0] > len(t.pieces) else [])
    if isinstance(run.model, Transformer):
        # every layer and head, from the translation fed back (teacher-forced) through the model
        ids = [run.src_vocab.encode(t.source_tokens)]
        src_ids, tgt_in = torch.tensor(ids), torch.tensor([[run.tgt_vocab.bos_id, *t.ids[:-1]]])
        grid = run.model.cross_attention(src_ids, torch.tensor([src_ids.shape[1]]), tgt_in)
        path = Path(path)
        heads = path.with_name(f"{path.stem}_heads{path.suffix}")
        plot_alignment_grid(src, tgt, grid[:, 0, :, : len(tgt)], heads, title)
    return plot_alignment(src, tgt, t.attention[: len(tgt)], path, title)


def bleu_by_length(
    run: LoadedRun,
    split: str = "test",
    beam: int = 5,
    data_dir: str | None = None,
    alpha: float = 0.6,
) -> dict[str, Any]:
    """BLEU (overall and by source-length bucket) of a Multi30k run on ``split``."""
    tc = run.train_config
    if data_dir is not None:
        tc = TrainConfig.from_dict({**tc.to_dict(), "data_dir": data_dir})
    data = TranslationDataset(
        load_task(tc, split), run.src_vocab, run.tgt_vocab, run.model.max_source_tokens
    )
    return evaluate(run.model, data, run.tgt_vocab, False, beam=beam, alpha=alpha)
