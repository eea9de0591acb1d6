"""Tests of keymodels.explain: rollout against numpy and a hand-worked example, per-sample maps.

Also gradient-weighted rollout, head maps, pictures, and a trained model that must look where the class is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from keymodels import explain as ex
from keymodels.errors import InvalidInputError
from keymodels.vit import VisionTransformer, ViTConfig

# -- an independent numpy rollout ----------------------------------------------------------------


def np_discard(a: np.ndarray, ratio: float) -> np.ndarray:
    """Zero the lowest ``ratio`` of the off-diagonal entries of one [N, N] matrix."""
    a = a.copy()
    n = a.shape[0]
    off = [(i, j) for i in range(n) for j in range(n) if i != j]
    values = np.array([a[i, j] for i, j in off])
    for t in np.argsort(values, kind="stable")[: int(ratio * len(off))]:
        a[off[t]] = 0.0
    return a


def np_rollout_fused(fused: list[np.ndarray], query: np.ndarray) -> np.ndarray:
    """query · Â_L ⋯ Â_1 for one sample, building the full product R = Â_L ⋯ Â_1."""
    n = fused[0].shape[0]
    R = np.eye(n)
    for a in fused:
        a = a + np.eye(n)
        a = a / a.sum(axis=1, keepdims=True)
        R = a @ R
    return query @ R


def np_grad_rollout_fused(fused: list[np.ndarray], query: np.ndarray) -> np.ndarray:
    """query · R for one sample, R built as Chefer et al. 2021 do: R = I, then R ← R + Ā·R."""
    R = np.eye(fused[0].shape[0])
    for a in fused:
        R = R + a @ R
    return query @ R


def np_query(n: int, prefix: int, pool: str) -> np.ndarray:
    q = np.zeros(n)
    if pool == "token" and prefix:
        q[0] = 1.0
    else:
        q[prefix:] = 1.0 / (n - prefix)
    return q


def np_to_grid(r: np.ndarray, prefix: int, grid: tuple[int, int]) -> np.ndarray:
    p = r[prefix:]
    return (p / p.sum() if p.sum() > 0 else p).reshape(grid)


def np_rollout(attentions, fusion, discard, prefix, pool, grid) -> np.ndarray:
    weights = [w.double().numpy() for w in attentions]  # [B, H, N, N] each
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    maps = []
    for b in range(weights[0].shape[0]):
        fused = [np_discard(fuse(w[b], axis=0), discard) for w in weights]
        q = np_query(fused[0].shape[0], prefix, pool)
        maps.append(np_to_grid(np_rollout_fused(fused, q), prefix, grid))
    return np.stack(maps)


def toy_model(**overrides) -> VisionTransformer:
    """A 2-block ViT on 4×6 images, 2×2 patches: a 2×3 grid (non-square), weights that attend sharply."""
    config = dict(
        img_size=(4, 6), patch_size=2, in_chans=1, num_classes=3, embed_dim=16, depth=2, num_heads=2
    )
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**{**config, **overrides}))
    with torch.no_grad():
        for p in model.parameters():  # the default init attends almost uniformly
            p.normal_(0.0, 0.4)
    return model.eval()


# -- rollout -------------------------------------------------------------------------------------


def test_rollout_worked_by_hand():
    # A_1 = [[.5 .5 0] [0 .5 .5] [0 0 1]] -> Â_1 = (A_1 + I)/2 = [[.75 .25 0] [0 .75 .25] [0 0 1]]
    # A_2 = [[.2 .2 .6] [0 1 0] [0 0 1]]  -> Â_2 = [[.6 .1 .3] [0 1 0] [0 0 1]]
    # row 0 of Â_2 Â_1 = .6·[.75 .25 0] + .1·[0 .75 .25] + .3·[0 0 1] = [.45 .225 .325]
    # patches [.225 .325] / .55 = [9/22, 13/22]. (Â_1 Â_2 would give [13/22, 9/22]; no residual [2/9, 7/9].)
    a1 = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    a2 = torch.tensor([[0.2, 0.2, 0.6], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    maps = ex.rollout([a1[None, None], a2[None, None]], grid_size=(1, 2))
    torch.testing.assert_close(maps, torch.tensor([[[9 / 22, 13 / 22]]]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fusion", ex.HEAD_FUSIONS)
@pytest.mark.parametrize("discard", [0.0, 0.6])
def test_rollout_matches_numpy(fusion, discard):
    model = toy_model()
    images = torch.randn(3, 1, 4, 6)
    with torch.no_grad():
        _, attentions = model.forward_attention(images)
    got = ex.rollout(attentions, (2, 3), 1, "token", fusion, discard)
    want = np_rollout(attentions, fusion, discard, 1, "token", (2, 3))
    assert got.shape == (3, 2, 3)
    np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5)
    # explain() gives the same maps from the model directly
    e = ex.explain(model, images, "rollout", head_fusion=fusion, discard=discard)
    np.testing.assert_allclose(e.maps.double().numpy(), want, atol=1e-5)


@pytest.mark.parametrize(
    ("class_token", "global_pool", "reads"),
    [(True, "avg", "avg"), (False, "avg", "avg"), (False, "", "avg"), (True, "", "token")],
)
def test_rollout_reads_the_class_token_or_the_mean_of_the_patches(class_token, global_pool, reads):
    model = toy_model(class_token=class_token, global_pool=global_pool, num_classes=0)
    images = torch.randn(2, 1, 4, 6)
    with torch.no_grad():
        _, attentions = model.forward_attention(images)
    prefix = int(class_token)
    assert attentions[0].shape[-1] == prefix + 6
    want = np_rollout(attentions, "mean", 0.0, prefix, reads, (2, 3))
    got = ex.explain(model, images, "rollout").maps
    np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5)


def test_batch_gives_the_same_maps_as_each_image_alone():
    model = toy_model()
    images = torch.randn(4, 1, 4, 6) * torch.tensor([0.1, 1.0, 5.0, 20.0]).view(4, 1, 1, 1)
    for method, kwargs in [
        ("rollout", dict(head_fusion="max", discard=0.8)),
        ("rollout", dict(head_fusion="mean")),
        ("grad-rollout", dict(class_index=[0, 1, 2, 1])),
        ("heads", dict(layer=0, head=1)),
    ]:
        batch = ex.explain(model, images, method, **kwargs).maps
        for b in range(4):
            one = dict(kwargs)
            if "class_index" in one:
                one["class_index"] = one["class_index"][b]
            alone = ex.explain(model, images[b : b + 1], method, **one).maps
            torch.testing.assert_close(batch[b : b + 1], alone, atol=1e-5, rtol=1e-4)


def test_discard_is_per_sample_and_keeps_the_diagonal():
    torch.manual_seed(0)
    a = torch.rand(2, 5, 5)
    a[1] *= 1e-3  # a threshold over the whole batch would zero all of sample 1
    out = ex.discard_lowest(a, 0.5)
    k = int(0.5 * 20)
    for b in range(2):
        off = ~torch.eye(5, dtype=torch.bool)
        assert int((out[b][off] == 0).sum()) == k
        assert torch.equal(out[b].diagonal(), a[b].diagonal())
        kept = out[b][off][out[b][off] > 0]
        dropped = a[b][off][out[b][off] == 0]
        assert kept.min() >= dropped.max()
    with pytest.raises(InvalidInputError, match="discard"):
        ex.discard_lowest(a, 1.0)


def test_rows_of_the_residual_matrix_sum_to_one():
    a = torch.rand(3, 6, 6) * 3  # max fusion: rows sum to more than 1
    torch.testing.assert_close(ex.add_residual(a).sum(-1), torch.ones(3, 6))


def test_unknown_fusion_and_method_are_named():
    model = toy_model()
    with pytest.raises(InvalidInputError, match="head fusion 'median'"):
        ex.explain(model, torch.randn(1, 1, 4, 6), head_fusion="median")
    with pytest.raises(InvalidInputError, match="explanation method 'saliency'"):
        ex.explain(model, torch.randn(1, 1, 4, 6), "saliency")


def test_plain_forward_stays_fused_and_explain_gives_its_logits(monkeypatch):
    import keymodels.attention as attention

    calls = []
    fused = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting)
    model = toy_model()
    images = torch.randn(2, 1, 4, 6)
    with torch.no_grad():
        logits = model(images)
    assert len(calls) == 2  # one fused call per block
    e = ex.explain(model, images)
    assert len(calls) == 2  # the explicit path, which returns the weights
    torch.testing.assert_close(e.logits, logits, atol=1e-5, rtol=1e-5)


def test_explain_restores_training_mode():
    model = toy_model().train()
    ex.explain(model, torch.randn(1, 1, 4, 6))
    ex.explain(model, torch.randn(1, 1, 4, 6), "grad-rollout")
    assert model.training


# -- gradient-weighted rollout -------------------------------------------------------------------


def test_grad_rollout_matches_numpy_on_autograd_gradients():
    model = toy_model()
    with torch.no_grad():  # gradients of O(1), so that the two rules below differ clearly
        model.head.weight.mul_(100.0)
    images = torch.randn(2, 1, 4, 6)
    e = ex.explain(model, images, "grad-rollout", class_index=[2, 0])
    assert e.class_index.tolist() == [2, 0]
    for b, k in enumerate([2, 0]):
        x = images[b : b + 1]
        logits, attentions = model.forward_attention(x.requires_grad_(True))
        grads = torch.autograd.grad(logits[0, k], attentions)
        fused = [
            np.maximum(g[0].double().numpy() * a[0].detach().double().numpy(), 0).mean(axis=0)
            for g, a in zip(grads, attentions)
        ]
        want = np_to_grid(np_grad_rollout_fused(fused, np_query(7, 1, "token")), 1, (2, 3))
        np.testing.assert_allclose(e.maps[b].double().numpy(), want, atol=1e-5)
        # Re-normalising the rows of I + Ā (plain rollout's rule) is not the paper's rule.
        renormalised = np_to_grid(np_rollout_fused(fused, np_query(7, 1, "token")), 1, (2, 3))
        assert b == 1 or np.abs(want - renormalised).max() > 1e-3  # 100 × the tolerance
    # Sample 0 gets a map; for sample 1 no attention raises class 0 in any block's class-token
    # row (the patch rows of the last block never reach the head), so its map is all zeros.
    assert e.maps[0].sum() == pytest.approx(1.0) and e.maps[1].abs().sum() == 0


def test_grad_rollout_accumulates_relevance_without_renormalising_worked_by_hand():
    # Tokens [cls, p1, p2]. Block 1: p2 takes relevance 3 from p1, cls 0.5 from p1.
    # Block 2: cls takes relevance 2 from p2.
    a1 = torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    a2 = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # R = (I + Ā_2)(I + Ā_1); its cls row: [1, 0, 2] + [1, 0, 2]·Ā_1 = [1, 0.5 + 6, 2].
    cls_row = ex.accumulate([a1[None], a2[None]], torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(cls_row, torch.tensor([[1.0, 6.5, 2.0]]))
    # The map: the patches' share, [6.5, 2] / 8.5. Re-normalised rows would give [0.786, 0.214].
    torch.testing.assert_close(ex.to_grid(cls_row, 1, (1, 2)), torch.tensor([[[13 / 17, 4 / 17]]]))


def test_grad_rollout_explains_the_predicted_class_by_default_and_differs_per_class():
    model = toy_model()
    images = torch.randn(2, 1, 4, 6)
    e = ex.explain(model, images, "grad-rollout")
    assert torch.equal(e.class_index, e.logits.argmax(-1))
    maps = [ex.explain(model, images, "grad-rollout", class_index=k).maps for k in range(3)]
    assert not torch.allclose(maps[0], maps[1], atol=1e-3)
    with pytest.raises(InvalidInputError, match="class index 3 is out of range"):
        ex.explain(model, images, "grad-rollout", class_index=3)


def test_grad_rollout_needs_a_head():
    model = toy_model(num_classes=0)
    with pytest.raises(InvalidInputError, match="needs a classifier head"):
        ex.explain(model, torch.randn(1, 1, 4, 6), "grad-rollout")
    assert ex.explain(model, torch.randn(1, 1, 4, 6), "rollout").maps.shape == (1, 2, 3)


# -- raw head maps -------------------------------------------------------------------------------


def test_head_maps_are_the_class_token_rows():
    model = toy_model()
    images = torch.randn(2, 1, 4, 6)
    with torch.no_grad():
        _, attentions = model.forward_attention(images)
    maps = ex.head_maps(attentions, (2, 3), layer=-1, heads=[1, 0])
    assert maps.shape == (2, 2, 2, 3)
    torch.testing.assert_close(maps[:, 0], attentions[1][:, 1, 0, 1:].reshape(2, 2, 3))
    torch.testing.assert_close(maps[:, 1], attentions[1][:, 0, 0, 1:].reshape(2, 2, 3))
    e = ex.explain(model, images, "heads", layer=0, head=1)
    row = attentions[0][:, 1, 0, 1:]
    torch.testing.assert_close(e.maps, (row / row.sum(-1, keepdim=True)).reshape(2, 2, 3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(layer=2), "layer 2 is out of range: the model has 2 blocks"),
        (dict(layer=-3), "layer -3 is out of range"),
        (dict(head=2), "head 2 is out of range: the model has 2 heads"),
    ],
)
def test_head_maps_out_of_range(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        ex.explain(toy_model(), torch.randn(1, 1, 4, 6), "heads", **kwargs)


# -- pictures ------------------------------------------------------------------------------------


def test_upsample_non_square_grid():
    maps = torch.zeros(1, 2, 3)
    maps[0, 0, 2] = 1.0  # top-right patch
    up = ex.upsample(maps, (8, 12))
    assert up.shape == (1, 8, 12)
    r, c = divmod(int(up[0].argmax()), 12)
    assert r < 4 and c >= 8
    torch.testing.assert_close(
        ex.upsample(torch.full((1, 2, 3), 0.5), (5, 7)), torch.full((1, 5, 7), 0.5)
    )


def test_overlay():
    image = np.linspace(0, 1, 12).reshape(3, 4)
    heat = np.zeros((3, 4))
    heat[1, 2] = 2.0
    out = ex.overlay(image, heat, alpha=0.0)
    np.testing.assert_allclose(out, np.repeat(image[..., None], 3, axis=2))
    out = ex.overlay(image, heat, alpha=0.6)
    assert out.shape == (3, 4, 3) and out.min() >= 0 and out.max() <= 1
    assert not np.allclose(out[1, 2], out[0, 0])
    with pytest.raises(InvalidInputError, match="differ in size"):
        ex.overlay(image, np.zeros((2, 2)))


def test_top_predictions():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    top = ex.top_predictions(logits, 2, ["cat", "dog", "owl"])
    assert [n for n, _ in top[0]] == ["dog", "owl"] and top[1][0][0] == "cat"
    assert top[0][0][1] == pytest.approx(float(logits[0].softmax(0)[1]))
    assert ex.format_predictions(top[0]).startswith("dog 84% · owl 11%")


def test_save_explanations_grid(tmp_path):
    images = torch.rand(5, 3, 8, 12)
    maps = torch.rand(5, 2, 3)
    path = tmp_path / "new" / "folder" / "grid.png"
    written = ex.save_explanations(
        images, maps, path, titles=[f"img {i}" for i in range(5)], columns=3
    )
    assert written == path
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height  # 2 rows of 3 pairs
    before = path.read_bytes()
    with pytest.raises(ex.OutputExistsError, match="exists"):
        ex.save_explanations(images, maps, path)
    assert path.read_bytes() == before
    ex.save_explanations(images[:1, :1], maps[:1], path, overwrite=True)
    assert path.read_bytes() != before
    with pytest.raises(InvalidInputError, match="one map each"):
        ex.save_explanations(images, maps[:2], tmp_path / "x.png")


def test_save_alignment_checks_shapes(tmp_path):
    with pytest.raises(InvalidInputError, match=r"\[T_out, N_src\] = \[2, 3\]"):
        ex.save_alignment(["a", "b", "c"], ["x", "y"], np.ones((3, 2)), tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_save_alignment_draws_greedy_and_beam_weights(tmp_path):
    source, target = ["ein", "hund", "läuft", "<eos>"], ["a", "dog", "runs", "<eos>"]
    weights = torch.eye(4) * 0.7 + 0.075
    path = ex.save_alignment(source, target, weights, tmp_path / "greedy.png", title="greedy")
    with Image.open(path) as im:
        assert im.format == "PNG"
    path = ex.save_alignment(source, target[:3], weights[None, :3].numpy(), tmp_path / "beam.png")
    assert path.is_file()
    with pytest.raises(ex.OutputExistsError):
        ex.save_alignment(source, target[:3], weights[:3], path)


def test_cjk_and_emoji_titles_draw_without_warnings(tmp_path, recwarn):
    """Titles come from file names and sentences: a font with the glyphs where one is installed,
    and without one no "Glyph … missing from font" warning per character."""
    grid = ex.save_explanations(
        torch.rand(1, 3, 8, 8), torch.rand(1, 2, 2), tmp_path / "grid.png",
        titles=["猫の写真 😀.png"], overlay_titles=["注意 🔥"], suptitle="설명",
    )  # fmt: skip
    alignment = ex.save_alignment(
        ["猫", "が", "走る", "🐈"], ["a", "cat", "runs"], np.full((3, 4), 0.25),
        tmp_path / "alignment.png", title="猫が走る 🐈",
    )  # fmt: skip
    for path in (grid, alignment):
        with Image.open(path) as im:
            assert im.format == "PNG"
    assert [str(w.message) for w in recwarn] == []


# -- a trained model looks where the class is ----------------------------------------------------

QUADRANT = (slice(8, 16), slice(0, 8))  # bottom-left 8×8 of a 16×16 image: patches [2:, :2]


def _bars() -> torch.Tensor:
    """Four 8×8 patterns, one per class: horizontal, vertical, diagonal, anti-diagonal bars."""
    p = torch.zeros(4, 8, 8)
    p[0, 3:5, :] = 1.0
    p[1, :, 3:5] = 1.0
    p[2] = ((torch.eye(8) + torch.eye(8).roll(1, 1)) > 0).float()
    p[3] = p[2].flip(1)
    return p


def _quadrant_data(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The class is the pattern in the bottom-left quadrant; the others hold random patterns, and noise."""
    bars = _bars()
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 1, 16, 16, generator=g)
    other = torch.randint(0, 4, (n, 3), generator=g)
    x[:, 0, QUADRANT[0], QUADRANT[1]] += bars[y]
    x[:, 0, :8, :8] += bars[other[:, 0]]
    x[:, 0, :8, 8:] += bars[other[:, 1]]
    x[:, 0, 8:, 8:] += bars[other[:, 2]]
    return x, y


