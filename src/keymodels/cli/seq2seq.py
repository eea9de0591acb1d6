"""``keymodels seq2seq train|eval|experiment`` and ``keymodels translate``: RNNs and Transformers.

Train on a synthetic task (no download) or Multi30k De→En, evaluate a run, translate sentences.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import TextIO

import torch

from ..errors import InvalidInputError
from ..rundir import check_writable_output, checkpoint_meta
from ..runs import load_seq2seq as load_run
from ..seq2seq.data import SYNTHETIC_TASKS, TASKS, DataError, download_multi30k, read_lines
from ..seq2seq.train import TrainConfig, epoch_row_line, evaluate, load_task, train
from . import add_hidden_alias, add_precision_argument, finite_float, png_path, positive_int

SCORE_CHOICES = ("dot", "general", "concat", "scaled_dot", "none")


def _default_model(task: str, attention: str, arch: str = "rnn") -> str:
    size = "small" if task in SYNTHETIC_TASKS else "multi30k"
    if arch == "transformer":
        return f"transformer_{size}"
    return f"seq2seq_gru_{'plain' if attention == 'none' else 'attn'}_{size}"


# Model config field -> the `seq2seq train` argument that sets it, per architecture.
RNN_ARGS = {"emb_dim": "emb_dim", "hidden_dim": "hidden_dim", "num_layers": "layers",
            "dropout": "dropout"}  # fmt: skip
TRANSFORMER_ARGS = {
    "dim": "dim", "num_heads": "heads", "enc_layers": "enc_layers", "dec_layers": "dec_layers",
    "ff_dim": "ff_dim", "dropout": "dropout", "attn_dropout": "attn_dropout", "norm": "norm",
    "positions": "positions", "tie_embeddings": "tie_embeddings",
}  # fmt: skip


def _arch(model: str | None, arch: str | None) -> str:
    """The architecture: --arch, or that of the --model named (rnn when neither is given)."""
    if model is None:
        return arch or "rnn"
    from ..registry import get_config
    from ..seq2seq.transformer import TransformerConfig

    of_model = "transformer" if isinstance(get_config(model), TransformerConfig) else "rnn"
    if arch is not None and arch != of_model:
        raise InvalidInputError(
            f"--model {model} is a {of_model} model but --arch {arch} was given; leave out --arch "
            "or pick a model of that architecture (keymodels models 'transformer*')"
        )
    return of_model


def _model_overrides(args: argparse.Namespace) -> dict:
    """The model config fields the flags set; the other architecture's flags are refused."""
    own, other = (
        (TRANSFORMER_ARGS, RNN_ARGS) if args.arch == "transformer" else (RNN_ARGS, TRANSFORMER_ARGS)
    )
    stray = [d for d in other.values() if d not in own.values() and getattr(args, d) is not None]
    rnn_only = {"attention": "concat", "style": "bahdanau", "input_feeding": False, "rnn": "gru",
                "bidirectional": True}  # fmt: skip
    if args.arch == "transformer":
        stray += [d for d, default in rnn_only.items() if getattr(args, d) != default]
    if stray:
        flags = ", ".join("--" + d.replace("_", "-") for d in stray)
        one = len(stray) == 1
        raise InvalidInputError(
            f"{flags} {'is' if one else 'are'} not an option of --arch {args.arch}; leave "
            f"{'it' if one else 'them'} out (`keymodels seq2seq train --help` names each "
            "architecture's options)"
        )
    overrides = {k: getattr(args, k) for k in rnn_only} if args.arch == "rnn" else {}
    for field, dest in own.items():
        if getattr(args, dest) is not None:
            overrides[field] = getattr(args, dest)
    return overrides


def _print_row(row: dict, epochs: int, label: str = "", file: TextIO | None = None) -> None:
    """Print an epoch's history ``row`` as one line, in the ViT engine's format."""
    prefix = f"[{label}] " if label else ""
    print(prefix + epoch_row_line(row, epochs), file=file or sys.stdout, flush=True)


