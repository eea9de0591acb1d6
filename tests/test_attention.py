"""Tests of keymodels.attention: the notes' formulas by hand, gradients, masking, parity with torch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import keymodels.attention as attention_module
from keymodels.attention import (
    EXPLICIT_CPU_MAX_PAIRS,
    SCORES,
    Attention,
    MultiHeadAttention,
    attend,
    attention_scores,
    masked_softmax,
)
from keymodels.errors import InvalidInputError

ALL_SCORES = (*SCORES, "additive")


def _params(score: str, dq: int, dk: int, a: int = 5, dtype=torch.float64) -> dict:
    g = torch.Generator().manual_seed(1)
    if score == "general":
        return {"W": torch.randn(dq, dk, generator=g, dtype=dtype)}
    if score in ("concat", "additive"):
        return {
            "W_s": torch.randn(a, dq, generator=g, dtype=dtype),
            "W_h": torch.randn(a, dk, generator=g, dtype=dtype),
            "v": torch.randn(a, generator=g, dtype=dtype),
        }
    return {}


# -- the notes' example, by hand -------------------------------------------------------------


def test_dot_attention_worked_by_hand():
    # s_t = [1, 0]; h_1 = [1, 0], h_2 = [0, 1], h_3 = [1, 1]
    s_t = torch.tensor([[1.0, 0.0]])
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    # e_t = [s_t·h_1, s_t·h_2, s_t·h_3] = [1, 0, 1]
    # α_t = [e, 1, e] / (2e + 1) with e = exp(1) = 2.718281828:  2e + 1 = 6.436563657
    #     = [0.4223188, 0.1553624, 0.4223188]
    # a_t = 0.4223188·[1,0] + 0.1553624·[0,1] + 0.4223188·[1,1] = [0.8446376, 0.5776812]
    e_t = attention_scores(s_t, h, "dot")
    assert torch.equal(e_t, torch.tensor([[1.0, 0.0, 1.0]]))
    context, weights = attend(s_t, h, score="dot")
    torch.testing.assert_close(weights, torch.tensor([[0.4223188, 0.1553624, 0.4223188]]))
    torch.testing.assert_close(context, torch.tensor([[0.8446376, 0.5776812]]))


def test_scaled_dot_worked_by_hand():
    s_t = torch.tensor([[1.0, 0.0]])
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    # e_t = [1, 0, 1] / √2 = [0.7071068, 0, 0.7071068]; exp(0.7071068) = 2.0281150
    # α_t = [2.0281150, 1, 2.0281150] / 5.0562300 = [0.4011127, 0.1977746, 0.4011127]
    e_t = attention_scores(s_t, h, "scaled_dot")
    torch.testing.assert_close(e_t, torch.tensor([[0.7071068, 0.0, 0.7071068]]))
    context, weights = attend(s_t, h, score="scaled_dot")
    torch.testing.assert_close(weights, torch.tensor([[0.4011127, 0.1977746, 0.4011127]]))
    torch.testing.assert_close(context, torch.tensor([[0.8022254, 0.5988873]]))


def test_general_and_concat_follow_their_formulas():
    torch.manual_seed(0)
    B, N, dq, dk, A = 2, 4, 3, 5, 6
    s = torch.randn(B, dq, dtype=torch.float64)
    h = torch.randn(B, N, dk, dtype=torch.float64)
    W = torch.randn(dq, dk, dtype=torch.float64)
    W_s, W_h, v = (
        torch.randn(A, dq, dtype=torch.float64),
        torch.randn(A, dk, dtype=torch.float64),
        torch.randn(A, dtype=torch.float64),
    )
    general = attention_scores(s, h, "general", W=W)
    concat = attention_scores(s, h, "concat", W_s=W_s, W_h=W_h, v=v)
    for b in range(B):
        for i in range(N):
            # Luong: s_tᵀ W h_i
            expected = sum(s[b, p] * W[p, q] * h[b, i, q] for p in range(dq) for q in range(dk))
            assert math.isclose(general[b, i].item(), expected.item(), rel_tol=1e-12)
            # Bahdanau: vᵀ tanh(W_s s_t + W_h h_i)
            inner = [
                math.tanh(
                    sum(W_s[a, p].item() * s[b, p].item() for p in range(dq))
                    + sum(W_h[a, q].item() * h[b, i, q].item() for q in range(dk))
                )
                for a in range(A)
            ]
            expected = sum(v[a].item() * inner[a] for a in range(A))
            assert math.isclose(concat[b, i].item(), expected, rel_tol=1e-12)
    # the weights and context follow from the scores as in the notes
    context, weights = attend(s, h, score="general", W=W)
    torch.testing.assert_close(weights, general.softmax(-1))
    torch.testing.assert_close(context, (weights.unsqueeze(-1) * h).sum(1))
    assert torch.equal(attention_scores(s, h, "additive", W_s=W_s, W_h=W_h, v=v), concat)


def test_values_differ_from_keys():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 7)
    context, weights = attend(q, k, v, score="scaled_dot")
    assert context.shape == (2, 3, 7)
    torch.testing.assert_close(context, weights @ v)


# -- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("score", ALL_SCORES)
def test_gradcheck_function(score):
    torch.manual_seed(0)
    dq, dk = (3, 3) if score in ("dot", "scaled_dot") else (3, 4)
    q = torch.randn(2, 3, dq, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, dk, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    params = {n: p.requires_grad_() for n, p in _params(score, dq, dk).items()}
    names = list(params)

    def f(q, k, v, *ps):
        return attend(q, k, v, score=score, mask=mask, **dict(zip(names, ps)))

    assert torch.autograd.gradcheck(f, (q, k, v, *params.values()))


@pytest.mark.parametrize("score", ALL_SCORES)
@pytest.mark.parametrize("step", [True, False])
def test_gradcheck_module(score, step):
    torch.manual_seed(0)
    dq, dk = (4, 4) if score in ("dot", "scaled_dot") else (4, 3)
    attn = Attention(dq, dk, score=score, attn_dim=5).double()
    q = torch.randn(*((2,) if step else (2, 3)), dq, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, dk, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    params = list(attn.parameters())

    def f(q, k, *ps):
        return attn(q, k, mask=mask)

    assert torch.autograd.gradcheck(f, (q, k, *params))


def test_gradcheck_multi_head():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, num_heads=2).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    for need_weights in (False, True):
        assert torch.autograd.gradcheck(
            lambda x, c, nw=need_weights: mha(x, c, mask=mask, need_weights=nw)[0], (x, ctx)
        )


# -- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("score", ALL_SCORES)
def test_masked_positions_get_exactly_zero_and_empty_rows_are_zero(score):
    torch.manual_seed(0)
    dq, dk = (4, 4) if score in ("dot", "scaled_dot") else (4, 6)
    attn = Attention(dq, dk, score=score)
    q = torch.randn(3, 2, dq, requires_grad=True)
    k = torch.randn(3, 5, dk, requires_grad=True)
    mask = torch.tensor(
        [[True, True, True, False, False], [False] * 5, [True, False, True, False, True]]
    )
    context, weights = attn(q, k, mask=mask)
    assert torch.all(weights[~mask.unsqueeze(1).expand_as(weights)] == 0)
    assert torch.all(weights[1] == 0) and torch.all(context[1] == 0)
    torch.testing.assert_close(weights[[0, 2]].sum(-1), torch.ones(2, 2))
    (context.sum() + weights.sum()).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


def test_masked_softmax_extreme_scores_are_finite():
    scores = torch.tensor([[1e30, -1e30, 0.0], [-3e38, -3e38, -3e38]])
    mask = torch.tensor([[False, True, True], [False, False, False]])
    w = masked_softmax(scores, mask)
    assert torch.isfinite(w).all()
    assert w[0, 0] == 0 and torch.all(w[1] == 0)
    torch.testing.assert_close(w[0].sum(), torch.tensor(1.0))


@pytest.mark.parametrize("score", ALL_SCORES)
def test_padding_never_changes_unpadded_results(score):
    torch.manual_seed(0)
    dq, dk = (4, 4) if score in ("dot", "scaled_dot") else (4, 6)
    attn = Attention(dq, dk, score=score)
    lengths = [5, 3, 1]
    sentences = [torch.randn(1, n, dk) for n in lengths]
    keys = torch.zeros(3, 5, dk)
    for b, s in enumerate(sentences):
        keys[b, : lengths[b]] = s[0]
        keys[b, lengths[b] :] = 100.0 * torch.randn(5 - lengths[b], dk)  # padding junk
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    q = torch.randn(3, 2, dq)
    context, weights = attn(q, keys, mask=mask)
    for b, s in enumerate(sentences):
        c_alone, w_alone = attn(q[b : b + 1], s)
        torch.testing.assert_close(context[b : b + 1], c_alone, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(weights[b : b + 1, :, : lengths[b]], w_alone)


@pytest.mark.parametrize("score", ALL_SCORES)
def test_one_step_equals_row_of_all_steps(score):
    torch.manual_seed(0)
    attn = Attention(4, 4 if score in ("dot", "scaled_dot") else 3, score=score)
    q = torch.randn(2, 6, 4)
    k = torch.randn(2, 5, attn.key_dim)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    context, weights = attn(q, k, mask=mask)
    keys_proj = attn.project_keys(k)
    for t in range(6):
        c_t, w_t = attn(q[:, t], k, mask=mask, keys_proj=keys_proj)
        assert c_t.shape == (2, attn.key_dim) and w_t.shape == (2, 5)
        torch.testing.assert_close(c_t, context[:, t])
        torch.testing.assert_close(w_t, weights[:, t])


def test_per_step_mask_for_all_steps():
    torch.manual_seed(0)
    q, k = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    causal = torch.ones(3, 3, dtype=torch.bool).tril()[None]
    _, weights = attend(q, k, mask=causal)
    assert torch.equal(weights == 0, ~causal)


# -- sizes and bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("score", ["general", "concat"])
def test_query_and_key_sizes_may_differ(score):
    attn = Attention(7, 3, score=score, attn_dim=4)
    context, weights = attn(torch.randn(2, 7), torch.randn(2, 5, 3))
    assert context.shape == (2, 3) and weights.shape == (2, 5)


@pytest.mark.parametrize("score", ["dot", "scaled_dot"])
def test_different_sizes_are_an_error_for_dot_scores(score):
    with pytest.raises(ValueError, match=r"same size; got 7 and 3.*general"):
        attend(torch.randn(2, 7), torch.randn(2, 5, 3), score=score)
    with pytest.raises(ValueError, match=r"query_dim == key_dim; got 7 and 3"):
        Attention(7, 3, score=score)


def test_unknown_score_suggests_closest():
    with pytest.raises(ValueError, match=r"unknown attention score 'dott'.*Did you mean 'dot'"):
        attend(torch.randn(1, 2), torch.randn(1, 3, 2), score="dott")
    with pytest.raises(ValueError, match=r"Did you mean 'general'"):
        Attention(4, score="generel")


@pytest.mark.parametrize(
    ("query", "keys", "mask", "message"),
    [
        (torch.randn(4), torch.randn(1, 3, 4), None, r"query must be \[B, D\].*got shape \(4,\)"),
        (
            torch.randn(1, 4),
            torch.randn(3, 4),
            None,
            r"keys must be \[B, N, D\]; got shape \(3, 4\)",
        ),
        (torch.randn(2, 4), torch.randn(1, 3, 4), None, "same batch size; got 2 and 1"),
        (
            torch.randn(1, 4),
            torch.randn(1, 3, 4),
            torch.ones(1, 3),
            "bool tensor.*got torch.float32",
        ),
        (
            torch.randn(1, 4),
            torch.randn(1, 3, 4),
            torch.ones(1, 4, dtype=torch.bool),
            r"mask must have shape \(1, 3\); got \(1, 4\)",
        ),
        (
            torch.randn(1, 2, 4),
            torch.randn(1, 3, 4),
            torch.ones(1, 3, 3, dtype=torch.bool),
            r"\(1, 3\) or \(1, 2, 3\); got \(1, 3, 3\)",
        ),
    ],
)
def test_bad_input_is_a_clear_error(query, keys, mask, message):
    with pytest.raises(ValueError, match=message):
        attend(query, keys, mask=mask)


def test_bad_values_and_score_params():
    with pytest.raises(ValueError, match=r"values must be \[B, N, Dv\].*\(1, 3\).*\(1, 4, 2\)"):
        attend(torch.randn(1, 4), torch.randn(1, 3, 4), torch.randn(1, 4, 2))
    with pytest.raises(ValueError, match=r"W of shape \(4, 3\); got \(3, 4\)"):
        attention_scores(torch.randn(1, 4), torch.randn(1, 2, 3), "general", W=torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"needs W_s \[A, Dq\]"):
        attention_scores(torch.randn(1, 4), torch.randn(1, 2, 3), "concat")
    with pytest.raises(ValueError, match=r"W_s \[A, 4\], W_h \[A, 3\], v \[A\]; got"):
        attention_scores(
            torch.randn(1, 4),
            torch.randn(1, 2, 3),
            "concat",
            W_s=torch.randn(5, 4),
            W_h=torch.randn(5, 3),
            v=torch.randn(6),
        )


def test_errors_are_invalid_input_errors():
    with pytest.raises(InvalidInputError):
        attend(torch.randn(1, 4), torch.randn(1, 3, 5))


@pytest.mark.parametrize(
    "bad",
    [
        lambda p: p[:1],  # one sentence's projection: would broadcast over the batch
        lambda p: p[:, :1],  # one position's: would broadcast over the source
        lambda p: p[..., :2],  # another module's attn_dim: a bare RuntimeError before
        lambda p: p.flip(1)[:, 1:],  # from other keys
    ],
    ids=["batch", "positions", "attn_dim", "other_keys"],
)
def test_wrong_keys_proj_is_a_clear_error(bad):
    torch.manual_seed(0)
    attn = Attention(4, 3, score="concat", attn_dim=5)
    q, k = torch.randn(2, 4), torch.randn(2, 6, 3)
    with pytest.raises(InvalidInputError, match=r"keys_proj must be .*\(2, 6, 5\).*project_keys"):
        attn(q, k, keys_proj=bad(attn.project_keys(k)))


def test_keys_proj_for_a_score_that_does_not_use_it_is_an_error():
    attn = Attention(4, score="general")
    q, k = torch.randn(2, 4), torch.randn(2, 6, 4)
    with pytest.raises(InvalidInputError, match=r"only used by the 'concat' score.*keys_proj=None"):
        attn(q, k, keys_proj=torch.randn(2, 6, 4))


# -- multi-head attention ----------------------------------------------------------------------


def _torch_mha(mha: MultiHeadAttention) -> nn.MultiheadAttention:
    dim = mha.qkv.in_features
    ref = nn.MultiheadAttention(dim, mha.num_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.qkv.weight)
        ref.in_proj_bias.copy_(mha.qkv.bias)
        ref.out_proj.weight.copy_(mha.proj.weight)
        ref.out_proj.bias.copy_(mha.proj.bias)
    return ref.eval()


def _randomize(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module.eval()


@pytest.mark.parametrize("need_weights", [False, True])
def test_multi_head_matches_torch_self_attention(need_weights):
    torch.manual_seed(0)
    mha = _randomize(MultiHeadAttention(12, num_heads=3))
    ref = _torch_mha(mha)
    x = torch.randn(2, 5, 12)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out, weights = mha(x, mask=mask, need_weights=need_weights)
    # torch's key_padding_mask is True where a position is IGNORED
    expected, ref_w = ref(x, x, x, key_padding_mask=~mask, average_attn_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if need_weights:
        torch.testing.assert_close(weights, ref_w, atol=1e-6, rtol=1e-5)
    out_nomask, _ = mha(x, need_weights=need_weights)
    torch.testing.assert_close(out_nomask, ref(x, x, x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("need_weights", [False, True])
def test_multi_head_matches_torch_cross_attention(need_weights):
    torch.manual_seed(0)
    mha = _randomize(MultiHeadAttention(8, num_heads=2))
    ref = _torch_mha(mha)
    x, ctx = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    mask = torch.arange(6)[None] < torch.tensor([6, 2, 4])[:, None]
    out, weights = mha(x, ctx, mask=mask, need_weights=need_weights)
    expected, ref_w = ref(x, ctx, ctx, key_padding_mask=~mask, average_attn_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if need_weights:
        assert weights.shape == (3, 2, 4, 6)
        torch.testing.assert_close(weights, ref_w, atol=1e-6, rtol=1e-5)
    # a per-query mask [B, T, S]: torch takes it as attn_mask [B·H, T, S], True where IGNORED
    causal = torch.ones(4, 6, dtype=torch.bool).tril().expand(3, 4, 6)
    out, _ = mha(x, ctx, mask=causal, need_weights=need_weights)
    expected, _ = ref(x, ctx, ctx, attn_mask=(~causal).repeat_interleave(2, dim=0))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_fused_and_explicit_paths_agree_with_empty_rows():
    torch.manual_seed(0)
    mha = _randomize(MultiHeadAttention(16, num_heads=4))
    x = torch.randn(3, 5, 16)
    masks = [
        None,
        torch.tensor([[True] * 5, [True, False, True, False, False], [False] * 5]),
        torch.ones(3, 5, 5, dtype=torch.bool).tril().logical_and(torch.rand(3, 5, 5) > 0.3),
    ]
    for mask in masks:
        fused, none = mha(x, mask=mask)
        explicit, weights = mha(x, mask=mask, need_weights=True)
        assert none is None and weights.shape == (3, 4, 5, 5)
        assert torch.isfinite(fused).all()
        torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    # a fully masked sample attends nowhere: its attention output is zero, so only the bias remains
    out, _ = mha(x, mask=masks[1])
    torch.testing.assert_close(out[2], mha.proj.bias.expand(5, -1))


def test_multi_head_bad_input():
    mha = MultiHeadAttention(8, num_heads=2)
    with pytest.raises(ValueError, match=r"divisible by num_heads; got dim=8, num_heads=3"):
        MultiHeadAttention(8, num_heads=3)
    with pytest.raises(ValueError, match=r"x must be \[B, T, D\]; got shape \(3, 8\)"):
        mha(torch.randn(3, 8))
    with pytest.raises(ValueError, match="size 6 in its last axis; this module expects 8"):
        mha(torch.randn(1, 3, 6))
    with pytest.raises(ValueError, match=r"context must be \[B=1, S, D=8\]; got shape \(2, 4, 8\)"):
        mha(torch.randn(1, 3, 8), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match=r"mask must be bool of shape \(1, 3\) or \(1, 3, 3\)"):
        mha(torch.randn(1, 3, 8), mask=torch.ones(1, 3))


@settings(max_examples=15, deadline=None)
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 5),
    S=st.integers(1, 5),
    heads=st.sampled_from([1, 2, 4]),
    cross=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_multi_head_property(B, T, S, heads, cross, seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mha = _randomize(MultiHeadAttention(8, num_heads=heads))
    x = torch.randn(B, T, 8, generator=g)
    ctx = torch.randn(B, S, 8, generator=g) if cross else None
    n = S if cross else T
    mask = torch.rand(B, n, generator=g) > 0.4
    fused, _ = mha(x, ctx, mask=mask)
    explicit, weights = mha(x, ctx, mask=mask, need_weights=True)
    assert torch.isfinite(fused).all()
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    # rows sum to 1 where anything is allowed, masked keys get 0, empty rows are all zero
    sums = weights.sum(-1)
    allowed = mask.any(-1)[:, None, None].expand_as(sums)
    torch.testing.assert_close(sums[allowed], torch.ones_like(sums[allowed]))
    assert torch.all(sums[~allowed] == 0)
    assert torch.all(weights.masked_select(~mask[:, None, None, :]) == 0)
    # cross attention: dropping the masked keys altogether gives the same output (padding is
    # invisible) for every sample with any key left
    for b in range(B if cross else 0):
        if mask[b].any():
            alone, _ = mha(x[b : b + 1], ctx[b : b + 1, mask[b]])
            torch.testing.assert_close(fused[b : b + 1], alone, atol=1e-5, rtol=1e-5)


# -- locality self-attention (Lee et al. 2021) ---------------------------------------------------


def _lsa(seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    mha = MultiHeadAttention(16, num_heads=4, lsa=True).eval()
    with torch.no_grad():
        mha.temperature.fill_(0.9)  # away from the default, so a wrong scale would show
    return mha


def test_lsa_fused_and_explicit_paths_agree_and_skip_the_diagonal():
    mha = _lsa()
    x = torch.randn(2, 5, 16)
    fused, none = mha(x)
    explicit, weights = mha(x, need_weights=True)
    assert none is None
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert torch.equal(weights.diagonal(dim1=-2, dim2=-1), torch.zeros(2, 4, 5))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))
    # The reference formula: softmax(τ q kᵀ) with the diagonal at -inf.
    q, k, _ = mha.qkv(x).view(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
    scores = 0.9 * q @ k.transpose(-2, -1)
    scores = scores.masked_fill(torch.eye(5, dtype=torch.bool), float("-inf"))
    torch.testing.assert_close(weights, scores.softmax(-1))


def test_lsa_with_a_padding_mask_agrees_on_both_paths():
    mha = _lsa(1)
    x = torch.randn(2, 4, 16)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    fused, _ = mha(x, mask=mask)
    explicit, weights = mha(x, mask=mask, need_weights=True)
    # Sample 1's only allowed key is token 0, masked on its own row: that row is empty (zeros).
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert (weights.diagonal(dim1=-2, dim2=-1) == 0).all()
    assert (weights[:, :, :, 3] == 0).all()


def test_lsa_temperature_is_learned_and_starts_at_the_usual_scale():
    mha = MultiHeadAttention(16, num_heads=4, lsa=True)
    torch.testing.assert_close(mha.temperature, torch.tensor([0.5]))  # 1/√4
    out, _ = mha(torch.randn(1, 3, 16))
    out.sum().backward()
    assert mha.temperature.grad is not None and mha.temperature.grad.abs() > 0
    assert MultiHeadAttention(16, num_heads=4).temperature is None


def test_lsa_errors():
    mha = MultiHeadAttention(16, num_heads=4, lsa=True)
    with pytest.raises(ValueError, match="needs at least 2 tokens; got 1"):
        mha(torch.randn(1, 1, 16))
    with pytest.raises(ValueError, match="self-attention only"):
        mha(torch.randn(1, 3, 16), context=torch.randn(1, 4, 16))


# -- the explicit path for bf16 on the CPU -----------------------------------------------------


def _count_fused_calls(monkeypatch) -> list[int]:
    calls = [0]
    fused = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls[0] += 1
        return fused(*args, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", counting)
    return calls


def test_bf16_training_on_cpu_skips_the_slow_fused_kernel_for_short_sequences(monkeypatch):
    # PyTorch's fused CPU kernel is slow in bf16 (its backward above all); short sequences take
    # the explicit path there, long ones and fp32 keep the fused kernel.
    calls = _count_fused_calls(monkeypatch)
    mha = MultiHeadAttention(16, num_heads=2)
    short = torch.randn(2, 49, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mha(short)
    assert calls[0] == 0
    mha(short)  # fp32
    assert calls[0] == 1
    side = int(EXPLICIT_CPU_MAX_PAIRS**0.5) + 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mha(torch.randn(1, side, 16))
    assert calls[0] == 2
    # so does a batch whose weights would take too much memory to keep for the backward
    monkeypatch.setattr(attention_module, "EXPLICIT_CPU_MAX_WEIGHTS", 2 * 2 * 49 * 49 - 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mha(short)
    assert calls[0] == 3
    monkeypatch.setattr(attention_module, "EXPLICIT_CPU_MAX_WEIGHTS", 2 * 2 * 49 * 49)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mha(short)
    assert calls[0] == 3
    # inference (forward only) keeps the fused kernel: the backward is where it is slow
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        mha(short)
    assert calls[0] == 4


@pytest.mark.parametrize("case", ["self", "padding", "causal", "cross", "lsa"])
def test_bf16_explicit_path_matches_fp32_fused(case, monkeypatch):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, num_heads=4, lsa=case == "lsa")
    x = torch.randn(3, 20, 32, requires_grad=True)
    ctx = torch.randn(3, 7, 32) if case == "cross" else None
    mask = {"padding": torch.arange(20)[None] < torch.tensor([20, 5, 12])[:, None]}.get(case)
    kwargs = {"mask": mask, "causal": case == "causal"}
    ref = mha(x, ctx, **kwargs)[0]
    ref_grad = torch.autograd.grad(ref.square().sum(), x)[0]
    calls = _count_fused_calls(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mha(x, ctx, **kwargs)[0]
    grad = torch.autograd.grad(out.float().square().sum(), x)[0]
    assert out.dtype == torch.bfloat16 and calls[0] == 0  # LSA's fp32 temperature included
    # bf16 keeps 8 bits of mantissa: agreement to a few parts in a hundred of the output's scale
    torch.testing.assert_close(out.float(), ref, atol=0.05 * ref.abs().max().item(), rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=0.05 * ref_grad.abs().max().item(), rtol=0)
