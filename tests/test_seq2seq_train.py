"""Training: the copy task is learned, resume is exact, checkpoints check compatibility, BLEU."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import sacrebleu
import torch

import keymodels.run as run_module
from keymodels.checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint
from keymodels.errors import InvalidInputError
from keymodels.plotting import plot_alignment, plot_lines
from keymodels.registry import create_model
from keymodels.run import TrainingError
from keymodels.runs import load_seq2seq
from keymodels.seq2seq import train as train_module
from keymodels.seq2seq.data import TranslationDataset
from keymodels.seq2seq.experiment import grad_norm_first_step
from keymodels.seq2seq.model import Seq2Seq
from keymodels.seq2seq.train import (
    TrainConfig,
    bleu,
    evaluate,
    length_bucket,
    load_task,
    save_run_checkpoint,
    sequence_loss,
    train,
)
from keymodels.seq2seq.vocab import Vocabulary, detokenize, tokenize

COPY = dict(
    task="copy",
    batch_size=32,
    lr=5e-3,
    val_size=200,
    min_len=1,
    synthetic_max_len=5,
    num_symbols=6,
    max_len=10,
)


def test_copy_task_is_learned_to_100_percent(tmp_path):
    torch.set_num_threads(1)
    tc = TrainConfig(epochs=10, train_size=2000, **COPY)
    # fp32: a timing under load must not decide whether the test learns (auto is tested apart)
    summary = train("seq2seq_tiny_attn", tc, tmp_path, progress=False, precision="fp32")
    assert summary["history"][-1]["val_acc"] == 100.0
    run = load_seq2seq(tmp_path)  # best.safetensors
    test = TranslationDataset(load_task(run.train_config, "test"), run.src_vocab, run.tgt_vocab)
    result = evaluate(run.model, test, run.tgt_vocab, synthetic=True)
    assert result["accuracy"] >= 99.5
    assert sum(r["n"] for r in result["by_length"]) == result["n"] == 200
    assert [r["length"] for r in result["by_length"]] == ["1", "2", "3", "4", "5"]
    for name in ("best.safetensors", "last.safetensors", "metrics.csv", "config.json"):
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_continues_exactly(tmp_path, precision):
    torch.set_num_threads(1)
    # dropout and teacher forcing < 1 use the random generators that resume must restore
    tc = TrainConfig(epochs=3, train_size=300, teacher_forcing=0.5, **{**COPY, "val_size": 50})
    kw = dict(progress=False, dropout=0.3, precision=precision)
    full = train("seq2seq_tiny_attn", tc, tmp_path / "full", **kw)
    train("seq2seq_tiny_attn", dataclasses.replace(tc, epochs=1), tmp_path / "split", **kw)
    # "auto" on resume keeps the run's recorded precision: still exact
    resumed = train(
        "seq2seq_tiny_attn", tc, tmp_path / "split", resume=True, **{**kw, "precision": "auto"}
    )
    assert [r["precision"] for r in resumed["history"]] == [precision] * 3
    keys = ("epoch", "train_loss", "val_loss", "val_acc")
    assert [[r[k] for k in keys] for r in resumed["history"]] == [
        [r[k] for k in keys] for r in full["history"]
    ]
    a = load_checkpoint(tmp_path / "full" / "last.safetensors").model
    b = load_checkpoint(tmp_path / "split" / "last.safetensors").model
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(
        TrainingError, match=r"nothing to resume: .*last\.safetensors does not exist"
    ):
        train("seq2seq_tiny_attn", tc, tmp_path / "nothing", resume=True, progress=False)


def test_time_budget_counts_the_time_before_a_resume(tmp_path, monkeypatch):
    # A clock that advances one second per batch: the budget runs out at the same epoch anywhere.
    clock = [0.0]

    def loss_taking_one_second(*args, **kwargs):
        clock[0] += 1.0
        return sequence_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "sequence_loss", loss_taking_one_second)
    monkeypatch.setattr(run_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    tc = TrainConfig(epochs=12, train_size=64, max_minutes=0.5, **{**COPY, "val_size": 16})
    full = train("seq2seq_tiny_attn", tc, tmp_path / "full", progress=False)["history"]
    assert 2 < len(full) < 12  # stopped by the budget of 30 s, not by the epoch count
    first = dataclasses.replace(tc, epochs=2, max_minutes=None)
    train("seq2seq_tiny_attn", first, tmp_path / "split", progress=False)
    resumed = train("seq2seq_tiny_attn", tc, tmp_path / "split", resume=True, progress=False)
    # a run resumed from epoch 2 stops where the uninterrupted one did: the hour is one hour
    assert [r["epoch"] for r in resumed["history"]] == [r["epoch"] for r in full]
    assert resumed["history"][-1]["elapsed_s"] == full[-1]["elapsed_s"]


def test_resume_refuses_no_more_epochs_and_a_changed_config(tmp_path):
    torch.set_num_threads(1)
    tc = TrainConfig(epochs=1, train_size=64, **{**COPY, "val_size": 16})
    train("seq2seq_tiny_attn", tc, tmp_path, progress=False)
    with pytest.raises(
        TrainingError, match=r"has already trained 1 epoch\(s\), so --epochs 1 \(epochs=1\)"
    ):
        train("seq2seq_tiny_attn", tc, tmp_path, resume=True, progress=False)
    changed = dataclasses.replace(tc, epochs=2, lr=0.5)
    with pytest.raises(
        TrainingError, match=r"changed training config \(lr: the run has 0\.005, given 0\.5\)"
    ):
        train("seq2seq_tiny_attn", changed, tmp_path, resume=True, progress=False)
    # How long to go on and what a NaN loss does may change; the config records what is used.
    longer = dataclasses.replace(tc, epochs=2, max_minutes=60.0, on_nonfinite="skip")
    summary = train("seq2seq_tiny_attn", longer, tmp_path, resume=True, progress=False)
    assert summary["epochs"] == 2 and [r["epoch"] for r in summary["history"]] == [1, 2]
    recorded = json.loads((tmp_path / "config.json").read_text())["train"]
    assert recorded["lr"] == 0.005 and recorded["epochs"] == 2


def test_max_steps_counts_every_step_of_the_run(tmp_path):
    torch.set_num_threads(1)
    tc = TrainConfig(epochs=3, train_size=160, **{**COPY, "val_size": 20})  # 5 steps an epoch
    summary = train("seq2seq_tiny_attn", tc, tmp_path, progress=False, max_steps=7)
    assert summary["steps"] == 7 and summary["epochs"] == 2  # the cut-short epoch is saved
    assert load_checkpoint(tmp_path / "last.safetensors").state["step"] == 7
    resumed = train("seq2seq_tiny_attn", tc, tmp_path, resume=True, progress=False, max_steps=9)
    assert resumed["steps"] == 9 and resumed["epochs"] == 3
    with pytest.raises(InvalidInputError, match=r"max_steps must be >= 1 .*; got 0"):
        train("seq2seq_tiny_attn", tc, tmp_path / "none", progress=False, max_steps=0)


def test_train_config_rejects_non_finite_and_out_of_range_numbers():
    for kw, message in [
        ({"lr": float("inf")}, "lr must be a finite number > 0; got inf"),
        ({"lr": float("nan")}, "lr must be a finite number > 0; got nan"),
        ({"lr": 0.0}, "lr must be a finite number > 0; got 0.0"),
        ({"clip": -1.0}, "clip must be a finite number >= 0; got -1.0"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be a finite number in \[0, 1\); got 1.0"),
        ({"max_minutes": float("nan")}, "max_minutes must be a finite number > 0; got nan"),
        ({"train_size": 0}, "train_size must be >= 1; got 0"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            TrainConfig(**kw)


def _saved_run(tmp_path, vocab_size=24, **overrides):
    vocab = Vocabulary([str(i) for i in range(vocab_size - 4)])
    model = create_model("seq2seq_tiny_attn", **overrides)
    tc = TrainConfig(**COPY)
    return save_run_checkpoint(
        tmp_path / "x.safetensors", model, vocab, vocab, tc, {"epoch": 1}
    ), model


def test_checkpoint_round_trip_and_mismatches(tmp_path):
    path, model = _saved_run(tmp_path)
    run = load_seq2seq(path)
    assert run.model.config == model.config and len(run.src_vocab) == 24
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in run.model.state_dict().items())

    path, _ = _saved_run(tmp_path, vocab_size=30)  # vocabulary of 30 tokens, model of 24
    with pytest.raises(
        CheckpointMismatchError, match="source vocabulary has 30 tokens but the model expects 24"
    ):
        load_seq2seq(path)

    # weights of a 24-unit model under a config that says 32 units
    path, _ = _saved_run(tmp_path)
    ckpt = load_checkpoint(path)
    ckpt.meta["config"]["hidden_dim"] = 32
    from keymodels.checkpoint import save_checkpoint

    save_checkpoint(path, ckpt)
    with pytest.raises(
        CheckpointMismatchError, match=r"another model: shape mismatch decoder\.attention\.W_h"
    ):
        load_seq2seq(path)

    ckpt.meta["kind"] = "keymodels.vit"
    save_checkpoint(path, ckpt)
    with pytest.raises(
        CheckpointError, match="not a seq2seq model's checkpoint but another model's"
    ):
        load_seq2seq(path)


def test_bleu_matches_sacrebleu_on_detokenized_text():
    refs = [
        "Two young, White males are outside near many bushes.",
        "A little girl climbing into a wooden playhouse.",
        "A man in an orange hat starring at something.",
    ]
    hyps = [
        "Two young white men are outside near bushes.",
        "A little girl climbs into a wooden playhouse.",
        "A man in an orange hat is staring at something.",
    ]
    ours = bleu([detokenize(tokenize(h)) for h in hyps], [detokenize(tokenize(r)) for r in refs])
    assert ours == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert 0 < ours < 100
    assert bleu(refs, refs) == pytest.approx(100.0)
    # sacrebleu tokenizes by itself: spacing before punctuation does not matter
    assert bleu(["A man is riding a red bike ."], ["A man is riding a red bike."]) == pytest.approx(
        100.0
    )
    with pytest.raises(InvalidInputError, match="one reference per hypothesis"):
        bleu(hyps, refs[:2])


def test_length_buckets():
    buckets = [length_bucket(n, False) for n in (1, 10, 11, 15, 16, 20, 21, 40)]
    assert buckets == ["1-10", "1-10", "11-15", "11-15", "16-20", "16-20", "21+", "21+"]
    assert length_bucket(7, True) == "7"


def test_bad_train_config():
    with pytest.raises(InvalidInputError, match="unknown task"):
        TrainConfig(task="wmt14")
    with pytest.raises(InvalidInputError, match="teacher_forcing"):
        TrainConfig(teacher_forcing=1.5)


def test_train_config_from_dict_rejects_unknown_keys():
    # Dropping them made a typo in a saved or hand-written config a silent default.
    tc = TrainConfig(epochs=3)
    assert TrainConfig.from_dict(tc.to_dict()) == tc
    with pytest.raises(
        InvalidInputError,
        match=r"unknown train config field\(s\) \['epoch', 'zz'\]; valid fields: adam_beta2, batch_size, "
        r".*epochs.*Did you mean 'epochs'\?",
    ):
        TrainConfig.from_dict({**tc.to_dict(), "epoch": 5, "zz": 1})
    # checkpoints written before the rename store the synthetic length as "len_max"
    old = {k: v for k, v in tc.to_dict().items() if k != "synthetic_max_len"}
    assert TrainConfig.from_dict({**old, "len_max": 7}).synthetic_max_len == 7


def test_gradient_to_first_input_vanishes_without_attention():
    vocab = Vocabulary([str(i) for i in range(10)])
    norms = {}
    for attention in ("none", "concat"):
        torch.manual_seed(0)
        model = Seq2Seq(
            dataclasses.replace(
                create_model("seq2seq_tiny_attn").config,
                attention=attention,
                bidirectional=False,
                max_len=40,
            )
        )
        rows = grad_norm_first_step(model, vocab, vocab, "copy", [2, 20], n=8, num_symbols=10)
        norms[attention] = [r["grad_norm"] for r in rows]
    plain, attn = norms["none"], norms["concat"]
    assert all(v > 0 for v in plain + attn)
    assert plain[1] < plain[0] / 10  # 18 more steps between x_1 and the context vector
    assert attn[1] / attn[0] > 10 * plain[1] / plain[0]  # attention keeps a direct path


def test_plots(tmp_path):
    png = plot_alignment(
        ["ein", "Hund", "<eos>"], ["a", "dog"], torch.rand(2, 3), tmp_path / "a.png", "t"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InvalidInputError, match=r"\[target, source\]"):
        plot_alignment(["a"], ["b", "c"], torch.rand(1, 2), tmp_path / "b.png")
    line = plot_lines({"plain": [(1, 2.0), (2, 1.0)]}, tmp_path / "c.png", "x", "y", logy=True)
    assert line.stat().st_size > 1000


def test_multi30k_report_on_tiny_runs(shared_data, tmp_path):
    from keymodels.seq2seq.data import load_multi30k
    from keymodels.seq2seq.experiment import multi30k_report

    torch.set_num_threads(1)
    pairs = load_multi30k(shared_data / "multi30k", "test")
    src = Vocabulary.build(s for s, _ in pairs)
    tgt = Vocabulary.build(t for _, t in pairs)
    tc = TrainConfig(task="multi30k", data_dir=str(shared_data / "multi30k"))
    paths = []
    for attention in ("none", "dot"):
        torch.manual_seed(0)
        model = create_model(
            "seq2seq_tiny_attn",
            attention=attention,
            src_vocab_size=len(src),
            tgt_vocab_size=len(tgt),
            max_len=60,
        )
        paths.append(
            save_run_checkpoint(
                tmp_path / f"{attention}.safetensors", model, src, tgt, tc, {"epoch": 1}
            )
        )
    torch.manual_seed(0)
    transformer = create_model(
        "transformer_tiny", src_vocab_size=len(src), tgt_vocab_size=len(tgt), max_len=130
    )
    paths.append(
        save_run_checkpoint(tmp_path / "tf.safetensors", transformer, src, tgt, tc, {"epoch": 1})
    )
    report = multi30k_report(*paths, out=tmp_path / "report", beam=2, examples=(0,))
    assert list(report) == ["plain", "attention", "transformer"]
    for name in report:
        assert sum(r["n"] for r in report[name]["by_length"]) == 1000
        assert 0.0 <= report[name]["bleu"] < 5.0  # untrained
        assert report[name]["ppl"] > 100
    for png in ("bleu_vs_length.png", "attention_test1.png", "attention_transformer_test1.png",
                "attention_transformer_test1_heads.png"):  # fmt: skip
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"


def test_cosine_schedule_anneals_to_zero_and_resumes_exactly_mid_epoch(tmp_path, monkeypatch):
    import keymodels.runguard as runguard

    torch.set_num_threads(1)
    # fp32 throughout: "auto" times both precisions, and under load two runs may choose apart
    tc = TrainConfig(epochs=3, train_size=160, schedule="cosine", **{**COPY, "val_size": 20})
    summary = train("seq2seq_tiny_attn", tc, tmp_path / "full", progress=False, precision="fp32")
    lrs = [row["lr"] for row in summary["history"]]  # 5 steps an epoch: cos(π·5/15), cos(π·10/15)
    assert lrs == pytest.approx([5e-3 * 0.75, 5e-3 * 0.25, 0.0], abs=1e-12)

    # Ctrl-C after step 7 (epoch 2, batch 2), then resume: the same weights as without the stop.
    monkeypatch.setattr(runguard, "_CRASH_COUNTS", {})
    monkeypatch.setenv(runguard.CRASH_ENV, "train_step:7:SIGINT")
    with pytest.raises(runguard.TrainingInterrupted, match="batch 2/5 of epoch 2"):
        train("seq2seq_tiny_attn", tc, tmp_path / "stopped", progress=False, precision="fp32")
    monkeypatch.delenv(runguard.CRASH_ENV)
    resumed = train("seq2seq_tiny_attn", tc, tmp_path / "stopped", resume=True, progress=False)
    assert [row["lr"] for row in resumed["history"]] == lrs
    a = load_checkpoint(tmp_path / "full" / "last.safetensors").model
    b = load_checkpoint(tmp_path / "stopped" / "last.safetensors").model
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(
        InvalidInputError, match=r"schedule must be one of \('plateau', 'cosine', 'inverse_sqrt'\)"
    ):
        TrainConfig(schedule="step")


def test_warmup_schedules_peak_at_the_given_lr():
    from keymodels.seq2seq.train import lr_schedule

    def lrs(tc, steps):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=tc.lr)
        scheduler, out = lr_schedule(tc, optimizer, steps), []
        for _ in range(steps):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    # Vaswani et al.: linear warmup to the peak at step 4, then ∝ 1/√step
    inv = lrs(TrainConfig(lr=1.0, schedule="inverse_sqrt", warmup=4), 16)
    assert inv[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert inv[15] == pytest.approx(0.5) and max(inv) == 1.0
    cos = lrs(TrainConfig(lr=1.0, schedule="cosine", warmup=2), 10)
    assert cos[:3] == pytest.approx([0.5, 1.0, 1.0]) and cos[-1] < 0.05
    with pytest.raises(InvalidInputError, match="warmup needs a step schedule"):
        TrainConfig(warmup=10)
