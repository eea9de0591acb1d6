"""How to compute on this machine: fp32 or bf16, compiled or eager, chosen by measuring.

``choose_precision`` times a few warm steps of each candidate, as ``cudnn.benchmark`` does, and
keeps the fastest; ``optimize`` wraps a model for inference on the chosen path and checks it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InvalidInputError, reject_unknown_fields

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("auto", "on", "off")
BF16_MIN_SPEEDUP = 1.1  # "auto" takes bf16 only when it is at least this much faster
CHANNELS_LAST_MIN_SPEEDUP = 1.05  # a clear win over timing noise, or the usual layout stays
# CPU flags (Linux /proc/cpuinfo) that give bf16 arithmetic its own units: without them torch
# emulates bf16 through fp32 conversions, which can be far slower than fp32 itself.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# `compile="auto"` compiles for inference only when the eager work ahead is at least this long:
# a cold inductor compile costs ~15-35 s on a 2-core CPU, and the compiled graph saves ~20-50 %.
COMPILE_MIN_EAGER_SECONDS = 120.0


def check_precision(precision: str) -> str:
    """``precision`` itself if it is one of :data:`PRECISIONS`, else a clear error."""
    if precision not in PRECISIONS:
        raise InvalidInputError(
            f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}"
        )
    return precision


# ---------------------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Hardware:
    """What the device can do: ``bf16_native`` when bf16 has its own arithmetic units."""

    device: str
    name: str
    cpu_capability: str
    flags: tuple[str, ...]
    bf16_native: bool

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "flags": list(self.flags)}  # as JSON gives it back


def _cpuinfo() -> tuple[str, set[str]] | None:
    """The CPU's model name and flags from /proc/cpuinfo (None where there is none: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    name, flags = "cpu", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "cpu":
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name, flags


@functools.cache
def hardware(device: str = "cpu") -> Hardware:
    """The capabilities of ``device`` ("cpu" or "cuda[:i]"), read once per process."""
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        return Hardware(
            device="cuda",
            name=torch.cuda.get_device_name(index),
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
            flags=(),
            bf16_native=torch.cuda.is_bf16_supported(),
        )
    capability = torch.backends.cpu.get_cpu_capability()
    info = _cpuinfo()
    if info is None:  # no /proc/cpuinfo: ask oneDNN, which checks the same instructions
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return Hardware("cpu", "cpu", capability, (), native)
    name, all_flags = info
    flags = tuple(f for f in REPORTED_CPU_FLAGS if f in all_flags)
    native = any(f in flags for f in BF16_CPU_FLAGS)
    return Hardware("cpu", name, capability, flags, native)


