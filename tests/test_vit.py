"""Tests of keymodels.vit: every registered config, parity with timm, position-embedding resampling."""

from __future__ import annotations

import dataclasses
import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed as timm_resample
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from keymodels.errors import InvalidInputError
from keymodels.layers import resample_abs_pos_embed
from keymodels.registry import create_model, get_config, list_models
from keymodels.vit import VisionTransformer, ViTConfig

VIT_MODELS = list_models("vit_*")
# Every registered ViTConfig (plain ViTs and the small-data variants: conv stem, CCT, SPT/LSA, DeiT).
ALL_VIT_MODELS = [n for n in list_models() if isinstance(get_config(n), ViTConfig)]
# Those timm's plain VisionTransformer builds (the others: their own tests below).
TIMM_PLAIN = [
    n for n in ALL_VIT_MODELS if (c := get_config(n)).stem == "patch" and not (c.lsa or c.distilled)
]
BIG = 30e6  # above this many parameters a config is checked with depth=1 and a small image

# The published sizes (timm, and the ViT / DeiT papers: 5.7M, 22.1M, 86.6M, 304M).
PUBLISHED_PARAMS = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_large_patch16_224": 304_326_632,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timm_kwargs(config: ViTConfig) -> dict:
    """The timm ``VisionTransformer`` arguments of the same architecture."""
    return dict(
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        num_classes=config.num_classes,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        class_token=config.class_token,
        global_pool=config.global_pool,
        fc_norm=config.fc_norm,
        init_values=config.init_values,
        dynamic_img_size=config.dynamic_img_size,
    )


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb every parameter, so zero-initialised ones (the head, biases) matter too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def images(config: ViTConfig, batch: int = 2, seed: int = 0) -> torch.Tensor:
    h, w = (
        (config.img_size, config.img_size) if isinstance(config.img_size, int) else config.img_size
    )
    return torch.randn(batch, config.in_chans, h, w, generator=torch.Generator().manual_seed(seed))


def small_overrides(name: str) -> dict:
    """Overrides that make a big config cheap to build for real (one block, a 4×4 patch grid)."""
    config = get_config(name)
    with torch.device("meta"):
        params = n_params(create_model(name))
    if params <= BIG:
        return {}
    return {"depth": 1, "img_size": 4 * config.patch_size}


# -- every registered config -----------------------------------------------------------------


@pytest.mark.parametrize("name", TIMM_PLAIN)
def test_config_matches_timm_layout_and_param_count(name):
    config = get_config(name)
    with torch.device("meta"):
        ours = create_model(name)
        kwargs = timm_kwargs(config)
        ref = TimmViT(**kwargs)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    if config.pre_logits_size:  # timm's ViT has no pre-logits layer any more
        ours_shapes = {
            k: v for k, v in ours_shapes.items() if not k.startswith(("pre_logits", "head"))
        }
        ref_shapes = {k: v for k, v in ref_shapes.items() if not k.startswith("head")}
    assert ours_shapes == ref_shapes
    if name in PUBLISHED_PARAMS:
        assert n_params(ours) == PUBLISHED_PARAMS[name]


def test_published_configs_are_registered():
    assert set(PUBLISHED_PARAMS) <= set(VIT_MODELS)
    for size in ("tiny", "small", "base", "large", "huge"):
        assert list_models(f"vit_{size}_patch1*_224")
    for name in ("vit_small_patch32_224", "vit_base_patch32_224", "vit_large_patch32_224"):
        assert name in VIT_MODELS
    grey28 = [n for n in VIT_MODELS if get_config(n).img_size == 28 and get_config(n).in_chans == 1]
    colour32 = [
        n for n in VIT_MODELS if get_config(n).img_size == 32 and get_config(n).in_chans == 3
    ]
    assert grey28 and colour32


