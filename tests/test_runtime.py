"""keymodels.runtime: precision chosen by measurement, bf16 close to fp32, the compiled fast path
and its fallbacks."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

import keymodels.runtime as runtime
from keymodels.cli import main
from keymodels.errors import InvalidInputError
from keymodels.registry import create_model, get_config, list_models
from keymodels.runtime import (
    Hardware,
    PrecisionChoice,
    autocast,
    choose_precision,
    choose_training_precision,
    optimize,
)

WITH_BF16 = Hardware("cpu", "test cpu", "AVX512", ("avx512_bf16",), bf16_native=True)
WITHOUT_BF16 = Hardware("cpu", "old cpu", "AVX2", ("avx2",), bf16_native=False)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own cache of choices (and of compiled graphs)."""
    monkeypatch.setenv("KEYMODELS_CACHE_DIR", str(tmp_path / "cache"))


def fake_timings(seconds: dict[str, float]):
    """``step_for`` and ``measure`` that report ``seconds`` per precision and count the calls."""
    measured: list[str] = []

    def step_for(precision):
        return lambda: precision

    def measure(step):
        precision = step()
        measured.append(precision)
        return seconds[precision]

    return step_for, measure, measured


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [({"fp32": 0.2, "bf16": 0.1}, "bf16"), ({"fp32": 0.1, "bf16": 0.25}, "fp32")],
)
def test_auto_picks_the_faster_and_records_the_timings(seconds, expected):
    step_for, measure, measured = fake_timings(seconds)
    choice = choose_precision("auto", step_for, measure=measure, hw=WITH_BF16)
    assert choice.precision == expected and choice.requested == "auto"
    assert choice.timings == seconds and sorted(measured) == ["bf16", "fp32"]
    assert choice.hardware["name"] == "test cpu"
    assert f"{seconds['fp32'] / seconds['bf16']:.2f}×" in choice.reason
    assert choice.summary().startswith(f"precision {expected} (auto: ")
    assert PrecisionChoice.from_dict(json.loads(json.dumps(choice.to_dict()))) == choice


def test_bf16_must_win_clearly_to_be_chosen():
    step_for, measure, _ = fake_timings({"fp32": 0.105, "bf16": 0.1})  # 1.05×: within noise
    choice = choose_precision("auto", step_for, measure=measure, hw=WITH_BF16)
    assert choice.precision == "fp32" and "needs ≥ 1.1×" in choice.reason


def test_explicit_precisions_are_taken_without_timing():
    step_for, measure, measured = fake_timings({"fp32": 1.0, "bf16": 0.1})
    assert choose_precision("fp32", step_for, measure=measure, hw=WITH_BF16).precision == "fp32"
    assert choose_precision("bf16", step_for, measure=measure, hw=WITH_BF16).precision == "bf16"
    assert measured == []


def test_without_bf16_units_auto_keeps_fp32_and_bf16_warns_with_the_slowdown(caplog):
    step_for, measure, measured = fake_timings({"fp32": 0.1, "bf16": 25.0})
    choice = choose_precision("auto", step_for, measure=measure, hw=WITHOUT_BF16)
    assert choice.precision == "fp32" and "no bf16 units" in choice.reason
    assert measured == []  # emulated bf16 can take minutes: not even timed
    with caplog.at_level(logging.WARNING, logger="keymodels.runtime"):
        choice = choose_precision("bf16", step_for, measure=measure, hw=WITHOUT_BF16)
    assert choice.precision == "bf16"
    assert "250.0× slower than fp32" in caplog.text and "running bf16 as asked" in caplog.text


def test_unknown_precision_is_a_clear_error(capsys):
    with pytest.raises(InvalidInputError, match=r"precision must be one of auto, fp32, bf16"):
        choose_precision("fp16", lambda p: lambda: None)
    with pytest.raises(InvalidInputError, match="precision must be one of"):
        optimize(nn.Linear(2, 2), precision="half")
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "run", "x.png", "--precision", "fp16"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fp16'" in err and "'auto', 'fp32', 'bf16'" in err