# TrainConfig field -> the `seq2seq train` argument that sets it.
TRAIN_CONFIG_ARGS = {
    "task": "task", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
    "schedule": "schedule", "clip": "clip", "teacher_forcing": "teacher_forcing",
    "label_smoothing": "label_smoothing", "seed": "seed", "max_len": "max_len",
    "too_long": "too_long", "num_workers": "workers", "max_minutes": "max_minutes",
    "on_nonfinite": "on_nonfinite", "train_size": "train_size", "min_len": "min_length",
    "synthetic_max_len": "max_length", "num_symbols": "symbols", "data_dir": "data_dir",
    "min_freq": "min_freq", "lowercase": "lowercase", "warmup": "warmup",
    "adam_beta2": "adam_beta2", "vocab": "vocab", "vocab_size": "vocab_size",
    "joint_vocab": "joint_vocab", "subword_model": "subword_model",
}  # fmt: skip


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags ask for.

    With ``--resume``, a flag left at its default (and every field without a flag) keeps the
    run's stored value, so that ``--resume --epochs 20`` needs no other flag; a flag given with
    another value than the stored one is refused by the engine, naming it.
    """
    values = {field: getattr(args, dest) for field, dest in TRAIN_CONFIG_ARGS.items()}
    # Absolute: `seq2seq eval` of the run may start in another folder.
    values["data_dir"] = str(Path(args.data_dir).resolve())
    if args.subword_model:
        values["subword_model"] = str(Path(args.subword_model).resolve())
    meta = checkpoint_meta(Path(args.out) / "last.safetensors") if args.resume else None
    if meta and isinstance(meta.get("train_config"), dict):
        stored = TrainConfig.from_dict(meta["train_config"]).to_dict()
        given = {
            field: values[field]
            for field, dest in TRAIN_CONFIG_ARGS.items()
            if getattr(args, dest) != args.flag_defaults[dest]
        }
        values = {**stored, **given}
    return TrainConfig(**values)


def run_train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.download:
        download_multi30k(args.data_dir)
    tc = _train_config(args)
    if args.resume and args.model is None and args.arch is None:  # the run's own architecture
        meta = checkpoint_meta(Path(args.out) / "last.safetensors") or {}
        stored = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        args.arch = "transformer" if stored.get("arch") == "transformer" else None
    args.arch = _arch(args.model, args.arch)
    overrides = _model_overrides(args)
    name = args.model or _default_model(tc.task, args.attention, args.arch)
    start = time.perf_counter()
    # With --json, stdout holds only the summary object: the epoch lines go to stderr.
    epoch_file = sys.stderr if args.json else sys.stdout
    summary = train(
        name,
        tc,
        args.out,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
        on_epoch=lambda row: _print_row(row, tc.epochs, file=epoch_file),
        precision=args.precision,
        max_steps=args.max_steps,
        **overrides,
    )
    elapsed = time.perf_counter() - start
    metric = "accuracy" if tc.synthetic else "bleu"
    if args.json:
        best = summary["best"] if math.isfinite(summary["best"]) else None  # None: no epoch
        print(json.dumps({
            "model": name, "task": tc.task, "metric": metric, "best": best,
            "epochs": summary["epochs"], "steps": summary["steps"], "wall_s": elapsed,
            "out": str(args.out), "history": summary["history"],
        }))  # fmt: skip
        return 0
    print(
        f"trained {name} on {tc.task} in {elapsed:.0f} s; best validation "
        f"{'accuracy' if tc.synthetic else 'BLEU'} {summary['best']:.2f}; checkpoints in {args.out}"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    run = load_run(args.run)
    tc = run.train_config
    if args.data_dir:
        tc = TrainConfig.from_dict({**tc.to_dict(), "data_dir": args.data_dir})
    from ..seq2seq.data import TranslationDataset
    from ..seq2seq.subwords import unk_rate

    try:
        pairs = load_task(tc, args.split)
    except DataError as e:
        raise DataError(
            f"{e}; if the files are in another folder now, pass it: `keymodels seq2seq eval "
            f"{args.run} --data-dir DIR`"
        ) from e
    data = TranslationDataset(
        pairs, run.src_vocab, run.tgt_vocab, run.model.max_source_tokens, "truncate"
    )
    result = evaluate(
        run.model, data, run.tgt_vocab, tc.synthetic, beam=args.beam, alpha=args.alpha,
        precision=args.precision,
    )  # fmt: skip
    result.update({"task": tc.task, "split": args.split, "run": str(args.run)})
    # how much of the split each vocabulary cannot spell (words: unseen or rare; subwords: only
    # characters never seen), in % of the tokens it produces
    result["vocab"] = tc.vocab
    result["src_unk_rate"] = unk_rate(run.src_vocab, [s for s, _ in pairs])
    result["tgt_unk_rate"] = unk_rate(run.tgt_vocab, [t for _, t in pairs])
    if args.json:
        print(json.dumps(result))
        return 0
    key = "accuracy" if tc.synthetic else "bleu"
    label = "sequence accuracy (%)" if tc.synthetic else "BLEU"
    print(f"{tc.task} {args.split}: {result['n']} sentences, beam {args.beam}")
    print(f"loss {result['loss']:.4f}  perplexity {result['ppl']:.3f}  {label} {result[key]:.2f}")
    print(
        f"<unk> ({tc.vocab} vocabulary): {result['src_unk_rate']:.2f}% of source tokens, "
        f"{result['tgt_unk_rate']:.2f}% of reference tokens"
    )
    print(f"{'source length':>14} {'n':>6} {label:>22}")
    for row in result["by_length"]:
        print(f"{row['length']:>14} {row['n']:>6} {row[key]:>22.2f}")
    return 0


def run_translate(args: argparse.Namespace) -> int:
    from ..seq2seq.experiment import attention_heatmap
    from ..seq2seq.translate import check_sentence_text, translate

    if (args.sentence is None) == (args.file is None):
        raise InvalidInputError("give one sentence or --file FILE (not both, not neither)")
    if args.show_attention:
        png_path(args.show_attention, "--show-attention", "attention.png")
    run = load_run(args.run)
    if args.show_attention and not run.model.has_attention:
        raise InvalidInputError(
            f"--show-attention: {args.run} was trained without attention (--attention none); "
            "there are no weights to show"
        )
    if args.file is not None:
        lines = read_lines(args.file)
        keep = [i for i, line in enumerate(lines) if line.strip()]
        if len(keep) < len(lines):
            print(
                f"note: {len(lines) - len(keep)} empty line(s) in {args.file} left empty in the "
                "output",
                file=sys.stderr,
            )
        for i in keep:
            try:
                check_sentence_text(lines[i])
            except InvalidInputError as e:
                raise InvalidInputError(f"{args.file} line {i + 1}: {e}") from None
        sentences = [lines[i] for i in keep]
    else:
        lines, keep, sentences = [args.sentence], [0], [args.sentence]
    results = translate(
        run, sentences, beam=args.beam, alpha=args.alpha, n_best=args.n_best,
        too_long=args.too_long, precision=args.precision,
    )  # fmt: skip
    by_line = dict(zip(keep, results))
    for i in range(len(lines)):
        t = by_line.get(i)
        if t is None:  # an empty input line: an empty output line (a JSON one with --json)
            empty = {"source": lines[i], "translation": "", "score": None, "unknown": [],
                     "truncated": False, "alternatives": []}  # fmt: skip
            print(json.dumps(empty, ensure_ascii=False) if args.json else "")
            continue
        if t.unknown:
            print(
                f"note: line {i + 1}: unknown word(s) mapped to <unk>: {' '.join(t.unknown)}",
                file=sys.stderr,
            )
        if t.truncated:
            print(
                f"warning: line {i + 1} truncated to {len(t.source_tokens)} tokens", file=sys.stderr
            )
        if args.json:
            print(
                json.dumps(
                    {
                        "source": t.source,
                        "translation": t.text,
                        "score": t.score,
                        "unknown": t.unknown,
                        "truncated": t.truncated,
                        "alternatives": t.alternatives,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(t.text)
            for text, score in t.alternatives:
                print(f"  alt ({score:.3f}): {text}")
    if args.show_attention:
        out = Path(args.show_attention)
        for n, (i, t) in enumerate(by_line.items()):
            path = out if len(by_line) == 1 else out.with_name(f"{out.stem}_{i + 1}{out.suffix}")
            check_writable_output(path, args.force, what="--show-attention file")
            attention_heatmap(run, " ".join(t.source_tokens), path, f"line {i + 1}", beam=args.beam)
            if n == 0 or len(by_line) == 1:
                print(f"attention heatmap written to {path}", file=sys.stderr)
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    from ..seq2seq.experiment import length_experiment, multi30k_report

    torch.set_num_threads(args.threads)
    if args.multi30k:
        report = multi30k_report(*args.multi30k, out=args.out, beam=args.beam, alpha=args.alpha)
        width = max(12, *(len(k) for k in report))
        print(f"{'':<{width}} {'test BLEU':>9} {'perplexity':>10}")
        for k, r in report.items():
            print(f"{k:<{width}} {r['bleu']:>9.2f} {r['ppl']:>10.2f}")
        print(f"{'source length':>14} {'n':>5} " + " ".join(f"{k:>{width}}" for k in report))
        rows = zip(*(r["by_length"] for r in report.values()))
        for row in rows:
            scores = " ".join(f"{r['bleu']:>{width}.2f}" for r in row)
            print(f"{row[0]['length']:>14} {row[0]['n']:>5} {scores}")
        print(f"bleu_vs_length.png, attention heatmaps and multi30k_report.json in {args.out}")
        return 0
    result = length_experiment(
        args.out,
        task=args.task,
        train_lengths=(args.min_length, args.max_length),
        epochs=args.epochs,
        train_size=args.train_size,
        seed=args.seed,
        force=args.force,
        progress=not args.no_progress,
        on_epoch=lambda label, row: _print_row(row, args.epochs, label),
        precision=args.precision,
    )
    _print_length_table(result)
    print(f"plots and length_experiment.json in {args.out}")
    return 0


def _print_length_table(result: dict) -> None:
    labels = [k for k in ("plain", "attention", "transformer") if k in result]
    print(
        "length " + " ".join(f"{k + ' acc %':>17}" for k in labels)
        + "   ‖∂L/∂x₁‖ untrained: " + " ".join(f"{k:>11}" for k in labels)
    )  # fmt: skip
    for i, row in enumerate(result[labels[0]]["accuracy"]):
        acc = " ".join(f"{result[k]['accuracy'][i]['accuracy']:>17.1f}" for k in labels)
        grad = " ".join(f"{result[k]['grad_norm_init'][i]['grad_norm']:>11.2e}" for k in labels)
        print(f"{row['length']:>6} {acc}   {' ' * 20}{grad}")


def seq2seq_demo_part(out: Path) -> None:
    """Plain vs attention encoder-decoder on the copy task: accuracy by input length, heatmap."""
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny RNN steps: one thread is faster, and fair to other parts
    try:
        result = _demo_experiment(out)
    finally:
        torch.set_num_threads(threads)
    print(
        f"[seq2seq] copy task, plain vs attention GRU encoder-decoder ({time.perf_counter() - start:.0f} s)"
    )
    _print_length_table(result)
    print(f"[seq2seq] attention heatmap: {out / 'seq2seq' / 'attention_example.png'}")


def _demo_experiment(out: Path) -> dict:
    """Small enough for the demo's budget, long enough inputs for the plain model to fail."""
    from ..seq2seq.experiment import length_experiment

    return length_experiment(
        out / "seq2seq",
        task="copy",
        train_lengths=(2, 16),
        test_lengths=[2, 4, 6, 8, 10, 12, 14, 16],
        epochs=6,
        train_size=8000,
        num_symbols=10,
        progress=False,
        emb_dim=32,
        hidden_dim=64,
        transformer_model=None,  # the demo keeps to the notes' two models (and its time budget)
        force=True,  # the demo's own folder: a second `make demo` starts its runs over
    )


