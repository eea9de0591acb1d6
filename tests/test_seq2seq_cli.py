"""``keymodels seq2seq train|eval`` and ``keymodels translate``, including bad inputs."""

from __future__ import annotations

import json
import re

import pytest

from keymodels.cli import build_parser, main

TINY = [
    "--task",
    "copy",
    "--min-length",
    "1",
    "--max-length",
    "5",
    "--symbols",
    "6",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("s2s") / "run"
    args = ["seq2seq", "train", *TINY, "--model", "seq2seq_tiny_attn", "--epochs", "1"]
    assert main([*args, "--train-size", "300", "--max-len", "20", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("s2s") / "plain"
    args = ["seq2seq", "train", *TINY, "--attention", "none", "--model", "seq2seq_tiny_plain"]
    assert main([*args, "--epochs", "1", "--train-size", "100", "--out", str(out)]) == 0
    return out


def test_train_prints_epochs_and_resume_extends(run_dir, capsys):
    assert (run_dir / "best.safetensors").is_file()
    args = ["seq2seq", "train", *TINY, "--epochs", "2", "--train-size", "300", "--resume"]
    assert main([*args, "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2: train loss " in out and "epoch 1/" not in out
    assert "best validation accuracy" in out


def test_eval_json_and_table(run_dir, capsys):
    assert main(["seq2seq", "eval", str(run_dir), "--json", "--beam", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"loss", "ppl", "accuracy", "by_length"} <= set(result) and result["n"] == 1000
    assert result["ppl"] == pytest.approx(2.718281828 ** result["loss"], rel=1e-6)
    assert main(["seq2seq", "eval", str(run_dir), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "sequence accuracy" in out


def test_translate_sentence_beam_nbest_and_attention(run_dir, tmp_path, capsys):
    png = tmp_path / "attn.png"
    code = main(
        [
            "translate",
            str(run_dir),
            "1 2 3",
            "--beam",
            "3",
            "--n-best",
            "2",
            "--show-attention",
            str(png),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].strip() and out[1].startswith("  alt (")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["translate", str(run_dir), "1 2 3", "--json", "--beam", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "1 2 3"


def test_unknown_words_are_reported(run_dir, capsys):
    assert main(["translate", str(run_dir), "1 zebra 2"]) == 0
    assert "unknown word(s) mapped to <unk>: zebra" in capsys.readouterr().err


@pytest.mark.parametrize("sentence", ["", "   \t "])
def test_empty_sentence_is_an_error(run_dir, sentence, capsys):
    assert main(["translate", str(run_dir), sentence]) == 2
    assert "empty or whitespace-only" in capsys.readouterr().err


def test_too_long_sentence_error_or_truncation(run_dir, capsys):
    long = " ".join(["1"] * 60)  # the model accepts 32 (config) or --max-len 20 → 32
    assert main(["translate", str(run_dir), long]) == 2
    assert "more than this model's maximum of 32" in capsys.readouterr().err
    assert main(["translate", str(run_dir), long, "--too-long", "truncate"]) == 0
    assert "truncated to 32 tokens" in capsys.readouterr().err


def test_translate_file_keeps_empty_lines_and_rejects_bad_utf8(run_dir, tmp_path, capsys):
    f = tmp_path / "in.txt"
    f.write_text("1 2\n\n3 4 5\n", encoding="utf-8")
    assert main(["translate", str(run_dir), "--file", str(f), "--beam", "2"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3 and captured.out.splitlines()[1] == ""
    assert "1 empty line(s)" in captured.err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"1 2\n3 \xff 4\n")
    assert main(["translate", str(run_dir), "--file", str(bad)]) == 2
    assert "line 2 is not valid UTF-8" in capsys.readouterr().err
    assert main(["translate", str(run_dir)]) == 2
    assert "one sentence or --file" in capsys.readouterr().err


def test_plain_model_has_no_attention_to_show(plain_dir, tmp_path, capsys):
    assert main(["translate", str(plain_dir), "1 2", "--beam", "1"]) == 0
    capsys.readouterr()
    assert (
        main(["translate", str(plain_dir), "1 2", "--show-attention", str(tmp_path / "x.png")]) == 2
    )
    assert "trained without attention" in capsys.readouterr().err


def test_bad_run_dir_and_missing_data(tmp_path, capsys):
    assert main(["seq2seq", "eval", str(tmp_path)]) == 2
    assert "holds no best.safetensors" in capsys.readouterr().err
    args = [
        "seq2seq",
        "train",
        "--task",
        "multi30k",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "train.de[.gz]" in err and "multi30k" in err
    with pytest.raises(SystemExit) as e:
        main(["seq2seq", "train", "--task", "copy", "--attention", "cosine", "--out", "x"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_translate_json_lines_stdin_bom_and_absolute_data_dir(run_dir, monkeypatch, capsys):
    import io

    stdin = io.TextIOWrapper(io.BytesIO("\ufeff1 2\n\n3\n".encode()), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["translate", str(run_dir), "--file", "-", "--json", "--beam", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON Lines
    assert [r["source"] for r in rows] == ["1 2", "", "3"]  # BOM stripped, empty line kept
    assert rows[1]["translation"] == "" and not rows[0]["unknown"]
    assert main(["translate", str(run_dir), "\ufeff1 2", "--beam", "1"]) == 0
    assert "<unk>" not in capsys.readouterr().err
    from pathlib import Path

    from keymodels.runs import load_seq2seq

    data_dir = load_seq2seq(run_dir).train_config.data_dir
    assert Path(data_dir).is_absolute(), data_dir  # `seq2seq eval` works from any folder


def test_eval_with_missing_data_suggests_data_dir(run_dir, monkeypatch, capsys):
    from keymodels.seq2seq.data import DataError

    def missing(tc, split):
        raise DataError(f"Multi30k files for split {split!r} not found in {tc.data_dir}")

    monkeypatch.setattr("keymodels.cli.seq2seq.load_task", missing)
    assert main(["seq2seq", "eval", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "not found in" in err and f"keymodels seq2seq eval {run_dir} --data-dir DIR" in err


def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_flags_have_one_name_per_idea_and_old_spellings_still_parse(capsys):
    """--clip-grad as in `keymodels train`; --synthetic-*-length apart from --max-len (the longest
    training sentence); --clip, --min-length and --max-length still parse, but --help hides them."""
    train = ("seq2seq", "train", "--out", "run")
    defaults = _parse(*train)
    assert (defaults.clip, defaults.min_length, defaults.max_length) == (1.0, 3, 12)
    assert _parse(*train, "--clip-grad", "0.5").clip == 0.5
    assert _parse(*train, "--clip", "0.25").clip == 0.25
    args = _parse(*train, "--synthetic-min-length", "2", "--synthetic-max-length", "7",
                  "--max-len", "30")  # fmt: skip
    assert (args.min_length, args.max_length, args.max_len) == (2, 7, 30)
    args = _parse(*train, "--min-length", "4", "--max-length", "9")
    assert (args.min_length, args.max_length) == (4, 9)
    experiment = ("seq2seq", "experiment", "--out", "exp")
    assert (_parse(*experiment).min_length, _parse(*experiment).max_length) == (2, 20)
    args = _parse(*experiment, "--synthetic-max-length", "8", "--min-length", "3")
    assert (args.min_length, args.max_length) == (3, 8)
    shown = {}
    for command in ("train", "experiment"):
        with pytest.raises(SystemExit):
            main(["seq2seq", command, "--help"])
        shown[command] = capsys.readouterr().out
        assert "--synthetic-min-length" in shown[command]
        assert "--synthetic-max-length" in shown[command]
        assert "--min-length" not in shown[command] and "--max-length" not in shown[command]
    assert "--clip-grad" in shown["train"] and not re.search(r"--clip(?!-grad)", shown["train"])


def test_train_device_is_cpu_and_cuda_is_refused_plainly(capsys):
    assert _parse("seq2seq", "train", "--out", "run").device == "cpu"
    assert _parse("seq2seq", "train", "--device", "cpu", "--out", "run").device == "cpu"
    with pytest.raises(SystemExit) as exit_:
        main(["seq2seq", "train", "--device", "cuda", "--out", "run"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "the seq2seq engine runs on the CPU; --device cuda is not supported yet" in err


def test_train_json_and_max_steps(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["seq2seq", "train", *TINY, "--model", "seq2seq_tiny_attn", "--epochs", "3"]
    args += ["--train-size", "100", "--max-steps", "2", "--json", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout: one JSON object, nothing else
    assert summary["steps"] == 2 and summary["epochs"] == 1 and summary["metric"] == "accuracy"
    assert summary["out"] == str(out) and len(summary["history"]) == 1
    # the epoch line goes to stderr, in the ViT engine's format
    assert re.search(
        r"^epoch 1/3: train loss [\d.]+, val loss [\d.]+, val acc [\d.]+%, lr \S+, [\d.]+ s$",
        captured.err,
        re.MULTILINE,
    ), captured.err
    # --resume keeps the flags left out (--train-size, --max-len) as the run stored them
    assert main(["seq2seq", "train", *TINY, "--epochs", "2", "--resume", "--out", str(out)]) == 0
    assert "epoch 2/2: train loss " in capsys.readouterr().out


@pytest.fixture(scope="module")
def transformer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("s2s") / "transformer"
    args = ["seq2seq", "train", *TINY, "--arch", "transformer", "--model", "transformer_tiny"]
    args += ["--vocab", "bpe", "--vocab-size", "14", "--joint-vocab", "--tie-embeddings", "all"]
    args += ["--schedule", "inverse_sqrt", "--warmup", "20", "--adam-beta2", "0.98"]
    assert main([*args, "--epochs", "1", "--train-size", "200", "--out", str(out)]) == 0
    return out


def test_transformer_with_subwords_trains_evaluates_and_shows_every_head(
    transformer_dir, tmp_path, capsys
):
    config = json.loads((transformer_dir / "config.json").read_text())
    assert config["model"]["arch"] == "transformer"
    assert config["model"]["tie_embeddings"] == "all"
    assert config["train"]["vocab"] == "bpe" and config["train"]["schedule"] == "inverse_sqrt"
    assert (transformer_dir / "subwords.json").is_file()
    capsys.readouterr()
    assert main(["seq2seq", "eval", str(transformer_dir), "--json", "--beam", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["vocab"] == "bpe" and result["src_unk_rate"] == result["tgt_unk_rate"] == 0.0
    png = tmp_path / "a.png"
    assert main(["translate", str(transformer_dir), "1 2 3", "--show-attention", str(png)]) == 0
    for path in (png, tmp_path / "a_heads.png"):
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_transformer_flags_and_rnn_flags_do_not_mix(tmp_path, capsys):
    base = ["seq2seq", "train", *TINY, "--out", str(tmp_path / "x")]
    assert main([*base, "--arch", "transformer", "--attention", "general"]) == 2
    assert "--attention is not an option of --arch transformer" in capsys.readouterr().err
    assert main([*base, "--heads", "2"]) == 2  # rnn by default
    assert "--heads is not an option of --arch rnn" in capsys.readouterr().err
    assert main([*base, "--model", "transformer_tiny", "--arch", "rnn"]) == 2
    assert "is a transformer model but --arch rnn" in capsys.readouterr().err
    assert main([*base, "--joint-vocab"]) == 2
    assert "are for subword vocabularies" in capsys.readouterr().err
    assert main([*base, "--vocab", "bpe", "--vocab-size", "6"]) == 2
    assert "smaller than the alphabet" in capsys.readouterr().err
    assert main([*base, "--schedule", "inverse_sqrt"]) == 2
    assert "give --warmup N" in capsys.readouterr().err
    assert not (tmp_path / "x" / "last.safetensors").exists()


def test_experiment_report_takes_any_number_of_runs(run_dir, plain_dir, transformer_dir, capsys):
    # the synthetic runs stand in for Multi30k ones: only the labels and the table are checked
    from keymodels.runs import load_seq2seq
    from keymodels.seq2seq.experiment import run_label

    labels = [run_label(load_seq2seq(d)) for d in (plain_dir, run_dir, transformer_dir)]
    assert labels == ["plain", "attention", "transformer+bpe"]


def test_length_experiment_puts_the_transformer_beside_the_two_rnns(tmp_path, capsys):
    args = ["seq2seq", "experiment", "--task", "copy", "--epochs", "1", "--train-size", "200",
            "--synthetic-min-length", "2", "--synthetic-max-length", "5", "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "plain acc %" in out and "attention acc %" in out and "transformer acc %" in out
    result = json.loads((tmp_path / "length_experiment.json").read_text())
    assert [r["length"] for r in result["transformer"]["accuracy"]] == [2, 3, 4, 5]
    assert all(r["grad_norm"] > 0 for r in result["transformer"]["grad_norm_init"])
    for png in ("accuracy_vs_length.png", "attention_example_transformer.png",
                "attention_example_transformer_heads.png"):  # fmt: skip
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_transformer_resumes_without_naming_its_architecture(transformer_dir, capsys):
    args = ["seq2seq", "train", *TINY, "--epochs", "2", "--train-size", "200", "--resume"]
    assert main([*args, "--out", str(transformer_dir), "--dropout", "0.0"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out
