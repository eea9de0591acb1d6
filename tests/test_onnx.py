"""keymodels.onnx and ``keymodels export-onnx``: onnxruntime gives PyTorch's logits at any batch size."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from keymodels import create_model
from keymodels.cli import main
from keymodels.errors import InvalidInputError
from keymodels.hub import save_pretrained
from keymodels.onnx import OnnxError, check_onnx, export_onnx


def random_model() -> torch.nn.Module:
    model = create_model("vit_nano_patch4_32", depth=2)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def test_cli_export_onnx_dynamic_batch_matches_pytorch(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = random_model()
    save_pretrained(model, tmp_path / "m")
    assert main(["export-onnx", str(tmp_path / "m"), str(tmp_path / "vit.onnx"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["max_abs_diff"] <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m",
        "vit.onnx",
    ]  # one file, no temporaries

    graph = onnx.load(str(tmp_path / "vit.onnx")).graph
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # a named, dynamic batch axis
    # Independently of the CLI's own check: batches 1 and 3 (the export traced batch 2).
    assert check_onnx(model, tmp_path / "vit.onnx", batch_sizes=(1, 3)) <= 1e-4
    other = random_model()
    with torch.no_grad():
        other.head.bias.add_(1.0)
    assert check_onnx(other, tmp_path / "vit.onnx", batch_sizes=(1,)) > 0.5  # the check can fail


def test_failed_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vit.onnx").write_bytes(b"previous export")

    def broken_export(model, args, f, **kwargs) -> None:
        Path(f).write_bytes(b"half an ONNX file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(OnnxError, match="exporter crashed"):  # a permitted overwrite that fails
        export_onnx(random_model(), tmp_path / "vit.onnx", force=True)
    assert (tmp_path / "vit.onnx").read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["vit.onnx"]
    with pytest.raises(InvalidInputError, match=r"\.onnx"):
        export_onnx(random_model(), tmp_path / "vit.bin")


def test_export_names_the_batch_axis_and_records_preprocessing(tmp_path: Path) -> None:
    model = random_model()
    names = [f"c{i}" for i in range(model.num_classes)]
    prep = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    export_onnx(model, tmp_path / "vit.onnx", class_names=names, preprocessing=prep)
    proto = onnx.load(str(tmp_path / "vit.onnx"))
    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"  # not torch's "s77"
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta == {"input_size": [3, 32, 32], "class_names": names, **prep}
    # A run trained with tta: the metadata tells the caller to average with mirrors.
    export_onnx(model, tmp_path / "tta.onnx", preprocessing={**prep, "tta": True})
    meta = {
        p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "tta.onnx")).metadata_props
    }
    assert meta == {"input_size": [3, 32, 32], **prep, "tta": "mirror"}


@pytest.mark.parametrize(
    "name",
    [
        "vit_fmnist_convstem_patch4_28",
        "cct_2_3x1_8",
        "cct_3_3x4bn_28",
        "vit_fmnist_spt_lsa_patch4_28",
        "deit_fmnist_distilled_patch4_28",
    ],
)
def test_small_data_variants_export_with_equal_logits(tmp_path: Path, name: str) -> None:
    model = create_model(name, depth=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.eval()
    export_onnx(model, tmp_path / "m.onnx")
    assert check_onnx(model, tmp_path / "m.onnx", batch_sizes=(1, 3)) <= 1e-4