def test_hardware_reads_this_machine():
    hw = runtime.hardware("cpu")
    assert hw.device == "cpu" and hw.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert hw.bf16_native == any(f in hw.flags for f in runtime.BF16_CPU_FLAGS) or not hw.flags


def _with_random_head(model: nn.Module) -> nn.Module:
    # The registered ViTs start with a zero head (all logits equal): give them a real one.
    torch.manual_seed(0)
    if isinstance(getattr(model, "head", None), nn.Linear):
        nn.init.normal_(model.head.weight, std=1.0)
    return model.eval()


SMALL_VITS = [  # plain ViTs and the small-data families (conv stem, CCT, SPT/LSA, DeiT)
    n
    for pattern in ("vit_*", "cct_*", "deit_*")
    for n in list_models(pattern)
    if get_config(n).macs() < 2e8 and get_config(n).num_classes
]


@pytest.mark.parametrize("name", SMALL_VITS)
def test_bf16_logits_close_to_fp32_with_equal_top1(name):
    torch.manual_seed(0)
    model = _with_random_head(create_model(name))
    cfg = model.config
    x = torch.randn(8, cfg.in_chans, cfg.img_size, cfg.img_size)
    with torch.inference_mode():
        ref = model(x)
        with autocast("bf16"):
            low = model(x).float()
    error = (low - ref).abs().max()
    assert error <= 0.05 * ref.abs().max()
    # The same class wherever fp32's top two are further apart than bf16's error can bridge;
    # a near-tie may flip (8 random images once held one with a margin of 0.1 logits).
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * error
    assert clear.sum() >= 4
    assert torch.equal(low.argmax(1)[clear], ref.argmax(1)[clear])


@pytest.mark.parametrize("name", list_models("seq2seq_*small") + list_models("seq2seq_tiny_*"))
def test_bf16_seq2seq_log_probs_close_to_fp32(name):
    model = _with_random_head(create_model(name, src_vocab_size=30, tgt_vocab_size=30))
    src = torch.randint(4, 30, (4, 7))
    lengths = torch.tensor([7, 6, 3, 1])
    tgt = torch.randint(4, 30, (4, 5))
    with torch.inference_mode():
        ref, _ = model(src, lengths, tgt)
        with autocast("bf16"):
            low, _ = model(src, lengths, tgt)
        memory = model.encode(src, lengths)
        with autocast("bf16"):
            step, _, _ = model.decode_step(tgt[:, 0], model.init_state(memory), memory)
    assert step.dtype == torch.float32  # search sums log-probabilities over many steps
    ref_p, low_p = ref.float().softmax(-1), low.float().softmax(-1)
    assert (low_p - ref_p).abs().max() < 0.05
    assert (low_p.argmax(-1) == ref_p.argmax(-1)).float().mean() >= 0.95


