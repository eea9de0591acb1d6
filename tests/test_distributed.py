"""keymodels.distributed: two CPU processes under torchrun (gloo) end with identical weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

from keymodels.distributed import init_distributed

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    from safetensors.torch import save_file
    from keymodels.data import get_recipe
    from keymodels.train import train

    torch.set_num_threads(1)
    out = sys.argv[1]
    recipe = get_recipe(
        "digits", epochs=1, batch_size=32, lr=1e-2, warmup_epochs=0.1,
        model_overrides={"embed_dim": 16, "depth": 1, "num_heads": 2},
    )
    rank = os.environ["RANK"]
    if sys.argv[2] == "nan":
        # A loss that turns NaN on rank 1 only must stop both ranks at the same step (no hang).
        import keymodels.train as engine
        real, calls = engine.compute_loss, []
        def nan_on_rank1(logits, targets, smoothing):
            calls.append(1)
            loss = real(logits, targets, smoothing)
            return loss * float("nan") if rank == "1" and len(calls) == 2 else loss
        engine.compute_loss = nan_on_rank1
        try:
            train(recipe, out, device="cpu", precision="fp32", progress=False, max_steps=4)
        except engine.NonFiniteLossError as e:
            open(os.path.join(out + "-stopped" + rank), "w").write(str(e))
        sys.exit(0)
    if sys.argv[2] in ("full", "stop", "resume"):
        # Two epochs; "stop" sends SIGTERM to rank 1 alone after its 30th step (epoch 2).
        from keymodels.runguard import TrainingInterrupted
        recipe.epochs = 2
        if sys.argv[2] == "stop" and rank == "1":
            os.environ["KEYMODELS_CRASH_AT"] = "train_step:30:SIGTERM"
        try:
            result = train(recipe, out, device="cpu", precision="fp32", progress=False, resume=sys.argv[2] == "resume")
        except TrainingInterrupted as e:
            open(out + "-stopped" + rank, "w").write(str(e))
            sys.exit(0)
    else:
        # "auto" on every rank: rank 0's measured choice must hold for all (equal weights below)
        result = train(recipe, out, device="cpu", precision="auto", progress=False, max_steps=4)
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()},
              os.path.join(out, f"rank{rank}.safetensors"))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_without_torchrun(monkeypatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)


def _torchrun(tmp_path: Path, out: Path, mode: str) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), str(out),
        mode,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_processes_end_with_identical_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _torchrun(tmp_path, out, "train")
    w0, w1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # Training happened (4 steps moved the weights), and only rank 0 wrote the run files.
    from keymodels.runs import load_vit

    model, info = load_vit(out)
    assert info["epoch"] == 1
    assert w0["head.weight"].abs().sum() > 0  # the head starts at zero
    recipe_meta = (out / "recipe.json").read_text()
    assert '"world_size": 2' in recipe_meta
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2  # one epoch, logged once (by rank 0 only)
    for k, v in model.state_dict().items():
        assert torch.equal(v, w0[k]), k


def test_non_finite_loss_on_one_rank_stops_both(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _torchrun(tmp_path, out, "nan")  # a hang would end in the 300 s timeout
    for rank in (0, 1):
        assert "loss became nan at step 2" in Path(f"{out}-stopped{rank}").read_text()


def test_sigterm_on_one_rank_stops_both_at_one_step_and_resume_is_exact(tmp_path: Path) -> None:
    full, run = tmp_path / "full", tmp_path / "run"
    _torchrun(tmp_path, full, "full")
    _torchrun(tmp_path, run, "stop")  # a rank that stopped alone would hang the other: timeout
    messages = [Path(f"{run}-stopped{rank}").read_text() for rank in (0, 1)]
    assert messages[0] == messages[1] and "step 31 (epoch 2, batch 11/20)" in messages[0]
    _torchrun(tmp_path, run, "resume")
    for rank in (0, 1):
        a = load_file(full / f"rank{rank}.safetensors")
        b = load_file(run / f"rank{rank}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), rank