@pytest.mark.parametrize("name", ALL_VIT_MODELS)
def test_registered_config_forward_backward_round_trip(name, tmp_path):
    overrides = small_overrides(name)
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    config = model.config
    # The head starts at zero, as in the reference: without random weights there, nothing
    # upstream would get a gradient.
    nn.init.normal_(model.head.weight, std=0.02)
    if config.distilled:
        nn.init.normal_(model.head_dist.weight, std=0.02)
    x = images(config)
    B, (gh, gw) = x.shape[0], config.grid_size
    N, D, H = gh * gw + config.num_prefix_tokens, config.embed_dim, config.num_heads

    model.train()
    logits = model(x)
    assert logits.shape == (B, config.num_classes)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, f"parameters without gradient: {no_grad}"

    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (B, N, D)
        assert model.forward_head(features, pre_logits=True).shape == (B, model.num_features)
        logits = model.forward_head(features)
        torch.testing.assert_close(logits, model(x))
        attn_logits, attentions = model.forward_attention(x)
    torch.testing.assert_close(attn_logits, logits, atol=1e-4, rtol=1e-4)
    assert len(attentions) == config.depth
    for a in attentions:
        assert a.shape == (B, H, N, N)
        torch.testing.assert_close(a.sum(-1), torch.ones(B, H, N))
        if config.lsa:  # a token never attends to itself
            assert (a.diagonal(dim1=-2, dim2=-1) == 0).all()

    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = create_model(name, **overrides).eval()
    loaded.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        assert torch.equal(loaded(x), logits)


def test_attention_weights_stay_in_the_graph():
    torch.manual_seed(0)
    model = randomize(create_model("vit_nano_patch4_32")).eval()
    logits, attentions = model.forward_attention(torch.randn(1, 3, 32, 32))
    grads = torch.autograd.grad(logits[0, 3], attentions)
    assert all(g.shape == a.shape and g.abs().sum() > 0 for g, a in zip(grads, attentions))


def test_flops_match_a_counted_forward():
    # The explicit attention path runs plain matmuls, which the flop counter sees.
    for name, overrides in [
        ("vit_nano_patch4_28", {}),
        ("vit_tiny_patch4_32", {"depth": 2}),
        ("vit_small_patch16_224", {"depth": 1, "img_size": 64}),
        ("cct_2_3x2_32", {}),
        ("cct_2_3x1_8", {}),
        ("vit_fmnist_convstem_patch4_28", {"depth": 1}),
        ("vit_fmnist_spt_lsa_patch4_28", {"depth": 1}),
        ("deit_fmnist_distilled_patch4_28", {"depth": 1}),
    ]:
        config = get_config(name, **overrides)
        model = VisionTransformer(config).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.forward_attention(images(config, batch=1))
        assert counter.get_total_flops() == 2 * config.macs()


# -- parity with timm --------------------------------------------------------------------------


def _parity(name: str, image_size: tuple[int, int] | None = None, **kwargs) -> float:
    torch.manual_seed(0)
    ref = randomize(timm.create_model(name, pretrained=False, **kwargs)).eval()
    ours = create_model(name, **kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    config = ours.config
    if image_size is not None:
        config = dataclasses.replace(config, img_size=image_size)
    x = images(config)
    with torch.no_grad():
        expected = ref(x)
        got = ours(x)
        _, features_ref = expected, ref.forward_features(x)
        torch.testing.assert_close(ours.forward_features(x), features_ref, atol=1e-4, rtol=0)
    assert expected.abs().max() > 0.1  # the comparison is not between near-zero logits
    return (got - expected).abs().max().item()


def test_timm_parity_tiny_full():
    assert _parity("vit_tiny_patch16_224") <= 1e-4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 3},
        {"depth": 2, "class_token": False, "global_pool": "avg"},
        {"depth": 2, "init_values": 1e-1},
    ],
    ids=["token", "avg", "layerscale"],
)
def test_timm_parity_small(kwargs):
    assert _parity("vit_small_patch16_224", **kwargs) <= 1e-4


def test_timm_parity_tiny_without_class_token():
    assert _parity("vit_tiny_patch16_224", class_token=False, global_pool="avg") <= 1e-4


def test_timm_parity_dynamic_img_size_non_square():
    kwargs = {"depth": 2, "dynamic_img_size": True}
    assert _parity("vit_tiny_patch16_224", image_size=(160, 224), **kwargs) <= 1e-4
    assert _parity("vit_tiny_patch16_224", image_size=(96, 64), **kwargs) <= 1e-4