@pytest.mark.parametrize("name", ["vit_digits_patch2_8", "vit_fmnist_convstem_patch4_28"])
def test_training_timing_leaves_no_trace(name):
    # The conv stem has BatchNorm: its running statistics must not learn the timing batches.
    model = _with_random_head(create_model(name, drop_path_rate=0.1))
    model.train()
    size = model.config.img_size
    x, y = torch.randn(16, 1, size, size) * 3 + 1, torch.randint(10, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()

    def loss_fn():
        return nn.functional.cross_entropy(model(x), y)

    choice = choose_training_precision("auto", model, loss_fn)
    assert choice.precision in ("fp32", "bf16") and model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # A resumed run keeps its choice under "auto" (exact resume), not under an explicit request.
    kept = choose_training_precision("auto", model, loss_fn, previous={**choice.to_dict(),
                                                                       "precision": "bf16"})  # fmt: skip
    assert kept.precision == "bf16" and "kept from the run's start" in kept.reason
    again = choose_training_precision("auto", model, loss_fn, previous=kept.to_dict())
    assert again.reason == kept.reason  # a second resume does not nest the reason
    assert (
        choose_training_precision("fp32", model, loss_fn, previous=kept.to_dict()).precision
        == "fp32"
    )


def test_auto_inference_choice_is_cached_between_processes(monkeypatch):
    model = _with_random_head(create_model("vit_digits_patch2_8"))
    x = torch.randn(4, 1, 8, 8)
    first = optimize(model, "auto", "off", x)
    calls = []
    monkeypatch.setattr(runtime, "choose_precision", lambda *a, **k: calls.append(1))
    second = optimize(model, "auto", "off", x)
    assert calls == [] and second.choice == first.choice
    assert (runtime.cache_dir() / "precision.json").is_file()


def test_fast_path_agrees_and_keeps_the_model_intact():
    # Seeded: a random model has near-tied logits, and with an unseeded body 1 in 64 inputs
    # sometimes flips in bf16 (98.4% agreement), which is the model's doing, not the fast path's.
    torch.manual_seed(0)
    model = _with_random_head(create_model("vit_digits_patch2_8"))
    x = torch.randn(64, 1, 8, 8)
    fast = optimize(model, "bf16", "off", x)
    assert fast.precision == "bf16" and fast.check.passed and fast.check.agreement >= 0.995
    with torch.inference_mode():
        assert fast(x).dtype == torch.float32
        assert (fast(x) - model(x)).abs().max() < 0.05 * model(x).abs().max()
    assert fast.state_dict().keys() == {f"model.{k}" for k in model.state_dict()}
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32
    logits, attentions = fast.run("forward_attention", x[:2])  # explicit path, in bf16
    assert attentions[0].dtype == torch.bfloat16 and logits.shape == (2, 10)
    # In eval mode, wrapper and model: evaluating through it restores eval, not training.
    from keymodels.runs import evaluate

    assert not fast.training and not model.training
    evaluate(fast, [(x, torch.zeros(64, dtype=torch.long), 0)], 10)
    assert not fast.training and not model.training


def test_a_fast_path_that_disagrees_falls_back_to_fp32(caplog):
    # bf16 rounds 1.001 to 1.0: the second logit's lead disappears and top-1 changes.
    model = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0], [1.001]]))
    x = torch.ones(4, 1)
    with caplog.at_level(logging.WARNING, logger="keymodels.runtime"):
        fast = optimize(model, "bf16", "off", x)
    assert not fast.check.passed and fast.check.agreement == 0.0
    assert fast.precision == "fp32" and fast.choice.precision == "fp32"
    assert "falling back to fp32" in caplog.text
    assert torch.equal(fast(x).argmax(1), torch.ones(4, dtype=torch.long))


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken(model):
        raise RuntimeError("no C++ compiler found\nlong traceback ...")

    monkeypatch.setattr(runtime, "compile_model", broken)
    model = _with_random_head(create_model("vit_digits_patch2_8"))
    x = torch.randn(4, 1, 8, 8)
    with caplog.at_level(logging.WARNING, logger="keymodels.runtime"):
        fast = optimize(model, "fp32", "on", x)
    assert fast.compiled is None
    assert "torch.compile failed (no C++ compiler found); running eagerly" in caplog.text
    with torch.inference_mode():
        assert torch.equal(fast(x), model(x))


def test_training_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken_compile(model):
        def fail(*args):
            raise RuntimeError("InductorError: no C++ compiler\ntraceback ...")

        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = create_model("vit_digits_patch2_8")
    x, y = torch.randn(4, 1, 8, 8), torch.randint(10, (4,))
    with caplog.at_level(logging.WARNING, logger="keymodels.runtime"):
        net = runtime.compile_or_eager(model, lambda m: nn.functional.cross_entropy(m(x), y))
    assert net is model and all(p.grad is None for p in model.parameters())
    assert "torch.compile failed (InductorError: no C++ compiler); training eagerly" in caplog.text


def test_auto_compiles_only_when_the_work_repays_it(monkeypatch):
    compiled = []
    monkeypatch.setattr(runtime, "compile_model", lambda m: compiled.append(m) or m)
    model = _with_random_head(create_model("vit_digits_patch2_8"))
    x = torch.randn(4, 1, 8, 8)
    optimize(model, "fp32", "auto", x, expected_items=100)
    assert compiled == []
    monkeypatch.setattr(runtime, "choose_precision", lambda *a, **k: PrecisionChoice(
        "fp32", "auto", "test", {"fp32": 1.0, "bf16": 2.0}))  # fmt: skip
    optimize(model, "auto", "auto", x, expected_items=10_000, cache=False)  # 2,500 s eagerly
    assert compiled == [model]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_digits_patch2_8", "cct_2_3x1_8"])