def _cpu_device(value: str) -> str:
    """An argparse type for ``seq2seq train --device``: only ``cpu``, and a plain word for cuda.

    Raises:
        argparse.ArgumentTypeError: any other device, cuda with its own message.
    """
    if value == "cpu":
        return value
    if value.startswith("cuda"):
        raise argparse.ArgumentTypeError(
            f"the seq2seq engine runs on the CPU; --device {value} is not supported yet "
            "(leave out --device, or pass --device cpu)"
        )
    raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from 'cpu')")


def _add_synthetic_lengths(parser: argparse.ArgumentParser, shortest: int, longest: int) -> None:
    """``--synthetic-min-length``/``--synthetic-max-length``: the input lengths of a synthetic task.

    Named apart from ``--max-len`` (the longest training sentence), with the old spellings
    ``--min-length``/``--max-length`` kept as hidden aliases.
    """
    for bound, default, what in (("min", shortest, "shortest"), ("max", longest, "longest")):
        action = parser.add_argument(
            f"--synthetic-{bound}-length",
            dest=f"{bound}_length",
            type=int,
            default=default,
            metavar="N",
            help=f"synthetic tasks: {what} input (tokens; default {default})",
        )
        add_hidden_alias(parser, f"--{bound}-length", action)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "seq2seq", help="train/evaluate RNN and Transformer encoder-decoders", description=__doc__
    )
    ss = p.add_subparsers(dest="seq2seq_command", metavar="ACTION", parser_class=type(p))

    t = ss.add_parser("train", help="train a model on a synthetic task or Multi30k")
    t.add_argument("--task", choices=TASKS, default="reverse")
    t.add_argument(
        "--arch",
        choices=("rnn", "transformer"),
        default=None,
        help="rnn: GRU/LSTM encoder-decoder (with --attention); transformer: Vaswani et al. 2017",
    )
    t.add_argument(
        "--attention",
        choices=SCORE_CHOICES,
        default="concat",
        help="score, or none for the plain model",
    )
    t.add_argument("--style", choices=("bahdanau", "luong"), default="bahdanau")
    t.add_argument(
        "--input-feeding",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Luong input feeding (slower: steps run one at a time)",
    )
    t.add_argument("--rnn", choices=("gru", "lstm"), default="gru")
    t.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=True)
    t.add_argument(
        "--model", help="registered config to start from (default by task and attention)"
    )
    t.add_argument("--emb-dim", type=int, help="rnn: embedding size")
    t.add_argument("--hidden-dim", type=int, help="rnn: state size")
    t.add_argument("--layers", type=int, help="rnn: stacked RNN layers")
    t.add_argument("--dropout", type=float)
    t.add_argument("--dim", type=int, help="transformer: model width d (default 256 on Multi30k)")
    t.add_argument("--heads", type=int, help="transformer: attention heads")
    t.add_argument("--enc-layers", type=int, help="transformer: encoder layers")
    t.add_argument("--dec-layers", type=int, help="transformer: decoder layers")
    t.add_argument("--ff-dim", type=int, help="transformer: feed-forward width")
    t.add_argument("--attn-dropout", type=float, help="transformer: dropout on attention weights")
    t.add_argument("--norm", choices=("pre", "post"), help="transformer: LayerNorm placement")
    t.add_argument("--positions", choices=("sinusoidal", "learned"), help="transformer")
    t.add_argument(
        "--tie-embeddings",
        choices=("none", "decoder", "all"),
        help="transformer: share the target embedding with the output layer (decoder), and with "
        "the source embedding too (all: needs --joint-vocab)",
    )
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument(
        "--schedule",
        choices=("plateau", "cosine", "inverse_sqrt"),
        default="plateau",
        help="plateau: halve lr when validation stops improving; cosine: anneal to 0 over --epochs "
        "after --warmup; inverse_sqrt: warm up, then lr ∝ 1/√step (Vaswani et al.)",
    )
    t.add_argument("--warmup", type=int, default=0, help="steps of linear lr warmup")
    t.add_argument(
        "--adam-beta2", type=float, default=0.999, help="Adam β2 (the Transformer paper: 0.98)"
    )
    clip = t.add_argument(
        "--clip-grad",
        dest="clip",
        type=float,
        default=1.0,
        metavar="NORM",
        help="gradient norm clip (0: off), as in keymodels train",
    )
    add_hidden_alias(t, "--clip", clip)  # the old spelling, kept for scripts
    t.add_argument("--teacher-forcing", type=float, default=1.0, help="teacher forcing ratio")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-len", type=int, default=50, help="longest training sentence (tokens)")
    t.add_argument("--too-long", choices=("truncate", "drop", "error"), default="truncate")
    t.add_argument("--train-size", type=int, default=10000, help="synthetic tasks: training pairs")
    _add_synthetic_lengths(t, 3, 12)
    t.add_argument("--symbols", type=int, default=20, help="synthetic tasks: alphabet size")
    t.add_argument("--data-dir", default="../shared/data/multi30k", help="Multi30k raw files")
    t.add_argument(
        "--download", action="store_true", help="download Multi30k into --data-dir first"
    )
    t.add_argument("--min-freq", type=int, default=2, help="word vocab: rarer words become <unk>")
    t.add_argument(
        "--vocab",
        choices=("word", "bpe", "unigram"),
        default="word",
        help="words, or subword pieces learned on the training split (Hugging Face tokenizers)",
    )
    t.add_argument(
        "--vocab-size", type=int, default=8000, help="subword vocab: entries, specials included"
    )
    t.add_argument(
        "--joint-vocab", action="store_true", help="subword vocab: one for both languages"
    )
    t.add_argument(
        "--subword-model",
        metavar="JSON",
        help="use this tokenizers JSON file (e.g. a run's subwords.json) for both languages",
    )
    t.add_argument("--lowercase", action="store_true")
    t.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    t.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch CPU threads (default 1: a small model's RNN step is too small to split, "
        "and extra threads only spin on a busy machine; Multi30k-size models on an idle "
        "machine gain from 2 or more)",
    )
    t.add_argument("--max-minutes", type=float, help="stop after the epoch that would overrun this")
    t.add_argument(
        "--on-nonfinite",
        choices=("stop", "skip"),
        default="stop",
        help="a NaN/inf loss: stop, keeping the last good checkpoint (default), or skip the step",
    )
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    t.add_argument("--force", action="store_true", help="start over in an OUT that holds a run")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    t.add_argument(
        "--max-steps",
        type=positive_int,
        help="stop after this many optimizer steps in total (quick trials)",
    )
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument(
        "--device",
        type=_cpu_device,
        default="cpu",
        metavar="{cpu}",
        help="where to train: the seq2seq engine runs on the CPU (cpu, the default)",
    )
    add_precision_argument(t, "training")
    # The defaults, for --resume to tell a flag given from one left out (see _train_config).
    flag_defaults = {dest: t.get_default(dest) for dest in TRAIN_CONFIG_ARGS.values()}
    t.set_defaults(func=run_train, flag_defaults=flag_defaults)

    e = ss.add_parser("eval", help="loss, perplexity, accuracy/BLEU (by length) of a run")
    e.add_argument("run", help="run directory or checkpoint file")
    e.add_argument("--split", choices=("val", "test"), default="test")
    e.add_argument("--beam", type=int, default=1)
    e.add_argument("--alpha", type=finite_float, default=0.6, help="length penalty exponent")
    e.add_argument("--data-dir", help="Multi30k folder (default: the one used in training)")
    e.add_argument("--json", action="store_true")
    add_precision_argument(e, "decoding")
    e.set_defaults(func=run_eval)

    x = ss.add_parser(
        "experiment", help="plain vs attention vs Transformer against input length (plots)"
    )
    x.add_argument("--task", choices=SYNTHETIC_TASKS, default="copy")
    _add_synthetic_lengths(x, 2, 20)
    x.add_argument("--epochs", type=int, default=6)
    x.add_argument("--train-size", type=int, default=12000)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    x.add_argument(
        "--multi30k",
        nargs="+",
        metavar="RUN",
        help="instead: BLEU by source length of trained Multi30k runs (plain, attention, "
        "transformer, …) on test2016",
    )
    x.add_argument("--beam", type=int, default=5, help="with --multi30k")
    x.add_argument(
        "--alpha", type=finite_float, default=0.6, help="with --multi30k: length penalty exponent"
    )
    x.add_argument("--no-progress", action="store_true")
    x.add_argument("--force", action="store_true", help="start over in an OUT that holds runs")
    x.add_argument("--out", required=True)
    add_precision_argument(x, "training")
    x.set_defaults(func=run_experiment)

    tr = sub.add_parser(
        "translate", help="translate a sentence or a file with a trained seq2seq run"
    )
    tr.add_argument("run", help="run directory or checkpoint file")
    tr.add_argument("sentence", nargs="?")
    tr.add_argument(
        "--file",
        help="one sentence per line (UTF-8; '-': standard input); an empty line gives an empty "
        "output line, so the output stays line-aligned with the input",
    )
    tr.add_argument("--beam", type=int, default=5)
    tr.add_argument("--alpha", type=finite_float, default=0.6, help="length penalty exponent")
    tr.add_argument("--n-best", type=int, default=1)
    tr.add_argument("--too-long", choices=("error", "truncate"), default="error")
    tr.add_argument("--show-attention", metavar="PNG", help="write the attention heatmap here")
    tr.add_argument("--force", action="store_true", help="overwrite the --show-attention PNG")
    tr.add_argument(
        "--json", action="store_true", help="JSON Lines: one JSON object per input line"
    )
    add_precision_argument(tr, "decoding")
    tr.set_defaults(func=run_translate)
