"""keymodels.distill: DeiT hard distillation, its teacher checks and its command-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import keymodels.train as train_module
from keymodels.checkpoint import load_checkpoint
from keymodels.cli import main
from keymodels.data import get_recipe
from keymodels.distill import Teacher, distillation_loss
from keymodels.errors import InvalidInputError
from keymodels.registry import create_model
from keymodels.train import train

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2}
STUDENT = "deit_fmnist_distilled_patch4_28"


def test_distillation_loss_by_hand() -> None:
    # Two classes, one image: CE(z, k) = log(e^z0 + e^z1) - z_k.
    cls_logits, dist_logits = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    loss = distillation_loss((cls_logits, dist_logits), torch.tensor([0]), torch.tensor([1]), 0.0)
    cls_ce = math.log(math.exp(2) + 1) - 2
    dist_ce = math.log(1 + math.exp(1)) - 1
    assert loss.item() == pytest.approx(0.5 * cls_ce + 0.5 * dist_ce, abs=1e-6)
    # Label smoothing applies to the true labels only, never to the teacher's.
    smoothed = distillation_loss(
        (cls_logits, dist_logits), torch.tensor([0]), torch.tensor([1]), 0.2
    )
    cls_smooth = 0.9 * cls_ce + 0.1 * (math.log(math.exp(2) + 1) - 0)
    assert smoothed.item() == pytest.approx(0.5 * cls_smooth + 0.5 * dist_ce, abs=1e-6)


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return torch.stack([x.flatten(1).mean(1), -x.flatten(1).mean(1)], dim=1)


def test_teacher_sees_its_own_normalization_and_stays_frozen() -> None:
    raw = torch.rand(3, 2, 4, 4)
    m_s, s_s, m_t, s_t = [0.2, 0.5], [0.3, 0.1], [0.4, 0.1], [0.2, 0.25]
    student_x = (raw - torch.tensor(m_s).view(1, 2, 1, 1)) / torch.tensor(s_s).view(1, 2, 1, 1)
    recorder = _Recorder()
    teacher = Teacher(recorder, m_s, s_s, m_t, s_t)
    teacher.train()  # a training loop's .train() must not switch the teacher out of eval
    labels = teacher(student_x)
    expected = (raw - torch.tensor(m_t).view(1, 2, 1, 1)) / torch.tensor(s_t).view(1, 2, 1, 1)
    torch.testing.assert_close(recorder.seen, expected)
    assert labels.dtype == torch.long and labels.shape == (3,)
    assert not recorder.training and not teacher.training


def tiny(**overrides):
    kw = dict(epochs=1, batch_size=64, lr=3e-3, warmup_epochs=0.0, augment={"crop_padding": 0, "mixup": 0.0},
              model_overrides=TINY)  # fmt: skip
    # the digits data with a tiny plain ViT (TINY), whatever model the digits recipe trains
    return get_recipe("digits", **{"model": "vit_digits_patch2_8", **kw, **overrides})


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    train(tiny(), out, max_steps=2, progress=False)
    return out


class _Always(nn.Module):
    """A teacher that calls every image class ``k``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((len(x),), self.k), 10).float()


def test_the_distillation_head_learns_what_the_teacher_says() -> None:
    # A teacher that always says "3" against true labels spread over ten classes: the
    # distillation head must come to say 3, the class head must not.
    torch.manual_seed(0)
    model = create_model(STUDENT, img_size=8, in_chans=1, patch_size=2, **TINY)
    model.set_distilled_training(True)
    images, labels = torch.randn(256, 1, 8, 8), torch.arange(256) % 10
    loader = DataLoader(TensorDataset(images, labels, torch.zeros(256, dtype=torch.long)), 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    recipe = tiny(model=STUDENT, label_smoothing=0.0)
    teacher = Teacher(_Always(3), [0.0], [1.0], [0.0], [1.0])
    for _ in range(3):
        train_module.train_one_epoch(
            model, loader, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False),
            recipe, device=torch.device("cpu"), progress=False, teacher=teacher,
        )  # fmt: skip
    model.train()
    cls_logits, dist_logits = model(images)
    assert (dist_logits.argmax(1) == 3).float().mean() > 0.95
    assert (cls_logits.argmax(1) == 3).float().mean() < 0.5


def test_a_distilled_run_goes_through_both_heads_and_records_its_teacher(
    teacher_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = train_module.distillation_loss

    def spy(logits, targets, teacher_labels, label_smoothing):
        calls.append((logits[0].shape, logits[1].shape, teacher_labels.shape))
        return real(logits, targets, teacher_labels, label_smoothing)

    monkeypatch.setattr(train_module, "distillation_loss", spy)
    recipe = tiny(model=STUDENT, img_size=8, teacher=str(teacher_run))
    result = train(recipe, tmp_path, max_steps=3, progress=False, precision="fp32")
    assert result.results["steps"] == 3
    assert calls == [((64, 10), (64, 10), (64,))] * 3
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["teacher"]["checkpoint"].startswith(str(teacher_run))
    assert load_checkpoint(tmp_path / "last.safetensors").meta["recipe"]["teacher"] == str(
        teacher_run
    )
    # At eval the model gives one logit vector, the mean of its two heads (as timm).
    assert result.model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_teacher_and_student_must_agree(teacher_run: Path, tmp_path: Path) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"distillation token; .vit_digits_patch2_8. has none.*deit_\*distilled\*",
    ):
        train(tiny(teacher=str(teacher_run)), tmp_path / "a", progress=False)
    with pytest.raises(InvalidInputError, match=r"1×8×8 images but the student 1×16×16"):
        train(tiny(model=STUDENT, img_size=16, teacher=str(teacher_run)), tmp_path / "b",
              progress=False)  # fmt: skip
    three = (torch.rand(60, 1, 8, 8), torch.arange(60) % 3)
    with pytest.raises(
        InvalidInputError, match=r"predicts 10 classes but the student's data has 3"
    ):
        train(tiny(model=STUDENT, img_size=8, teacher=str(teacher_run), batch_size=16),
              tmp_path / "c",
              data=(three, three), progress=False)  # fmt: skip
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing written


def test_cli_teacher_errors_exit_2_and_write_nothing(
    teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--recipe", "digits", "--epochs", "1", "--no-progress"]
    out = tmp_path / "student"
    assert main([*base, "--out", str(out), "--teacher", str(teacher_run)]) == 2
    assert "has none" in capsys.readouterr().err
    missing = tmp_path / "no_such_run"
    assert main([*base, "--out", str(out), "--model", STUDENT, "--teacher", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not out.exists()


def test_a_resume_must_have_the_teacher_it_started_with(tmp_path: Path) -> None:
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    train(tiny(), teacher, max_steps=1, progress=False)
    recipe = tiny(model=STUDENT, img_size=8, teacher=str(teacher), epochs=2)
    train(recipe, student, max_steps=1, progress=False, precision="fp32")
    train(tiny(seed=1), teacher, max_steps=1, progress=False, force=True)  # new weights
    with pytest.raises(InvalidInputError, match=r"is not the one .* started with"):
        train(recipe, student, resume=True, progress=False, precision="fp32")
