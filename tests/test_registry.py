"""Tests of keymodels.registry: named configs, overrides, and the errors for unknown names and fields."""

from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from keymodels import registry
from keymodels.registry import create_model, get_config, list_models, register_model


@dataclasses.dataclass
class ToyConfig:
    width: int = 3
    depth: int = 1


class Toy(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.Sequential(
            *(nn.Linear(config.width, config.width) for _ in range(config.depth))
        )


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry, so the models registered here vanish after the test."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_register_create_and_override(private_registry):
    register_model("toy_small", ToyConfig(), Toy)
    register_model("toy_big", ToyConfig(width=8, depth=2), Toy)
    assert list_models("toy_*") == ["toy_big", "toy_small"]
    model = create_model("toy_big", depth=3)
    assert isinstance(model, Toy) and model.config == ToyConfig(width=8, depth=3)
    assert len(model.layers) == 3
    # overrides make a new config; the registered one is unchanged
    assert get_config("toy_big") == ToyConfig(width=8, depth=2)


def test_duplicate_name_is_an_error(private_registry):
    register_model("toy_small", ToyConfig(), Toy)
    with pytest.raises(ValueError, match="'toy_small' is already registered"):
        register_model("toy_small", ToyConfig(), Toy)


def test_list_models_patterns():
    every = list_models()
    assert every == sorted(every) and "vit_tiny_patch16_224" in every
    assert list_models("vit_*_patch16_224") == [
        n for n in every if n.startswith("vit_") and n.endswith("_patch16_224")
    ]
    assert list_models("no_such_*") == []


def test_unknown_name_lists_known_and_suggests_closest():
    with pytest.raises(ValueError) as info:
        create_model("vit_smal_patch16_224")
    message = str(info.value)
    assert "unknown model 'vit_smal_patch16_224'" in message
    assert "Did you mean 'vit_small_patch16_224'" in message
    assert "Known: " in message and "vit_base_patch16_224" in message


def test_unknown_override_field_names_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown 'vit_tiny_patch16_224' config field\(s\) \['depht'\]; valid fields: .*depth"
        r".*Did you mean 'depth'\?",
    ):
        get_config("vit_tiny_patch16_224", depht=3)


SMALL_DATA_MODELS = {
    # name: (stem, lsa, distilled, global_pool)
    "cct_7_3x1_32": ("cct", False, False, "seq"),
    "cct_2_3x2_32": ("cct", False, False, "seq"),
    "cct_4_3x2_28": ("cct", False, False, "seq"),
    "cct_7_3x2_28": ("cct", False, False, "seq"),
    "cct_2_3x1_8": ("cct", False, False, "seq"),
    "cct_3_3x3bn_28": ("cct", False, False, "seq"),
    "cct_3_3x4bn_28": ("cct", False, False, "seq"),
    "cct_3_3x4bn_d256_28": ("cct", False, False, "seq"),
    "vit_fmnist_convstem_patch4_28": ("conv", False, False, "avg"),
    "vit_fmnist_spt_lsa_patch4_28": ("spt", True, False, "avg"),
    "deit_fmnist_distilled_patch4_28": ("patch", False, True, "token"),
    "deit_tiny_distilled_patch16_224": ("patch", False, True, "token"),
}


def test_small_data_models_are_registered_with_their_features():
    assert set(SMALL_DATA_MODELS) <= set(list_models())
    for name, (stem, lsa, distilled, pool) in SMALL_DATA_MODELS.items():
        c = get_config(name)
        assert (c.stem, c.lsa, c.distilled, c.global_pool) == (stem, lsa, distilled, pool), name
    # The Fashion-MNIST ablation differs from vit_fmnist_patch4_28 only in the idea it adds.
    base = get_config("vit_fmnist_patch4_28")
    for name in ("vit_fmnist_convstem_patch4_28", "vit_fmnist_spt_lsa_patch4_28"):
        c = get_config(name)
        assert dataclasses.replace(c, stem="patch", lsa=False) == base
    deit = get_config("deit_fmnist_distilled_patch4_28")
    assert dataclasses.replace(deit, distilled=False, class_token=False, global_pool="avg") == base
    assert create_model("cct_2_3x1_8").config.grid_size == (4, 4)