def test_compiled_path_equals_eager(name):
    model = _with_random_head(create_model(name))
    x = torch.randn(32, 1, 8, 8)
    fast = optimize(model, "fp32", "on", x)
    assert fast.compiled is not None and fast.check.passed
    with torch.inference_mode():
        assert (fast(x) - model(x)).abs().max() < 1e-4


def _layout_timings(cl_seconds: float, contiguous_seconds: float = 0.1):
    """``step_for`` and ``measure`` reporting seconds by the model's current memory format."""
    model = create_model("cct_4_3x2_28")
    # a 1-channel conv's weight is contiguous in both layouts: ask one with 64 input channels
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    measured = []

    def measure(step):
        nhwc = conv.weight.is_contiguous(memory_format=torch.channels_last)
        measured.append("channels_last" if nhwc else "contiguous")
        return cl_seconds if nhwc else contiguous_seconds

    return model, (lambda precision: lambda: None), measure, measured


@pytest.mark.parametrize(("cl_seconds", "expected"), [(0.05, True), (0.099, False), (0.2, False)])
def test_channels_last_is_taken_only_when_clearly_faster(cl_seconds, expected):
    model, step_for, measure, measured = _layout_timings(cl_seconds)
    start = PrecisionChoice("bf16", "auto", "measured", {"fp32": 0.2, "bf16": 0.1})
    choice = runtime.choose_channels_last(start, model, step_for, measure=measure)
    assert choice.channels_last is expected and measured == ["contiguous", "channels_last"]
    assert choice.timings == {
        **start.timings,
        "bf16 contiguous": 0.1,
        "bf16 channels_last": cl_seconds,
    }
    assert choice.summary().split(";")[0].endswith(", channels_last") is expected
    # the caller converts the model: timing leaves it as it was
    assert all(p.is_contiguous() for p in model.parameters())


def test_channels_last_is_not_timed_without_spatial_convolutions():
    # a ViT's patchify conv has kernel == stride (one matmul): the layout cannot matter much
    vit = create_model("vit_digits_patch2_8")
    assert not runtime.has_spatial_convs(vit) and runtime.has_spatial_convs(
        create_model("resnet10_28")
    )
    start = PrecisionChoice("fp32", "fp32", "as requested")
    never = lambda step: pytest.fail("timed a model without spatial convolutions")  # noqa: E731
    assert runtime.choose_channels_last(start, vit, lambda p: None, measure=never) == start
    model, step_for, _, _ = _layout_timings(0.01)
    assert runtime.choose_channels_last(start, model, step_for, "cuda", measure=never) == start


def test_only_auto_times_the_layout_and_a_resumed_run_keeps_it(monkeypatch):
    model, _, measure, measured = _layout_timings(0.01)
    choose = runtime.choose_channels_last
    monkeypatch.setattr(
        runtime, "choose_channels_last", lambda *a, **k: choose(*a, **{**k, "measure": measure})
    )
    x, y = torch.randn(4, 1, 28, 28), torch.randint(10, (4,))

    def loss_fn():
        return nn.functional.cross_entropy(model(x), y)

    # an explicit precision measures nothing: the same command gives the same bits
    explicit = choose_training_precision("fp32", model, loss_fn)
    assert measured == [] and not explicit.channels_last
    fresh = choose_training_precision("auto", model, loss_fn)
    assert measured == ["contiguous", "channels_last"] and fresh.channels_last
    kept = choose_training_precision("auto", model, loss_fn, previous=fresh.to_dict())
    assert len(measured) == 2 and kept.channels_last and kept.precision == fresh.precision
    # precision.json written before this field existed reads as the usual layout
    old = {k: v for k, v in fresh.to_dict().items() if k != "channels_last"}
    assert not PrecisionChoice.from_dict(old).channels_last