# -- position embeddings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "prefix"),
    [((14, 14), (10, 10), 1), ((14, 14), (14, 12), 1), ((6, 8), (9, 5), 0), ((7, 7), (7, 7), 1)],
)
def test_resample_matches_timm(old, new, prefix):
    torch.manual_seed(0)
    pe = torch.randn(1, prefix + old[0] * old[1], 32)
    got = resample_abs_pos_embed(pe, new, old, num_prefix_tokens=prefix)
    expected = timm_resample(pe, list(new), list(old), num_prefix_tokens=prefix)
    assert got.shape == (1, prefix + new[0] * new[1], 32)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got[:, :prefix], pe[:, :prefix], atol=0, rtol=0)


def test_resample_errors():
    pe = torch.randn(1, 1 + 12, 8)
    with pytest.raises(ValueError, match=r"cannot infer the old grid of 12.*old_size"):
        resample_abs_pos_embed(pe, (4, 4))
    with pytest.raises(ValueError, match=r"old grid \(3, 3\) does not hold the 12"):
        resample_abs_pos_embed(pe, (4, 4), (3, 3))


@pytest.mark.parametrize("img_size", [160, (224, 192)])
def test_loading_224_weights_into_another_size(img_size):
    torch.manual_seed(0)
    src = randomize(create_model("vit_tiny_patch16_224", depth=1))
    state = src.state_dict()
    model = create_model("vit_tiny_patch16_224", depth=1, img_size=img_size).eval()
    model.load_state_dict(state, strict=True)
    grid = model.grid_size
    expected_pe = timm_resample(state["pos_embed"], list(grid), [14, 14], num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed.data, expected_pe, atol=1e-6, rtol=1e-6)
    ref = TimmViT(**timm_kwargs(model.config)).eval()
    ref.load_state_dict({**state, "pos_embed": expected_pe})
    x = images(model.config)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-4, rtol=0)


def test_set_input_size_matches_timm():
    torch.manual_seed(0)
    ref = randomize(timm.create_model("vit_tiny_patch16_224", depth=1)).eval()
    model = create_model("vit_tiny_patch16_224", depth=1).eval()
    model.load_state_dict(ref.state_dict())
    ref.set_input_size(img_size=(160, 128))
    model.set_input_size((160, 128))
    assert model.grid_size == (10, 8) and model.config.img_size == (160, 128)
    x = torch.randn(2, 3, 160, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"expected 160×128 images, got 224×224"):
        model(torch.randn(1, 3, 224, 224))


# -- init --------------------------------------------------------------------------------------


def test_init_as_reference():
    torch.manual_seed(0)
    model = create_model("vit_small_patch16_224", depth=2)
    assert not model.head.weight.any() and not model.head.bias.any()
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.cls_token.std().item() == pytest.approx(1e-6, rel=0.2)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name != "head":
            assert m.weight.std().item() == pytest.approx(0.02, rel=0.05), name
            assert m.weight.abs().max() <= 2.0  # timm's trunc_normal_ cuts at ±2 (absolute)
            assert not m.bias.any(), name
        if isinstance(m, nn.LayerNorm):
            assert torch.all(m.weight == 1) and not m.bias.any()


def test_reset_classifier_and_drop_path_schedule():
    model = create_model("vit_nano_patch4_32", drop_path_rate=0.1)
    model.reset_classifier(7)
    assert model.head.out_features == 7 and not model.head.weight.any()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    model.reset_classifier(0, global_pool="avg")
    assert model.config.global_pool == "avg"
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, model.num_features)
    # linearly increasing stochastic depth, as timm: 0 for the first block, the rate for the last
    assert isinstance(model.blocks[0].drop_path1, nn.Identity)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert model.blocks[2].drop_path2.drop_prob == pytest.approx(0.04)


