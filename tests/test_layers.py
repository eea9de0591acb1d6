"""Tests of keymodels.layers: Mlp, DropPath, LayerScale and PatchEmbed against timm's and their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Mlp as TimmMlp
from timm.layers import PatchEmbed as TimmPatchEmbed

from keymodels.layers import DropPath, LayerScale, Mlp, PatchEmbed, to_2tuple


def test_mlp_is_fc_gelu_fc_and_matches_timm():
    torch.manual_seed(0)
    mlp = Mlp(6, 10).eval()
    ref = TimmMlp(6, 10).eval()
    ref.load_state_dict(mlp.state_dict(), strict=True)
    x = torch.randn(2, 3, 6)
    expected = F.linear(
        F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias
    )
    torch.testing.assert_close(mlp(x), expected)
    torch.testing.assert_close(mlp(x), ref(x))


def test_drop_path_is_identity_when_off():
    x = torch.randn(4, 3, 5)
    assert torch.equal(DropPath(0.5).eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    x = torch.ones(4000, 3, 2)
    y = layer(x)
    per_sample = y.flatten(1)
    # each sample is either dropped (all 0) or kept and scaled by 1 / keep (all 1 / 0.75)
    dropped = (per_sample == 0).all(1)
    kept = (per_sample == 1 / 0.75).all(1)
    assert torch.all(dropped | kept)
    assert dropped.float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert y.mean().item() == pytest.approx(1.0, abs=0.05)
    assert "drop_prob=0.25" in repr(layer)


def test_layer_scale():
    ls = LayerScale(4, init_values=0.1)
    assert torch.equal(ls.gamma.data, torch.full((4,), 0.1))
    with torch.no_grad():
        ls.gamma.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.ones(2, 3, 4)
    assert torch.equal(ls(x), torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(2, 3, 4))


def test_patch_embed_matches_timm_and_flattens_patches():
    torch.manual_seed(0)
    pe = PatchEmbed(img_size=(8, 12), patch_size=4, in_chans=2, embed_dim=5)
    ref = TimmPatchEmbed(img_size=(8, 12), patch_size=4, in_chans=2, embed_dim=5)
    ref.load_state_dict(pe.state_dict(), strict=True)
    x = torch.randn(3, 2, 8, 12)
    tokens = pe(x)
    assert pe.grid_size == (2, 3) and pe.num_patches == 6
    assert tokens.shape == (3, 6, 5)
    torch.testing.assert_close(tokens, ref(x))
    assert pe(x, flatten=False).shape == (3, 2, 3, 5)
    # a patch embedding is one Linear on each flattened 4×4 patch (row-major patch order)
    patch = x[:, :, 4:8, 4:8].reshape(3, -1)  # the patch at grid row 1, column 1
    expected = patch @ pe.proj.weight.reshape(5, -1).T + pe.proj.bias
    torch.testing.assert_close(tokens[:, 1 * 3 + 1], expected)


def test_patch_embed_errors():
    with pytest.raises(
        ValueError, match=r"image size \(30, 32\) is not divisible by patch size \(4, 4\)"
    ):
        PatchEmbed(img_size=(30, 32), patch_size=4)
    with pytest.raises(ValueError, match=r"an int or a \(height, width\) pair; got \(1, 2, 3\)"):
        to_2tuple((1, 2, 3))
    assert to_2tuple(3) == (3, 3) and to_2tuple([2, 5]) == (2, 5)


def test_small_data_stems_keep_the_patch_grid():
    from keymodels.layers import CCTTokenizer, ConvStem, ShiftedPatchTokenization

    x = torch.randn(2, 3, 32, 32)
    for stem in (ConvStem, CCTTokenizer, ShiftedPatchTokenization):
        embed = stem(32, 4, 3, 48)
        assert embed.grid_size == (8, 8)
        assert embed(x).shape == (2, 64, 48)
        assert embed(x, flatten=False).shape == (2, 8, 8, 48)


def test_conv_stems_need_a_power_of_two():
    from keymodels.layers import CCTTokenizer, ConvStem

    for stem in (ConvStem, CCTTokenizer):
        with pytest.raises(ValueError, match="power of two >= 2"):
            stem(36, 6, 3, 48)


def test_seq_pool_weights_sum_to_one():
    from keymodels.layers import SeqPool

    pool = SeqPool(8)
    x = torch.randn(3, 5, 8)
    w = pool.weights(x)
    torch.testing.assert_close(w.sum(-1), torch.ones(3))
    torch.testing.assert_close(pool(x), (w.unsqueeze(-1) * x).sum(1))