@pytest.fixture
def one_thread():
    # A model this small trains fastest on one thread, and the same way on every machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_rollout_of_a_trained_vit_looks_at_the_quadrant_that_sets_the_class(one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    config = ViTConfig(
        img_size=16, patch_size=4, in_chans=1, num_classes=4, embed_dim=32, depth=2, num_heads=2,
        mlp_ratio=2.0,
    )  # fmt: skip
    model = VisionTransformer(config)
    test_x, test_y = _quadrant_data(256, g)

    def quadrant_mass(method: str) -> float:
        maps = ex.explain(
            model, test_x, method, class_index=test_y if method != "rollout" else None
        ).maps
        return float(maps[:, 2:, :2].sum(dim=(1, 2)).mean())

    untrained = quadrant_mass("rollout")
    assert untrained < 0.4  # the quadrant is a quarter of the image: ~25% before training

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(500):
        x, y = _quadrant_data(64, g)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(test_x).argmax(-1) == test_y).float().mean())
    assert accuracy > 0.85, f"the model did not learn the task (accuracy {accuracy:.2f})"
    rollout_mass, grad_mass = quadrant_mass("rollout"), quadrant_mass("grad-rollout")
    assert rollout_mass >= 0.6, f"rollout puts {rollout_mass:.0%} of its mass in the quadrant"
    assert grad_mass >= 0.6, f"grad-rollout puts {grad_mass:.0%} of its mass in the quadrant"
    # The bf16 fast path draws the same maps: Pearson r ≥ 0.99 with fp32 for every image.
    for method in ("rollout", "grad-rollout"):
        index = test_y if method != "rollout" else None
        maps = [
            ex.explain(model, test_x, method, class_index=index, precision=p).maps.flatten(1)
            for p in ("fp32", "bf16")
        ]
        a, b = (m - m.mean(1, keepdim=True) for m in maps)
        r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
        assert r.min() >= 0.99, f"{method}: bf16 maps correlate at r = {r.min():.3f} with fp32"