def test_config_dict_round_trip():
    config = get_config("vit_tiny_patch16_224", img_size=(224, 192), init_values=1e-5)
    d = config.to_dict()
    assert d["img_size"] == [224, 192]
    assert ViTConfig.from_dict(d) == config
    assert get_config("vit_tiny_patch16_224") != config  # the registered config is unchanged


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ViTConfig(img_size=225), r"img_size 225×225 is not divisible by patch_size 16"),
        (
            lambda: create_model("vit_tiny_patch16_224", img_size=(224, 200)),
            r"224×200 is not divisible by patch_size 16",
        ),
        (
            lambda: ViTConfig(embed_dim=100, num_heads=3),
            "embed_dim 100 is not divisible by num_heads 3",
        ),
        (
            lambda: create_model("vit_tiny_patch16"),
            r"unknown model 'vit_tiny_patch16'.*Did you mean 'vit_tiny_patch16_224'",
        ),
        (
            lambda: create_model("vit_tiny_patch16_224", dept=2),
            r"unknown 'vit_tiny_patch16_224' config field\(s\) \['dept'\].*Did you mean 'depth'",
        ),
        (
            lambda: VisionTransformer(ViTConfig(), dept=2),
            r"unknown ViT config field\(s\) \['dept'\]",
        ),
        (lambda: ViTConfig.from_dict({"dept": 2}), r"unknown ViT config field\(s\) \['dept'\]"),
        (lambda: ViTConfig(class_token=False), "global_pool='token' needs class_token=True"),
        (lambda: ViTConfig(global_pool="max"), r"global_pool must be one of .*got 'max'"),
        (lambda: ViTConfig(depth=0), "depth must be a positive integer; got 0"),
        (lambda: ViTConfig(drop_path_rate=1.0), r"drop_path_rate must be in \[0, 1\); got 1.0"),
    ],
)
def test_bad_config_is_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_images_are_a_clear_error():
    model = create_model("vit_nano_patch4_32").eval()
    with pytest.raises(
        ValueError, match=r"expected 3 image channels, got 1 \(shape \(2, 1, 32, 32\)\)"
    ):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"images must be \[B, C, H, W\]; got shape \(3, 32, 32\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(
        ValueError, match=r"expected 32×32 images, got 36×32.*dynamic_img_size=True"
    ):
        model(torch.randn(1, 3, 36, 32))
    dynamic = create_model("vit_nano_patch4_32", dynamic_img_size=True).eval()
    assert dynamic(torch.randn(1, 3, 36, 24)).shape == (1, 10)
    with pytest.raises(ValueError, match=r"34×32 pixels is not divisible by patch size 4×4.*32×32"):
        dynamic(torch.randn(1, 3, 34, 32))


# -- small-data variants: conv stem, CCT, SPT + LSA, DeiT distillation ---------------------------

# The CCT paper's CIFAR-10 models (Hassani et al. 2021, Table 2 / SHI-Labs/Compact-Transformers).
CCT_PAPER_PARAMS = {"cct_7_3x1_32": 3_760_139, "cct_2_3x2_32": 283_723}


@pytest.mark.parametrize(("name", "expected"), CCT_PAPER_PARAMS.items())
def test_cct_parameter_counts_match_the_paper(name, expected):
    with torch.device("meta"):
        model = create_model(name)
    assert n_params(model) == expected
    assert round(expected / 1e6, 2) in (3.76, 0.28)


def test_cct_tokenizer_layout_and_grid():
    model = create_model("cct_2_3x2_32")
    convs = [m for m in model.patch_embed.proj if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 64), (64, 128)]
    assert all(c.bias is None and c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.patch_embed.proj) == 2
    assert model.grid_size == (8, 8) and model.cls_token is None
    assert model.blocks[0].attn.qkv.bias is None
    assert create_model("cct_7_3x1_32", depth=1).grid_size == (16, 16)
    assert create_model("cct_4_3x2_28", depth=1).grid_size == (7, 7)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.patch_embed.proj)