def autocast(
    precision: str, device: str | torch.device = "cpu"
) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` ("fp32": a no-op, "bf16": bf16 matmuls/convs)."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ---------------------------------------------------------------------------- choosing


@dataclass
class PrecisionChoice:
    """The precision a job runs in, how it was chosen, and the timings it was chosen on.

    ``timings`` maps each measured candidate to its median seconds per step.
    """

    precision: str
    requested: str
    reason: str
    timings: dict[str, float] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = False  # the model's weights and inputs in NHWC (measured faster)

    def summary(self) -> str:
        """One line for the log: the choice, and the measured times when there are any."""
        text = f"precision {self.precision} ({self.requested}: {self.reason})"
        if self.channels_last:
            text += ", channels_last"
        if len(self.timings) > 1:
            times = ", ".join(f"{k} {v * 1e3:.1f} ms/step" for k, v in self.timings.items())
            text += f"; measured {times}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrecisionChoice:
        reject_unknown_fields("precision choice", d, (f.name for f in dataclasses.fields(cls)))
        return cls(**d)


def time_steps(step: Callable[[], Any], warmup: int = 2, repeats: int = 3) -> float:
    """Median wall seconds of ``step()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def choose_precision(
    requested: str,
    step_for: Callable[[str], Callable[[], Any]],
    device: str | torch.device = "cpu",
    measure: Callable[[Callable[[], Any]], float] = time_steps,
    hw: Hardware | None = None,
) -> PrecisionChoice:
    """Resolve ``requested`` ("auto", "fp32", "bf16") to the precision to run in.

    Args:
        requested: "fp32" and "bf16" are taken as given; "auto" times one step of each
            candidate (``step_for(precision)`` returns a callable doing one step) and keeps the
            fastest. Without bf16 units, "auto" keeps fp32 without timing bf16 (emulated bf16 can
            be hundreds of times slower), and "bf16" logs the measured slowdown, then runs.
        step_for: builds the step to time for a precision; it must leave no trace (no optimizer
            step, random state restored), so that timing never changes a run's results.
        device: where the job runs.
        measure: seconds per step of a callable (tests inject fake timings).
        hw: the device's capabilities (default: :func:`hardware` of ``device``).
    """
    check_precision(requested)
    device = str(torch.device(device))
    hw = hw or hardware(device)
    hw_dict = hw.to_dict()
    if requested == "fp32":
        return PrecisionChoice("fp32", requested, "as requested", hardware=hw_dict)
    if not hw.bf16_native:
        if requested == "auto":
            return PrecisionChoice(
                "fp32", requested, f"{hw.name} has no bf16 units ({'/'.join(BF16_CPU_FLAGS)})",
                hardware=hw_dict,
            )  # fmt: skip
        timings = {p: measure(step_for(p)) for p in ("fp32", "bf16")}
        log.warning(
            "bf16 requested on %s, which has no bf16 units: measured %.1f× slower than fp32; "
            "running bf16 as asked; --precision auto (precision='auto') would keep fp32",
            hw.name, timings["bf16"] / max(timings["fp32"], 1e-12),
        )  # fmt: skip
        return PrecisionChoice("bf16", requested, "as requested", timings, hw_dict)
    if requested == "bf16":
        return PrecisionChoice("bf16", requested, "as requested", hardware=hw_dict)
    timings = {p: measure(step_for(p)) for p in ("fp32", "bf16")}
    speedup = timings["fp32"] / max(timings["bf16"], 1e-12)
    # bf16 gives up precision, so it has to win clearly: a tie within timing noise keeps fp32.
    best = "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"
    if best == "bf16":
        reason = f"bf16 measured {speedup:.2f}× faster"
    else:
        reason = f"bf16 measured {speedup:.2f}× fp32's speed (needs ≥ {BF16_MIN_SPEEDUP}×)"
    return PrecisionChoice(best, requested, reason, timings, hw_dict)


@contextlib.contextmanager
def no_trace(model: nn.Module) -> Iterator[None]:
    """Run timing steps without leaving a trace: random state forked; gradients, modes and
    buffers restored (a BatchNorm's running statistics would learn the random timing batches)."""
    grads = {n: p.grad for n, p in model.named_parameters()}
    modes = {m: m.training for m in model.modules()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            for n, p in model.named_parameters():
                p.grad = grads[n]
            for m, mode in modes.items():
                m.training = mode
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(buffers[n])


def training_step_for(
    model: nn.Module, loss_fn: Callable[[], Tensor], device: str | torch.device = "cpu"
) -> Callable[[str], Callable[[], Any]]:
    """``step_for`` for :func:`choose_precision`: one forward and backward of ``loss_fn()``
    under the precision's autocast (``loss_fn`` runs the model on a fixed batch)."""

    def step_for(precision: str) -> Callable[[], Any]:
        def step() -> None:
            with autocast(precision, device):
                loss = loss_fn()
            loss.backward()
            model.zero_grad(set_to_none=True)

        return step

    return step_for


def _announce(choice: PrecisionChoice) -> None:
    # A choice made here is worth a line; one the user spelled out is not news.
    log.log(logging.INFO if choice.requested == "auto" else logging.DEBUG, "%s", choice.summary())


def choose_training_precision(
    requested: str,
    model: nn.Module,
    loss_fn: Callable[[], Tensor],
    device: str | torch.device = "cpu",
    previous: dict[str, Any] | None = None,
) -> PrecisionChoice:
    """The precision of a training run: ``previous`` (a resumed run's choice) is kept under
    "auto", so that resuming is exact; otherwise as :func:`choose_precision` with timed steps."""
    check_precision(requested)
    if requested == "auto" and previous:
        kept = PrecisionChoice.from_dict(previous)
        prefix = "kept from the run's start"
        reason = kept.reason if kept.reason.startswith(prefix) else f"{prefix} ({kept.reason})"
        choice = dataclasses.replace(kept, reason=reason)  # not nested again at every resume
    else:
        with no_trace(model):
            model.train()
            step_for = training_step_for(model, loss_fn, device)
            choice = choose_precision(requested, step_for, device)
            if requested == "auto":  # an explicit precision measures nothing: same run, same bits
                choice = choose_channels_last(choice, model, step_for, device)
    _announce(choice)
    return choice


def has_spatial_convs(model: nn.Module) -> bool:
    """Whether ``model`` has a 2-d convolution whose windows overlap (kernel > stride): a conv
    stem or a CNN, where the memory format matters; a ViT's patchify layer is one matmul."""
    return any(
        isinstance(m, nn.Conv2d) and any(k > s for k, s in zip(m.kernel_size, m.stride))
        for m in model.modules()
    )


def choose_channels_last(
    choice: PrecisionChoice,
    model: nn.Module,
    step_for: Callable[[str], Callable[[], Any]],
    device: str | torch.device = "cpu",
    measure: Callable[[Callable[[], Any]], float] = time_steps,
) -> PrecisionChoice:
    """``choice`` with ``channels_last`` set when a step in ``choice.precision`` measured at
    least :data:`CHANNELS_LAST_MIN_SPEEDUP` faster with the weights in NHWC (the model is left
    contiguous; the caller converts it). Timed on the CPU for models with spatial convolutions
    only: oneDNN's convolutions, their backward above all, can run much faster in NHWC."""
    if torch.device(device).type != "cpu" or not has_spatial_convs(model):
        return choice
    step = step_for(choice.precision)
    # The usual layout is timed again rather than taken from choose_precision's figure: the two
    # layouts timed back to back, in the same warm state, compare fairly (~5 steps more).
    timings = {f"{choice.precision} contiguous": measure(step)}
    model.to(memory_format=torch.channels_last)
    try:
        timings[f"{choice.precision} channels_last"] = measure(step)
    finally:
        model.to(memory_format=torch.contiguous_format)
    old, new = timings.values()
    faster = old / max(new, 1e-12) >= CHANNELS_LAST_MIN_SPEEDUP
    return dataclasses.replace(choice, channels_last=faster, timings={**choice.timings, **timings})


def compile_or_eager(model: nn.Module, trial_loss: Callable[[nn.Module], Tensor]) -> nn.Module:
    """``torch.compile(model)`` for training, tried on one step (``trial_loss(compiled)``, then
    backward) that leaves no trace; if compiling fails (no C++ compiler, an op inductor cannot
    lower), one warning and the eager model."""
    compiled = torch.compile(model)
    try:
        with no_trace(model):
            trial_loss(compiled).backward()
    except Exception as e:
        log.warning("torch.compile failed (%s); training eagerly", str(e).splitlines()[0][:200])
        return model
    return compiled


# ---------------------------------------------------------------------------- inference


def choose_inference_precision(
    requested: str,
    step: Callable[[], Any],
    key: str,
    device: str | torch.device = "cpu",
    cache: bool = True,
) -> PrecisionChoice:
    """:func:`choose_precision` for inference: ``step()`` (one typical batch) is timed under
    ``torch.inference_mode`` and each precision's autocast; an "auto" choice is cached under
    ``key`` (see :func:`choice_key`) when ``cache``."""

    def step_for(p: str) -> Callable[[], Any]:
        def timed() -> None:
            with torch.inference_mode(), autocast(p, device):
                step()

        return timed

    def choose() -> PrecisionChoice:
        return choose_precision(requested, step_for, device)

    choice = cached_choice(key, choose) if cache and requested == "auto" else choose()
    _announce(choice)
    return choice


class FastModel(nn.Module):
    """A model on its inference fast path: autocast to ``precision``, optionally compiled.

    ``forward`` returns fp32 outputs whatever the precision; other methods (for example
    ``forward_attention``) run eagerly under the same autocast through ``run``.
    """

    def __init__(self, model: nn.Module, precision: str, compiled: Any = None) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.set_compiled(compiled)
        self.device = next(model.parameters()).device.type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        fn = self.compiled if self.compiled is not None else self.model
        with autocast(self.precision, self.device):
            out = fn(*args, **kwargs)
        return out.float() if isinstance(out, Tensor) else out

    def set_compiled(self, compiled: Any) -> None:
        # A plain attribute, not a submodule: the compiled graph shares the model's weights and
        # must not add a second copy of their names to state_dict().
        object.__setattr__(self, "compiled", compiled)

    def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``model.<method>`` eagerly under this precision's autocast."""
        with autocast(self.precision, self.device):
            return getattr(self.model, method)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["model"], name)


def cache_dir() -> Path:
    """keymodels' cache: ``$KEYMODELS_CACHE_DIR``, else ``$XDG_CACHE_HOME/keymodels``."""
    env = os.environ.get("KEYMODELS_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keymodels"


def compile_cache_dir() -> Path:
    """Where inductor keeps compiled graphs between processes (``TORCHINDUCTOR_CACHE_DIR``)."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return Path(env) if env else cache_dir() / "inductor"


def choice_key(model: nn.Module, example: Tensor, device: str | torch.device) -> str:
    """What an inference precision choice depends on: the model's layout, the batch shape, the
    machine, torch and its thread count (as ``cudnn.benchmark`` keys on shapes)."""
    layout = [type(model).__name__] + [f"{n}{tuple(p.shape)}" for n, p in model.named_parameters()]
    parts = [
        hashlib.sha1("|".join(layout).encode()).hexdigest()[:16],
        "x".join(map(str, example.shape)),
        hardware(str(torch.device(device))).name,
        torch.__version__,
        str(torch.get_num_threads()),
    ]
    return "/".join(parts)


def cached_choice(key: str, choose: Callable[[], PrecisionChoice]) -> PrecisionChoice:
    """``choose()``, remembered in ``cache_dir()/precision.json`` under ``key`` so that a
    second process on the same machine, model and batch shape skips the timing."""
    path = cache_dir() / "precision.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    # absent, or written by another version of keymodels: choose again
    with contextlib.suppress(KeyError, TypeError, InvalidInputError):
        return PrecisionChoice.from_dict(cache[key])
    choice = choose()
    cache[key] = choice.to_dict()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(path)
    except OSError as e:  # a read-only home: the choice still holds for this process
        log.debug("could not cache the precision choice in %s: %s", path, e)
    return choice


def compile_model(model: nn.Module) -> Any:
    """``torch.compile`` with inductor freezing (weights folded into the graph: inference only),
    and a persistent cache so that a second process starts without compiling again."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
    return torch.compile(model, options={"freezing": True})


@dataclass
class SelfCheck:
    """Fast path against fp32 eager on one batch: top-1 agreement and largest probability gap."""

    agreement: float
    max_prob_diff: float
    passed: bool


def self_check(
    fast: Callable[[Tensor], Tensor],
    reference: Callable[[Tensor], Tensor],
    example: Tensor,
    min_agreement: float = 0.995,
    max_prob_diff: float = 0.1,
) -> SelfCheck:
    """Compare two classifiers on ``example``: the fast path passes when its top-1 agrees on
    ≥ ``min_agreement`` of the rows and no probability moves by more than ``max_prob_diff``."""
    with torch.inference_mode():
        p_fast = fast(example).float().softmax(-1)
        p_ref = reference(example).float().softmax(-1)
    agreement = (p_fast.argmax(-1) == p_ref.argmax(-1)).float().mean().item()
    diff = (p_fast - p_ref).abs().max().item()
    ok = agreement >= min_agreement and diff <= max_prob_diff and bool(torch.isfinite(p_fast).all())
    return SelfCheck(agreement, diff, ok)


def optimize(
    model: nn.Module,
    precision: str = "auto",
    compile: str | bool = "auto",
    example: Tensor | None = None,
    expected_items: int | None = None,
    timing_batch: int = 16,
    cache: bool = True,
) -> FastModel:
    """``model`` on its fastest inference path, with the same outputs within tolerance.

    Args:
        model: a model in eval mode (not changed: its weights stay fp32).
        precision: "auto" (time fp32 and bf16 on ``example``, keep the faster), "fp32", "bf16".
        compile: "on"/True, "off"/False, or "auto": compile only when ``expected_items`` items
            would take ≥ :data:`COMPILE_MIN_EAGER_SECONDS` eagerly, as a compile costs tens of
            seconds the first time (then it comes from the persistent cache).
        example: a typical input batch, used to time precisions (its first ``timing_batch``
            items) and to self-check the fast path against fp32 eager (top-1 agreement ≥ 99.5 %
            on its first 64 items); a failing check falls back to fp32 eager with a warning.
            Without it "auto" keeps fp32 and nothing is checked.
        expected_items: how many items (e.g. images) will go through the model.
        timing_batch: items of ``example`` to time precisions on.
        cache: remember the "auto" choice per model layout, batch shape and machine
            (:func:`cached_choice`), so that the next process does not time again.

    Returns:
        A :class:`FastModel`; ``.choice`` holds the :class:`PrecisionChoice`, ``.compiled`` the
        compiled callable (or None), ``.check`` the :class:`SelfCheck` (or None).
    """
    check_precision(precision)
    compile = {True: "on", False: "off"}.get(compile, compile)  # type: ignore[arg-type]
    if compile not in COMPILE_MODES:
        raise InvalidInputError(f"compile must be one of {COMPILE_MODES}; got {compile!r}")
    model.eval()
    device = next(model.parameters()).device
    if example is None and precision == "auto":
        choice = PrecisionChoice("fp32", "auto", "no example batch to time precisions on")
    else:
        timed = example[:timing_batch]
        key = choice_key(model, timed, device)
        choice = choose_inference_precision(precision, lambda: model(timed), key, device, cache)
    fast = FastModel(model, choice.precision).eval()  # a new Module is in training mode
    fast.choice, fast.check = choice, None
    if compile == "auto":
        per_batch = choice.timings.get(choice.precision)
        n = min(len(example), timing_batch) if example is not None else 0
        eager_s = per_batch / n * expected_items if per_batch and n and expected_items else 0.0
        compile = "on" if eager_s >= COMPILE_MIN_EAGER_SECONDS else "off"
    if compile == "on":
        try:
            compiled = compile_model(model)
            if example is not None:  # compile now, so that a failure falls back here
                with torch.inference_mode(), autocast(choice.precision, device):
                    compiled(example)
            fast.set_compiled(compiled)
        except Exception as e:  # no C++ compiler, an unsupported op: eager still works
            log.warning("torch.compile failed (%s); running eagerly", str(e).splitlines()[0][:200])
    if example is not None and (choice.precision != "fp32" or fast.compiled is not None):
        fast.check = self_check(fast, model, example[:64])
        if not fast.check.passed:
            log.warning(
                "the %s%s path disagrees with fp32 on the check batch (top-1 agreement %.1f%%, "
                "largest probability difference %.3f); falling back to fp32 eager",
                choice.precision, " compiled" if fast.compiled is not None else "",
                100 * fast.check.agreement, fast.check.max_prob_diff,
            )  # fmt: skip
            fast.precision = "fp32"
            fast.set_compiled(None)
            fast.choice = dataclasses.replace(
                choice, precision="fp32", reason="fast path failed its self-check against fp32"
            )
    return fast