# -- small-data variants: what the head pools decides the row that is read -------------------------


def _np_maps(attentions, queries, prefix, grid):
    """Rollout with the given readout row per sample (mean head fusion, no discard)."""
    weights = [w.double().numpy() for w in attentions]
    maps = []
    for b in range(weights[0].shape[0]):
        fused = [w[b].mean(axis=0) for w in weights]
        maps.append(np_to_grid(np_rollout_fused(fused, queries[b]), prefix, grid))
    return np.stack(maps)


def test_seq_pool_rollout_weights_the_rows_by_the_pooling_softmax():
    model = toy_model(stem="cct", class_token=False, global_pool="seq", qkv_bias=False)
    images = torch.randn(2, 1, 4, 6)
    with torch.no_grad():
        _, attentions, readout = model.forward_attention(images, return_readout=True)
        tokens = model.forward_features(images)
        pool = model.attn_pool.attention_pool(tokens).squeeze(-1).softmax(-1)
    torch.testing.assert_close(readout, pool)
    assert not torch.allclose(readout, torch.full_like(readout, 1 / 6))  # not just the mean
    want = _np_maps(attentions, readout.double().numpy(), 0, (2, 3))
    for method in ("rollout", "heads"):
        got = ex.explain(model, images, method).maps
        assert got.shape == (2, 2, 3)
    got = ex.explain(model, images, "rollout").maps
    np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5)
    assert ex.explain(model, images, "grad-rollout").maps.shape == (2, 2, 3)
    with pytest.raises(ValueError, match="pass the model's pooling weights"):
        ex.rollout(attentions, (2, 3), 0, "seq")


