"""Every command, run with wrong arguments or bad files: exit code 2 and one line naming the
problem, never a traceback (``--debug`` shows it).

``python tests/test_cli_bad_args.py`` prints the table of these cases in docs/errors.md from a real
run: the messages longer than ``LONG`` characters go into a list under the table, not into its cells.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import pickle
from pathlib import Path

import pytest
import torch

from keymodels.cli import main

ROOT = Path(__file__).resolve().parents[1]
ERRORS_DOC = ROOT / "docs" / "errors.md"  # the table of these cases; the README links to it
LONG = 300  # characters: a longer message is listed under the table instead of filling a cell

# (what is wrong, argv with {placeholders}, a fragment the one-line message must contain)
CASES = [
    ("unknown command", ["trian"], "invalid choice: 'trian'"),
    ("unknown option", ["models", "--bogus"], "unrecognized arguments: --bogus"),
    ("model pattern that matches nothing", ["models", "vit_gigantic*"], "no registered model matches 'vit_gigantic*'"),
    ("unknown recipe", ["train", "--recipe", "fashion", "--out", "{tmp}/r"], "unknown recipe 'fashion'. Did you mean 'fashion-mnist'"),
    ("data set files missing", ["train", "--recipe", "fashion-mnist", "--data-dir", "{tmp}/empty", "--out", "{tmp}/r"], "train-images-idx3-ubyte"),
    ("truncated data file", ["train", "--recipe", "fashion-mnist", "--data-dir", "{tmp}/truncated", "--out", "{tmp}/r"], "truncated or corrupt"),
    ("unknown model name", ["train", "--recipe", "digits", "--model", "vit_tiny_patch16", "--out", "{tmp}/r"], "unknown image-classification model 'vit_tiny_patch16'. Did you mean 'vit_tiny_patch16_224'"),
    ("batch size 0", ["train", "--recipe", "digits", "--batch-size", "0", "--out", "{tmp}/r"], "batch_size must be >= 1; got 0"),
    ("--train-subset above the training images", ["train", "--recipe", "digits", "--train-subset", "5000", "--out", "{tmp}/subset_run"], "train_subset=5000 (--train-subset) is more than the 1295 training images"),
    ("--train-subset below the number of classes", ["train", "--recipe", "digits", "--train-subset", "9", "--out", "{tmp}/subset_run"], "fewer than the 10 classes"),
    ("a validation share that leaves a class without training images", ["train", "--recipe", "imagefolder", "--data-dir", "{tmp}/one_dog", "--out", "{tmp}/subset_run"], "class 'dog' (1 image(s)) would have no training image left"),
    ("eval of an unknown split", ["eval", "{vit_run}", "--split", "train"], "argument --split: invalid choice: 'train'"),
    ("eval --split val of a model without a recorded validation split", ["eval", "{tmp}/nan_model", "--dataset", "digits", "--split", "val"], "records no validation split of digits"),
    ("distillation for a model without a distillation token", ["train", "--recipe", "digits", "--teacher", "{vit_run}", "--out", "{tmp}/subset_run"], "distillation needs a model with a distillation token; 'cct_2_3x1_8' has none"),
    ("a teacher of another input size", ["train", "--recipe", "digits", "--model", "deit_fmnist_distilled_patch4_28", "--teacher", "{vit_run}", "--out", "{tmp}/subset_run"], "takes 1×8×8 images but the student 1×28×28"),
    ("a teacher folder without a trained run", ["train", "--recipe", "digits", "--model", "deit_fmnist_distilled_patch4_28", "--teacher", "{tmp}/empty", "--out", "{tmp}/subset_run"], "empty"),
    ("test-time mirroring for a recipe that never mirrors", ["train", "--recipe", "digits", "--tta", "--out", "{tmp}/subset_run"], "does not train on mirrored images"),
    ("non-numeric learning rate", ["train", "--recipe", "digits", "--lr", "fast", "--out", "{tmp}/r"], "argument --lr: invalid float value: 'fast'"),
    ("--resume with nothing to resume", ["train", "--recipe", "digits", "--resume", "--out", "{tmp}/none"], "nothing to resume"),
    ("--resume with another model's run", ["train", "--recipe", "digits", "--model", "vit_nano_patch2_8", "--resume", "--out", "{vit_run}"], "holds weights of another model"),
    ("eval of a folder with no checkpoint", ["eval", "{tmp}/empty"], "holds no best.safetensors or last.safetensors"),
    ("eval of a file that is not a checkpoint", ["eval", "{garbage}"], "not a readable safetensors file"),
    ("eval of a seq2seq run", ["eval", "{s2s_run}"], "not of a trained classifier"),
    ("predict on an image that cannot be read", ["predict", "{vit_run}", "{garbage}"], "cannot decode image"),
    ("predict on a missing image", ["predict", "{vit_run}", "{tmp}/nope.png"], "nope.png"),
    ("predict with --top-k 0", ["predict", "{vit_run}", "{image}", "--top-k", "0"], "--top-k must be >= 1; got 0"),
    ("explain with an unknown method", ["explain", "{vit_run}", "{image}", "--method", "saliency", "--out", "{tmp}/e.png"], "invalid choice: 'saliency'"),
    ("explain a layer out of range", ["explain", "{vit_run}", "{image}", "--method", "heads", "--layer", "9", "--out", "{tmp}/e.png"], "layer 9 is out of range"),
    ("explain over an existing file", ["explain", "{vit_run}", "{image}", "--out", "{image}"], "exists; pass --force to overwrite it"),
    ("convert a missing file", ["convert", "{tmp}/nope.pth", "{tmp}/o", "--from", "timm", "--to", "hf"], "nope.pth"),
    ("convert a file of another format", ["convert", "{garbage}", "{tmp}/o", "--from", "timm", "--to", "hf", "--model", "vit_tiny_patch16_224"], "garbage.bin"),
    ("convert a pickle that would run code", ["convert", "{evil}", "{tmp}/o", "--from", "timm", "--to", "hf", "--model", "vit_tiny_patch16_224"], "never unpickles code"),
    ("convert to an unknown format", ["convert", "{vit_run}", "{tmp}/o", "--from", "keymodels", "--to", "onnx"], "invalid choice: 'onnx'"),
    ("export-onnx of a missing model", ["export-onnx", "{tmp}/nope", "{tmp}/m.onnx"], "nope"),
    ("serve a folder with no trained run", ["serve", "{tmp}/empty"], "holds no best.safetensors or last.safetensors"),
    ("serve on a port out of range", ["serve", "{vit_run}", "--port", "70000"], "--port must be 1..65535; got 70000"),
    ("serve with an upload cap of 0 MB", ["serve", "{vit_run}", "--max-upload-mb", "0"], "expected a size in MB in (0, 1024]; got 0"),
    ("seq2seq: unknown task", ["seq2seq", "train", "--task", "translate", "--out", "{tmp}/s"], "invalid choice: 'translate'"),
    ("seq2seq: 0 epochs", ["seq2seq", "train", "--task", "copy", "--epochs", "0", "--out", "{tmp}/s"], "epochs must be >= 1; got 0"),
    ("seq2seq: Multi30k files missing", ["seq2seq", "train", "--task", "multi30k", "--data-dir", "{tmp}/empty", "--out", "{tmp}/s"], "train.de"),
    ("seq2seq: eval of a ViT run", ["seq2seq", "eval", "{vit_run}"], "not a seq2seq model's checkpoint but an image classifier's"),
    ("translate an empty sentence", ["translate", "{s2s_run}", "   "], "empty"),
    ("translate a sentence longer than the model's maximum", ["translate", "{s2s_run}", "{long_sentence}"], "more than this model's maximum of 32; shorten it or pass --too-long truncate"),
    ("translate a file that is not UTF-8", ["translate", "{s2s_run}", "--file", "{latin1}"], "line 2 is not valid UTF-8"),
    ("translate with a ViT run", ["translate", "{vit_run}", "1 2 3"], "not a seq2seq model's checkpoint but an image classifier's"),
    ("translate --show-attention with the plain model", ["translate", "{s2s_plain}", "1 2", "--show-attention", "{tmp}/a.png"], "was trained without attention"),
    # issue 17
    ("convert a file with integer tensors", ["convert", "{int32}", "{tmp}/o", "--from", "timm", "--to", "keymodels", "--num-heads", "2"], "non-floating-point tensors: blocks.0.attn.proj.bias (torch.int32)"),
    ("negative --threads", ["predict", "{vit_run}", "{image}", "--threads", "-3"], "argument --threads: must be an integer >= 1; got -3"),
    *([("--device cuda without a GPU", ["train", "--recipe", "digits", "--device", "cuda", "--out", "{tmp}/r"], "no GPU is visible")]
      if not torch.cuda.is_available() else []),
    ("image size 0", ["train", "--recipe", "digits", "--img-size", "0", "--out", "{tmp}/r"], "img_size must be >= 1 pixel"),
    ("negative mixup", ["train", "--recipe", "digits", "--mixup", "-1", "--out", "{tmp}/r"], "mixup must be >= 0 (0: off); got -1.0"),
    ("--max-steps 0", ["train", "--recipe", "digits", "--max-steps", "0", "--out", "{tmp}/r"], "argument --max-steps: must be an integer >= 1; got 0"),
    ("predict with NaN weights", ["predict", "{nan_model}", "{image}"], "gives NaN or infinite outputs for 1 of 1 image(s)"),
    ("eval with NaN weights", ["eval", "{nan_model}", "--dataset", "digits"], "gives NaN or infinite outputs"),
    ("predict on a folder", ["predict", "{vit_run}", "{tmp}/empty"], "is a folder, not an image file"),
    ("eval of a save_pretrained folder without class names", ["eval", "{bare_model}"], "records no class names and no mean/std, which evaluating needs"),
    ("eval of a save_pretrained folder without a data set", ["eval", "{nan_model}"], "does not say which data set it was trained on; pass --dataset"),
    ("explain with --top-k 0", ["explain", "{vit_run}", "{image}", "--top-k", "0", "--out", "{tmp}/e.png"], "--top-k must be >= 1; got 0"),
    ("explain --out that is not a PNG", ["explain", "{vit_run}", "{image}", "--out", "{tmp}/e.jpg"], "the figure is written as PNG; give a file name ending in .png"),
    ("explain a folder", ["explain", "{vit_run}", "{tmp}/empty", "--out", "{tmp}/e.png"], "is a folder, not an image file"),
    ("translate with --alpha nan", ["translate", "{s2s_run}", "1 2", "--alpha", "nan"], "argument --alpha: must be a finite number; got 'nan'"),
    ("translate --show-attention to a folder", ["translate", "{s2s_run}", "1 2", "--show-attention", "{tmp}/adir/"], "is a folder; give the PNG file to write"),
    ("translate --file a folder", ["translate", "{s2s_run}", "--file", "{tmp}/empty"], "is a folder; give a text file"),
    ("translate a file that is UTF-16", ["translate", "{s2s_run}", "--file", "{utf16}"], "starts with a UTF-16 byte-order mark, so the file is likely UTF-16"),
    ("translate a sentence with U+202E", ["translate", "{s2s_run}", "1 \u202e2"], "U+202E (RIGHT-TO-LEFT OVERRIDE) at character 3"),
    ("translate a sentence with a NUL", ["translate", "{s2s_run}", "1 \x002"], "U+0000 (a control character) at character 3"),
    ("translate a Latin-1 argument", ["translate", "{s2s_run}", "1 \udce9 2"], "the sentence is not valid UTF-8: byte 0xe9 at character 3"),
    ("seq2seq: --device cuda", ["seq2seq", "train", "--task", "copy", "--device", "cuda", "--out", "{tmp}/s"], "the seq2seq engine runs on the CPU; --device cuda is not supported yet"),
    ("predict --on-error skip with no readable image", ["predict", "{vit_run}", "{garbage}", "{tmp}/nope.png", "--on-error", "skip"], "none of the 2 image file(s) could be read; the first: "),
    # the run lifecycle: numbers checked up front, resume that would do nothing or change the recipe
    ("infinite learning rate", ["train", "--recipe", "digits", "--lr", "inf", "--out", "{tmp}/r"], "lr must be a finite number > 0; got inf"),
    ("seq2seq: NaN learning rate", ["seq2seq", "train", "--task", "copy", "--lr", "nan", "--out", "{tmp}/s"], "lr must be a finite number > 0; got nan"),
    ("--resume with no epochs left", ["train", "--recipe", "digits", "--epochs", "1", "--resume", "--out", "{vit_run}"], "has already trained 1 epoch(s), so --epochs 1 (epochs=1) leaves nothing to train"),
    ("seq2seq: --resume with no epochs left", ["seq2seq", "train", "--task", "copy", "--epochs", "1", "--resume", "--out", "{s2s_run}"], "has already trained 1 epoch(s), so --epochs 1 (epochs=1) leaves nothing to train"),
    ("--resume with another learning rate", ["train", "--recipe", "digits", "--lr", "0.5", "--resume", "--out", "{vit_run}"], "with a changed recipe (lr: the run has 0.003, given 0.5)"),
    ("seq2seq: --resume with another learning rate", ["seq2seq", "train", "--task", "copy", "--epochs", "2", "--lr", "0.5", "--resume", "--out", "{s2s_run}"], "with a changed training config (lr: the run has 0.001, given 0.5)"),
    # the Transformer and subword vocabularies
    ("translate a sentence longer than the Transformer's position table", ["translate", "{s2s_tf}", "{long_sentence}"], "has 200 tokens, more than this model's maximum of 31 (its position table"),
    ("seq2seq: --vocab-size below the alphabet", ["seq2seq", "train", "--task", "copy", "--vocab", "bpe", "--vocab-size", "8", "--out", "{tmp}/s"], "the training text has 11 distinct characters, so a bpe vocabulary needs at least 15 entries"),
    ("seq2seq: --vocab-size 0", ["seq2seq", "train", "--task", "copy", "--vocab", "bpe", "--vocab-size", "0", "--out", "{tmp}/s"], "vocab_size must hold the 4 specials and at least one piece; got 0"),
    ("seq2seq: --joint-vocab with the word vocabulary", ["seq2seq", "train", "--task", "copy", "--joint-vocab", "--out", "{tmp}/s"], "--joint-vocab and --subword-model are for subword vocabularies"),
    ("seq2seq: --resume switching words to subwords", ["seq2seq", "train", "--task", "copy", "--epochs", "2", "--vocab", "bpe", "--resume", "--out", "{s2s_run}"], "with a changed training config (vocab: the run has 'word', given 'bpe')"),
    ("seq2seq: --subword-model that is not a tokenizers file", ["seq2seq", "train", "--task", "copy", "--vocab", "bpe", "--subword-model", "{garbage}", "--out", "{tmp}/s"], "is not a tokenizers JSON file"),
    ("seq2seq: an RNN option with --arch transformer", ["seq2seq", "train", "--task", "copy", "--arch", "transformer", "--hidden-dim", "64", "--out", "{tmp}/s"], "--hidden-dim is not an option of --arch transformer"),
    ("seq2seq: --schedule inverse_sqrt without --warmup", ["seq2seq", "train", "--task", "copy", "--schedule", "inverse_sqrt", "--out", "{tmp}/s"], "the inverse_sqrt schedule peaks after its warmup: give --warmup N"),
]  # fmt: skip


def _make_inputs(tmp: Path) -> dict[str, str]:
    """The files and trained runs the cases refer to."""
    from PIL import Image

    (tmp / "empty").mkdir()
    (tmp / "truncated").mkdir()
    for name, size in [("train-images-idx3-ubyte.gz", 5000), ("train-labels-idx1-ubyte.gz", 0),
                       ("t10k-images-idx3-ubyte.gz", 0), ("t10k-labels-idx1-ubyte.gz", 0)]:  # fmt: skip
        (tmp / "truncated" / name).write_bytes(gzip.compress(b"\0\0\x08\x03" + bytes(size))[:40])
    for name, n in (("cat", 4), ("dog", 1)):
        (tmp / "one_dog" / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(tmp / "one_dog" / name / f"{i}.png")
    (tmp / "garbage.bin").write_bytes(b"\x89not an image nor a checkpoint" * 10)
    Image.new("L", (20, 12), 128).save(tmp / "image.png")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp / "evil.pth").write_bytes(pickle.dumps({"weights": Evil()}))
    (tmp / "latin1.txt").write_bytes("1 2\n1 é 2\n".encode("latin-1"))
    vit_run, s2s_run, s2s_plain = tmp / "vit", tmp / "s2s", tmp / "s2s_plain"
    quiet = ["--no-progress"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        # a plain ViT (the digits recipe trains a CCT), which every converter can hold
        assert main(["train", "--recipe", "digits", "--model", "vit_digits_patch2_8", "--epochs",
                     "1", "--max-steps", "2", "--out", str(vit_run), *quiet]) == 0  # fmt: skip
        for out, attention in [(s2s_run, "concat"), (s2s_plain, "none")]:
            assert main(["seq2seq", "train", "--task", "copy", "--attention", attention,
                         "--model", f"seq2seq_tiny_{'plain' if attention == 'none' else 'attn'}",
                         "--epochs", "1", "--train-size", "64", "--synthetic-max-length", "5",
                         "--max-len", "12", "--out", str(out), *quiet]) == 0  # fmt: skip
        assert main(["seq2seq", "train", "--task", "copy", "--arch", "transformer", "--model",
                     "transformer_tiny", "--vocab", "bpe", "--vocab-size", "20", "--joint-vocab",
                     "--epochs", "1", "--train-size", "64", "--synthetic-max-length", "5",
                     "--max-len", "12", "--out", str(tmp / "s2s_tf"), *quiet]) == 0  # fmt: skip
    _make_model_inputs(tmp, vit_run)
    (tmp / "utf16.txt").write_bytes("1 2\n".encode("utf-16"))
    return {
        "int32": str(tmp / "int32.safetensors"), "nan_model": str(tmp / "nan_model"),
        "bare_model": str(tmp / "bare_model"), "utf16": str(tmp / "utf16.txt"),
        "tmp": str(tmp), "garbage": str(tmp / "garbage.bin"), "image": str(tmp / "image.png"),
        "evil": str(tmp / "evil.pth"), "latin1": str(tmp / "latin1.txt"),
        "vit_run": str(vit_run), "s2s_run": str(s2s_run), "s2s_plain": str(s2s_plain),
        "s2s_tf": str(tmp / "s2s_tf"),
        "long_sentence": " ".join(["1"] * 200),
    }  # fmt: skip


def _make_model_inputs(tmp: Path, vit_run: Path) -> None:
    """Weights with integer tensors, a save_pretrained folder with NaN weights, one without
    class names or mean/std."""
    from safetensors.torch import save_file

    from keymodels.convert import from_keymodels, load
    from keymodels.hub import save_pretrained

    model, report = load(vit_run, "keymodels")
    ints = {k: v.to(torch.int32).contiguous() for k, v in from_keymodels(model, "timm").items()}
    save_file(ints, str(tmp / "int32.safetensors"))
    save_pretrained(model, tmp / "bare_model")
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    save_pretrained(model, tmp / "nan_model", report.class_names, report.preprocessing)


def run_case(argv: list[str], inputs: dict[str, str]) -> tuple[int, str]:
    """Run ``keymodels ARGV`` in this process; the exit code and what it wrote to stderr."""
    args = [a.format(**inputs) for a in argv]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
    return int(code), err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    return _make_inputs(tmp_path_factory.mktemp("bad_args"))


@pytest.mark.parametrize(("what", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_arguments_exit_2_with_one_line(inputs, what, argv, message):
    code, err = run_case(argv, inputs)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message.format(**inputs) in lines[0]
    assert "Traceback" not in err


def test_data_errors_write_nothing(inputs):
    for what in ("--train-subset above the training images",
                 "a validation share that leaves a class without training images",
                 "distillation for a model without a distillation token",
                 "a teacher of another input size", "a teacher folder without a trained run",
                 "test-time mirroring for a recipe that never mirrors"):  # fmt: skip
        argv = next(c[1] for c in CASES if c[0] == what)
        assert run_case(argv, inputs)[0] == 2
    assert not (Path(inputs["tmp"]) / "subset_run").exists()


def test_debug_adds_the_traceback(inputs):
    code, err = run_case(["--debug", "eval", "{garbage}"], inputs)
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("keymodels eval: error:")


def test_errors_doc_lists_every_case():
    doc = ERRORS_DOC.read_text(encoding="utf-8")
    missing = [what for what, _, _ in CASES if f"| {what} |" not in doc]
    assert not missing, f"the table of bad inputs in {ERRORS_DOC.relative_to(ROOT)} lacks {missing}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/errors.md)" in readme, "the README does not link to docs/errors.md"


def _code_span(text: str) -> str:
    """``text`` as inline code, with double backticks when it holds backticks itself."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        inputs = _make_inputs(Path(tmp))
        long_messages = []
        print("| what is wrong | command | what the user sees (stderr, exit code 2) |")
        print("| --- | --- | --- |")
        for what, argv, _ in CASES:
            code, err = run_case(argv, inputs)
            shown = f"{_code_span(err.strip().replace(tmp, '…'))} (exit {code})"
            if len(shown) > LONG:
                long_messages.append(f"- **{what}**: {shown}")
                shown = "[in full below](#long-messages)"
            cmd = " ".join(a if " " not in a else "'…'" for a in argv).replace("{tmp}/", "")
            cmd = cmd.replace("{", "").replace("}", "")
            cells = [what, f"`keymodels {cmd}`", shown]
            print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if long_messages:
            print("\n### Long messages\n")
            print("The messages too long for a cell of the table above, in full:\n")
            print("\n".join(long_messages))