def test_cct_tokenizer_stages_and_norm():
    model = create_model("cct_3_3x3bn_28")
    kinds = [type(m).__name__ for m in model.patch_embed.proj]
    conv = ["Conv2d", "BatchNorm2d", "ReLU"]
    assert kinds == [*conv, "MaxPool2d", *conv, *conv, "MaxPool2d"]
    convs = [m for m in model.patch_embed.proj if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 32), (32, 64), (64, 128)]
    assert model.grid_size == (7, 7)
    x = torch.randn(2, 1, 28, 28)
    assert model.patch_embed(x).shape == (2, 49, 128)
    # The recipe's: two convs at full resolution before the first pooling.
    kinds = [type(m).__name__ for m in create_model("cct_3_3x4bn_28").patch_embed.proj]
    assert kinds == [*conv, *conv, "MaxPool2d", *conv, *conv, "MaxPool2d"]
    # The wider variant tried for the long recipe: the same layout, ending at its D 256.
    wide = create_model("cct_3_3x4bn_d256_28")
    convs = [m for m in wide.patch_embed.proj if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (1, 64), (64, 64), (64, 128), (128, 256)
    ]  # fmt: skip
    assert wide.patch_embed(x).shape == (2, 49, 256)
    # Stages given explicitly as the paper's are the paper's tokenizer, weight for weight.
    paper = get_config("cct_4_3x2_28")
    same = dataclasses.replace(paper, tokenizer_stages=((64,), (128,)))
    torch.manual_seed(0)
    a = VisionTransformer(same).state_dict()
    torch.manual_seed(0)
    b = VisionTransformer(paper).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # A checkpoint's JSON config (lists) gives the same config back.
    config = get_config("cct_3_3x3bn_28")
    d = json.loads(json.dumps(config.to_dict()))
    assert ViTConfig.from_dict(d).tokenizer_stages == ((32,), (64, 128))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tokenizer_stages": ((32,),)}, r"needs 2 non-empty stage\(s\).*patch_size 4 = 2\*\*2"),
        ({"tokenizer_stages": ((32,), ())}, r"needs 2 non-empty stage"),
        ({"tokenizer_stages": ((32,), (64,))}, r"needs embed_dim \(128\) channels; got 64"),
        ({"tokenizer_stages": ((0,), (128,))}, r"positive integers"),
        ({"tokenizer_stages": (32, 128)}, r"one tuple of conv channels per max-pool stage"),
        ({"tokenizer_norm": True, "stem": "conv", "class_token": True, "global_pool": "token"},
         r"need stem='cct'; got stem='conv'"),
    ],
)  # fmt: skip
def test_cct_tokenizer_options_refuse_bad_values(overrides, message):
    with pytest.raises(InvalidInputError, match=message):
        get_config("cct_4_3x2_28", **overrides)


def test_seq_pool_is_the_softmax_weighted_sum():
    model = randomize(create_model("cct_2_3x1_8")).eval()
    x = images(model.config)
    with torch.no_grad():
        tokens = model.forward_features(x)
        w = model.attn_pool.attention_pool(tokens).softmax(dim=1)  # [B, N, 1]
        pooled = (w * tokens).sum(dim=1)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), pooled)
        torch.testing.assert_close(model.readout(tokens), w.squeeze(-1))


def test_conv_stem_layout():
    model = create_model("vit_fmnist_convstem_patch4_28")
    convs = [m for m in model.patch_embed.proj if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((3, 3), (2, 2))] * 2 + [((1, 1), (1, 1))]
    assert convs[-1].out_channels == 96 and convs[-2].out_channels == 96
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.patch_embed.proj) == 2
    assert model.patch_embed(torch.randn(1, 1, 28, 28)).shape == (1, 49, 96)


def test_spt_shifts_diagonally_with_zero_fill():
    model = create_model("vit_fmnist_spt_lsa_patch4_28")
    spt = model.patch_embed
    x = torch.arange(1.0, 1 + 28 * 28).reshape(1, 1, 28, 28)
    shifted = spt.shifted(x)  # [1, 5, 28, 28]: x, left-up, right-up, left-down, right-down
    assert shifted.shape == (1, 5, 28, 28) and torch.equal(shifted[:, 0], x[:, 0])
    s = 2  # half of the 4-pixel patch
    # left-up: the content moves down-right by s; the top rows and left columns are zero.
    assert torch.equal(shifted[0, 1, s:, s:], x[0, 0, :-s, :-s])
    assert (shifted[0, 1, :s] == 0).all() and (shifted[0, 1, :, :s] == 0).all()
    assert torch.equal(shifted[0, 4, :-s, :-s], x[0, 0, s:, s:])
    assert (shifted[0, 4, -s:] == 0).all()
    assert spt.norm.normalized_shape == (5 * 16,) and spt.linear.out_features == 96


def test_lsa_blocks_have_a_learned_temperature():
    model = create_model("vit_fmnist_spt_lsa_patch4_28")
    for block in model.blocks:
        torch.testing.assert_close(block.attn.temperature, torch.tensor([24**-0.5]))
    assert create_model("vit_fmnist_patch4_28").blocks[0].attn.temperature is None


def _timm_distilled(model: VisionTransformer):
    from timm.models.deit import VisionTransformerDistilled

    kwargs = timm_kwargs(model.config)
    ref = VisionTransformerDistilled(**kwargs)
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref


def test_deit_distilled_matches_timm():
    torch.manual_seed(0)
    model = randomize(create_model("deit_tiny_distilled_patch16_224", depth=2)).eval()
    ref = _timm_distilled(model).eval()
    names = {k: tuple(v.shape) for k, v in timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False, depth=2
    ).state_dict().items()}  # fmt: skip
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == names
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() <= 1e-4
    model.train(), ref.train()
    model.set_distilled_training(), ref.set_distilled_training()
    with torch.no_grad():
        (cls, dist), (rcls, rdist) = model(x), ref(x)
    assert (cls - rcls).abs().max() <= 1e-4 and (dist - rdist).abs().max() <= 1e-4
    assert not torch.allclose(cls, dist)


def test_deit_full_size_parameter_count():
    with torch.device("meta"):
        ours = create_model("deit_tiny_distilled_patch16_224")
        ref = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
    assert n_params(ours) == n_params(ref) == 5_910_800


def test_distilled_heads_average_unless_distilled_training():
    model = randomize(create_model("deit_fmnist_distilled_patch4_28"))
    assert model.num_prefix_tokens == 2 and not model.distilled_training
    x = images(model.config)
    model.train()
    assert model(x).shape == (2, 10)  # training, but distilled_training off: the mean
    model.set_distilled_training(True)
    cls, dist = model(x)
    assert cls.shape == dist.shape == (2, 10) and not torch.allclose(cls, dist)
    model.eval()
    with torch.no_grad():
        tokens = model.forward_features(x)
        torch.testing.assert_close(
            model(x), (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2
        )
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.head_dist.out_features == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"stem": "resnet"},
            r"stem must be one of \('patch', 'conv', 'cct', 'spt'\); got 'resnet'",
        ),
        ({"stem": "cct", "patch_size": 6, "img_size": 36}, "patch_size must be 2\\*\\*layers"),
        (
            {"stem": "cct", "patch_size": 4, "img_size": 30},
            "30×30 is not divisible by patch_size 4",
        ),
        ({"stem": "conv", "patch_size": 1, "img_size": 8}, "patch_size must be 2\\*\\*layers"),
        ({"global_pool": "seq"}, "global_pool='seq' pools all tokens itself"),
        ({"distilled": True, "class_token": False, "global_pool": "avg"}, "distilled=True"),
        ({"distilled": True, "global_pool": "avg"}, "distilled=True reads the class"),
        ({"distilled": True, "fc_norm": True}, "no pre-logits layer and no fc_norm"),
        (
            {"lsa": True, "img_size": 16, "class_token": False, "global_pool": "avg"},
            "lsa=True .* at least 2 tokens",
        ),
        ({"stem": "spt", "patch_size": 1, "img_size": 8}, "patch_size must be >= 2"),
    ],
)
def test_bad_small_data_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        ViTConfig(**overrides)


def test_small_data_configs_survive_save_and_from_pretrained(tmp_path):
    from keymodels import from_pretrained

    names = ("cct_2_3x1_8", "cct_3_3x4bn_28", "vit_fmnist_spt_lsa_patch4_28",
             "deit_fmnist_distilled_patch4_28")  # fmt: skip
    for name in names:
        model = randomize(create_model(name)).eval()
        with torch.no_grad():  # BatchNorm's running stats away from their start values (0, 1)
            for buffer in model.buffers():
                if buffer.is_floating_point():
                    buffer.add_(0.1 * torch.rand(buffer.shape))
        model.save_pretrained(str(tmp_path / name))
        loaded = from_pretrained(str(tmp_path / name)).eval()
        assert loaded.config.to_dict() == model.config.to_dict()
        a, b = model.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        x = images(model.config)
        with torch.no_grad():
            # Same bits, but the loaded weights sit at other, unaligned addresses (one buffer
            # from the file), where the CPU matmul kernels may sum in another order (3e-8 seen).
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)


def test_small_data_dynamic_img_size():
    for name in ("cct_2_3x1_8", "vit_fmnist_convstem_patch4_28", "vit_fmnist_spt_lsa_patch4_28"):
        model = create_model(name, dynamic_img_size=True).eval()
        c = model.config
        with torch.no_grad():
            assert model(torch.randn(1, c.in_chans, 2 * c.img_size, c.img_size)).shape == (1, 10)