def test_distilled_rollout_reads_the_mean_of_the_class_and_distillation_rows():
    model = toy_model(distilled=True)
    images = torch.randn(2, 1, 4, 6)
    with torch.no_grad():
        _, attentions = model.forward_attention(images)
    q = np.zeros(8)
    q[:2] = 0.5
    want = _np_maps(attentions, [q, q], 2, (2, 3))
    got = ex.explain(model, images, "rollout").maps
    np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5)


def test_cct_maps_use_the_tokenizers_grid():
    from keymodels.registry import create_model

    model = create_model("cct_2_3x1_8").eval()  # 8×8 image, one max-pool: a 4×4 grid
    e = ex.explain(model, torch.randn(1, 1, 8, 8), "rollout")
    assert e.maps.shape == (1, 4, 4)
    torch.testing.assert_close(e.maps.sum(dim=(1, 2)), torch.ones(1))


def test_lsa_model_rollout_works():
    model = toy_model(stem="spt", lsa=True)
    e = ex.explain(model, torch.randn(2, 1, 4, 6), "rollout")
    assert e.maps.shape == (2, 2, 3) and torch.isfinite(e.maps).all()


def test_a_model_without_attention_is_a_clear_error():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    for method in ex.METHODS:
        with pytest.raises(InvalidInputError, match="Sequential has no attention to explain"):
            ex.explain(cnn, torch.randn(1, 1, 8, 8), method)
