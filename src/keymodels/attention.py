"""Attention over encoder states, as in the notes, and multi-head attention for the transformer.

At decoder step t with state s_t and encoder states h_1..h_N:
    e_t = [score(s_t, h_1), ..., score(s_t, h_N)]   scores
    α_t = softmax(e_t)                               weights
    a_t = Σ_i α_t,i h_i                              context
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InvalidInputError, unknown_name

SCORES = ("dot", "general", "concat", "scaled_dot")


def _check_score(score: str) -> str:
    if score == "additive":  # Bahdanau's name for the concat score
        return "concat"
    if score not in SCORES:
        raise unknown_name("attention score", score, (*SCORES, "additive"))
    return score


def _check_shapes(query: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> None:
    if query.dim() not in (2, 3):
        raise InvalidInputError(
            f"query must be [B, D] (one decoder step) or [B, T, D] (all steps); got shape {tuple(query.shape)}"
        )
    if keys.dim() != 3:
        raise InvalidInputError(f"keys must be [B, N, D]; got shape {tuple(keys.shape)}")
    if values.dim() != 3 or values.shape[:2] != keys.shape[:2]:
        raise InvalidInputError(
            f"values must be [B, N, Dv] with the same B, N as keys {tuple(keys.shape[:2])}; "
            f"got shape {tuple(values.shape)}"
        )
    if query.shape[0] != keys.shape[0]:
        raise InvalidInputError(
            f"query and keys must have the same batch size; got {query.shape[0]} and {keys.shape[0]}"
        )
    if mask is not None:
        if mask.dtype != torch.bool:
            raise InvalidInputError(
                f"mask must be a bool tensor (True where a position may be attended); got {mask.dtype}"
            )
        n = keys.shape[1]
        expected = [(query.shape[0], n)]
        if query.dim() == 3:
            expected.append((query.shape[0], query.shape[1], n))
        if tuple(mask.shape) not in expected:
            raise InvalidInputError(
                f"mask must have shape {' or '.join(map(str, expected))}; got {tuple(mask.shape)}"
            )


def attention_scores(
    query: Tensor,
    keys: Tensor,
    score: str = "dot",
    *,
    W: Tensor | None = None,
    W_s: Tensor | None = None,
    W_h: Tensor | None = None,
    v: Tensor | None = None,
) -> Tensor:
    """The scores e_t = [score(s_t, h_1), ..., score(s_t, h_N)].

    Args:
        query: s_t, [B, Dq] or [B, T, Dq].
        keys: h_1..h_N, [B, N, Dk].
        score: ``dot`` s_tᵀh_i; ``scaled_dot`` s_tᵀh_i / √Dk; ``general`` s_tᵀ W h_i with
            W [Dq, Dk] (Luong); ``concat`` vᵀ tanh(W_s s_t + W_h h_i) with W_s [A, Dq],
            W_h [A, Dk], v [A] (Bahdanau, also called additive).

    Returns:
        e: [B, N] or [B, T, N].
    """
    score = _check_score(score)
    step = query.dim() == 2
    q = query.unsqueeze(1) if step else query  # [B, T, Dq]
    dq, dk = q.shape[-1], keys.shape[-1]
    if score in ("dot", "scaled_dot"):
        if dq != dk:
            raise InvalidInputError(
                f"the {score!r} score needs query and keys of the same size; got {dq} and {dk}. "
                "Use score='general' or 'concat', which allow different sizes."
            )
        e = q @ keys.transpose(1, 2)
        if score == "scaled_dot":
            e = e / math.sqrt(dk)
    elif score == "general":
        if W is None or W.shape != (dq, dk):
            got = None if W is None else tuple(W.shape)
            raise InvalidInputError(f"the 'general' score needs W of shape {(dq, dk)}; got {got}")
        e = (q @ W) @ keys.transpose(1, 2)
    else:
        if W_s is None or W_h is None or v is None:
            raise InvalidInputError("the 'concat' score needs W_s [A, Dq], W_h [A, Dk] and v [A]")
        if (
            W_s.shape[1] != dq
            or W_h.shape[1] != dk
            or not (W_s.shape[0] == W_h.shape[0] == v.shape[0])
        ):
            raise InvalidInputError(
                f"the 'concat' score needs W_s [A, {dq}], W_h [A, {dk}], v [A]; got "
                f"{tuple(W_s.shape)}, {tuple(W_h.shape)}, {tuple(v.shape)}"
            )
        e = _additive(q @ W_s.T, keys @ W_h.T, v)
    return e.squeeze(1) if step else e


def _additive(q_proj: Tensor, k_proj: Tensor, v: Tensor) -> Tensor:
    """vᵀ tanh(q + k) for every (t, i) pair: q_proj [B, T, A], k_proj [B, N, A] -> [B, T, N]."""
    return torch.tanh(q_proj.unsqueeze(2) + k_proj.unsqueeze(1)) @ v


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """softmax over the last axis where ``mask`` is True; masked weights are exactly 0.

    A row with every position masked gets all-zero weights (not NaN), so padding-only rows are
    harmless. ``mask`` broadcasts against ``scores``.
    """
    if mask is None:
        return scores.softmax(dim=-1)
    # The dtype's smallest value instead of -inf keeps fully masked rows finite; the final
    # multiply zeroes them and makes every masked weight exactly 0.
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) * mask


def attend(
    query: Tensor,
    keys: Tensor,
    values: Tensor | None = None,
    score: str = "dot",
    mask: Tensor | None = None,
    **score_params: Tensor,
) -> tuple[Tensor, Tensor]:
    """The notes' attention: α_t = softmax(e_t), a_t = Σ_i α_t,i h_i.

    Args:
        query: s_t, [B, Dq] for one decoder step or [B, T, Dq] for all steps at once.
        keys: h_1..h_N, [B, N, Dk].
        values: what is averaged, [B, N, Dv]; the keys themselves when None.
        score: one of ``dot``, ``general``, ``concat`` (``additive``), ``scaled_dot``.
        mask: bool [B, N] or [B, T, N], True where a position may be attended.
        **score_params: ``W`` for general; ``W_s``, ``W_h``, ``v`` for concat.

    Returns:
        context a_t, [B, Dv] or [B, T, Dv], and weights α_t, [B, N] or [B, T, N].
    """
    values = keys if values is None else values
    _check_shapes(query, keys, values, mask)
    e = attention_scores(query, keys, score, **score_params)
    if mask is not None and mask.dim() == 2 and query.dim() == 3:
        mask = mask.unsqueeze(1)
    weights = masked_softmax(e, mask)
    if query.dim() == 2:
        return torch.bmm(weights.unsqueeze(1), values).squeeze(1), weights
    return torch.bmm(weights, values), weights


class Attention(nn.Module):
    """Attention of decoder states over encoder states with a learnable score.

    One module serves one decoder step (query [B, Dq]) and all steps at once ([B, T, Dq]).
    For ``concat`` the keys' projection W_h h_i can be computed once per source sentence with
    :meth:`project_keys` and passed back as ``keys_proj`` at every step.

    Args:
        query_dim: size of s_t.
        key_dim: size of h_i (defaults to ``query_dim``).
        score: ``dot``, ``general``, ``concat`` (``additive``) or ``scaled_dot``.
        attn_dim: A, the hidden size of the concat score (defaults to ``query_dim``).
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int | None = None,
        score: str = "dot",
        attn_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.score = _check_score(score)
        self.query_dim, self.key_dim = query_dim, query_dim if key_dim is None else key_dim
        if self.query_dim < 1 or self.key_dim < 1 or (attn_dim is not None and attn_dim < 1):
            raise InvalidInputError(
                f"query_dim, key_dim and attn_dim must be >= 1; got {query_dim}, {key_dim}, {attn_dim}"
            )
        if self.score in ("dot", "scaled_dot") and self.query_dim != self.key_dim:
            raise InvalidInputError(
                f"the {score!r} score needs query_dim == key_dim; got {self.query_dim} and {self.key_dim}. "
                "Use score='general' or 'concat' for different sizes."
            )
        if self.score == "general":
            self.W = nn.Parameter(torch.empty(self.query_dim, self.key_dim))
            nn.init.xavier_uniform_(self.W)
        elif self.score == "concat":
            a = attn_dim or self.query_dim
            self.W_s = nn.Linear(self.query_dim, a, bias=False)
            self.W_h = nn.Linear(self.key_dim, a, bias=False)
            self.v = nn.Parameter(torch.empty(a).uniform_(-1 / math.sqrt(a), 1 / math.sqrt(a)))

    def project_keys(self, keys: Tensor) -> Tensor | None:
        """W_h h_i for the concat score, [B, N, A]; None for the other scores."""
        return self.W_h(keys) if self.score == "concat" else None

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        keys_proj: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns (context, weights) as :func:`attend`."""
        if query.shape[-1:] != (self.query_dim,) or keys.shape[-1:] != (self.key_dim,):
            raise InvalidInputError(
                f"this Attention takes queries of size {self.query_dim} and keys of size "
                f"{self.key_dim}; got shapes {tuple(query.shape)} and {tuple(keys.shape)}"
            )
        if self.score != "concat":
            if keys_proj is not None:  # ignoring it would hide a caller's mix-up of modules
                raise InvalidInputError(
                    f"keys_proj is only used by the 'concat' score; this Attention uses "
                    f"{self.score!r}. Pass keys_proj=None (project_keys returns None for it)."
                )
            params = {"W": self.W} if self.score == "general" else {}
            return attend(query, keys, values, self.score, mask, **params)
        values = keys if values is None else values
        _check_shapes(query, keys, values, mask)
        if keys_proj is None:
            keys_proj = self.W_h(keys)
        else:
            # A stale or mis-ordered projection broadcasts (B or N of 1) into a silently wrong
            # context, or fails deep inside with a bare RuntimeError.
            expected = (*keys.shape[:2], self.v.shape[0])
            if tuple(keys_proj.shape) != expected:
                raise InvalidInputError(
                    f"keys_proj must be project_keys(keys), [B, N, A] = {expected} for keys of "
                    f"shape {tuple(keys.shape)}; got {tuple(keys_proj.shape)}. Compute it from "
                    "the same keys with this module's project_keys, and reorder it with them."
                )
        step = query.dim() == 2
        q = query.unsqueeze(1) if step else query
        e = _additive(self.W_s(q), keys_proj, self.v)  # [B, T, N]
        if mask is not None and mask.dim() == 2:
            mask = mask.unsqueeze(1)
        weights = masked_softmax(e, mask)
        context = torch.bmm(weights, values)
        return (context.squeeze(1), weights.squeeze(1)) if step else (context, weights)

    def extra_repr(self) -> str:
        return f"score={self.score!r}, query_dim={self.query_dim}, key_dim={self.key_dim}"


# PyTorch's fused CPU attention kernel is slow in bf16/fp16 when training, in its backward: with
# up to ~200 tokens, matmul-softmax-matmul in bf16 trains 1.2-17x faster
# (benchmarks/bench_attention.py). Up to this many query-key pairs the explicit path takes over
# there, while its [B, H, T, S] weights (kept for the backward, ~6 bytes an element) stay under
# EXPLICIT_CPU_MAX_WEIGHTS elements a layer. Inference (forward only: measured 0.6-1.6x either
# way), fp32 and CUDA keep the fused kernel.
EXPLICIT_CPU_MAX_PAIRS = 256 * 256
EXPLICIT_CPU_MAX_WEIGHTS = 1 << 25  # ~200 MB a layer


def _explicit_is_faster(q: Tensor, num_keys: int) -> bool:
    pairs = q.shape[-2] * num_keys
    return (
        q.device.type == "cpu"
        and q.dtype in (torch.bfloat16, torch.float16)
        and q.requires_grad
        and pairs <= EXPLICIT_CPU_MAX_PAIRS
        and q.shape[:-2].numel() * pairs <= EXPLICIT_CPU_MAX_WEIGHTS
    )


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017), self or cross.

    Parameters follow timm's ViT layout (``qkv``, ``proj``), which is also the layout of
    ``torch.nn.MultiheadAttention`` (``in_proj_weight``, ``out_proj``), so weights move between
    all three unchanged. The fused kernel (``F.scaled_dot_product_attention``) runs unless the
    per-head weights are asked for or a short sequence trains in bf16/fp16 on the CPU (where
    the explicit path is faster); the explicit path computes the same output.

    With ``lsa=True`` it is Locality Self-Attention (Lee et al. 2021, "Vision Transformer for
    Small-Size Datasets"): the softmax temperature is learned (``temperature``, initialised to
    the usual 1/√d_h) and a token may not attend to itself (the diagonal is masked), which
    sharpens the otherwise flat attention of ViTs trained on small data. Self-attention only.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        lsa: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1:
            raise InvalidInputError(
                f"dim and num_heads must be >= 1; got dim={dim}, num_heads={num_heads}"
            )
        if dim % num_heads:
            raise InvalidInputError(
                f"dim must be divisible by num_heads; got dim={dim}, num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.lsa = lsa
        # LSA's learnable scale, one per module as the authors' code; shape [1] exports cleanly.
        self.temperature = nn.Parameter(torch.full((1,), self.scale)) if lsa else None

    def _heads(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, N, Dh]

    def project_kv(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``source`` [B, S, D], each [B, H, S, Dh]: computed once per sentence
        for cross-attention, or one step at a time for a decoder's key/value cache."""
        D = self.qkv.in_features
        w_kv = self.qkv.weight[D:]
        b_kv = self.qkv.bias[D:] if self.qkv.bias is not None else None
        B, S, _ = source.shape
        kv = F.linear(source, w_kv, b_kv).view(B, S, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        mask: Tensor | None = None,
        need_weights: bool = False,
        causal: bool = False,
        kv: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x`` to itself, or to ``context`` (cross-attention).

        Args:
            x: queries, [B, T, D].
            context: keys/values source, [B, S, D]; ``x`` itself when None.
            mask: bool [B, S] or [B, T, S], True where a position may be attended.
            need_weights: also return the per-head weights [B, H, T, S] (explicit path).
            causal: position t attends only to positions <= t (a decoder's self-attention;
                needs T == S).
            kv: keys and values [B, H, S, Dh] from :meth:`project_kv`, used instead of projecting
                them again: the cached cross-attention memory, or a decoder's past and present
                keys/values when it runs one step at a time. Only the queries come from ``x``.

        Returns:
            output [B, T, D] and the weights (None unless ``need_weights``).
        """
        if x.dim() != 3:
            raise InvalidInputError(f"x must be [B, T, D]; got shape {tuple(x.shape)}")
        B, T, D = x.shape
        if D != self.qkv.in_features:
            raise InvalidInputError(
                f"x has size {D} in its last axis; this module expects {self.qkv.in_features}"
            )
        if context is None and kv is None:
            qkv = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # each [B, H, T, Dh]
        else:
            if kv is not None:
                if context is not None:
                    raise InvalidInputError("give context or precomputed kv, not both")
                k, v = kv
                if k.dim() != 4 or k.shape != v.shape or k.shape[:2] != (B, self.num_heads):
                    raise InvalidInputError(
                        f"kv must be two [B={B}, H={self.num_heads}, S, Dh={self.head_dim}] "
                        f"tensors (from project_kv); got {tuple(k.shape)} and {tuple(v.shape)}"
                    )
            else:
                if context.dim() != 3 or context.shape[0] != B or context.shape[2] != D:
                    raise InvalidInputError(
                        f"context must be [B={B}, S, D={D}]; got shape {tuple(context.shape)}"
                    )
                k, v = self.project_kv(context)
            b_q = self.qkv.bias[:D] if self.qkv.bias is not None else None
            q = self._heads(F.linear(x, self.qkv.weight[:D], b_q))
        S = k.shape[2]
        attn_mask, empty_rows = self._prepare_mask(mask, B, T, S)
        if causal:
            if T != S:
                raise InvalidInputError(
                    f"causal attention needs as many queries as keys; got {T} and {S} (a decoder "
                    "step with a key/value cache attends to all its past: pass causal=False)"
                )
            # Real queries never see padding after them, so causal alone suits padded targets.
            tril = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            # Causal alone goes to the fused kernel as is_causal, which skips the masked half.
            fused_causal = attn_mask is None and self.temperature is None
            attn_mask = tril if attn_mask is None else attn_mask & tril
        else:
            fused_causal = False
        scale = self.scale
        if self.temperature is not None:
            if context is not None or kv is not None:
                raise InvalidInputError("locality self-attention (lsa=True) is self-attention only")
            if T < 2:
                raise InvalidInputError(
                    "locality self-attention masks each token's attention to itself, so it needs "
                    f"at least 2 tokens; got {T}"
                )
            # The learned temperature multiplies q (so the fused kernel runs with scale=1), and
            # the diagonal is masked: a token attends only to the others.
            q, scale = q * self.temperature.to(q.dtype), 1.0  # bf16 stays bf16 under autocast
            off_diagonal = ~torch.eye(T, dtype=torch.bool, device=x.device)  # [T, T]
            attn_mask = off_diagonal if attn_mask is None else attn_mask & off_diagonal
            if mask is not None:
                empty = ~attn_mask.any(-1, keepdim=True)
                empty_rows = empty if empty.any() else None

        if need_weights or _explicit_is_faster(q, S):
            scores = (q * scale) @ k.transpose(-2, -1)  # [B, H, T, S]
            # softmax in at least fp32 whatever the matmuls ran in (the scores themselves come
            # out of a bf16 matmul in bf16, where the fused kernel would keep them in fp32)
            wide = torch.promote_types(scores.dtype, torch.float32)
            weights = masked_softmax(scores.to(wide), attn_mask).to(v.dtype)
            out = self.attn_drop(weights) @ v
        else:
            weights = None
            if empty_rows is not None:
                # The fused kernel returns NaN for a row with no allowed position; let such rows
                # attend everywhere and zero their output afterwards, as masked_softmax does.
                attn_mask = attn_mask | empty_rows
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=None if fused_causal else attn_mask,
                dropout_p=self.attn_drop.p if self.training else 0.0,
                is_causal=fused_causal,
                scale=scale,
            )
            if empty_rows is not None:
                out = out.masked_fill(empty_rows, 0.0)
        out = out.transpose(1, 2).reshape(B, T, D)
        return self.proj_drop(self.proj(out)), weights

    @staticmethod
    def _prepare_mask(
        mask: Tensor | None, B: int, T: int, S: int
    ) -> tuple[Tensor | None, Tensor | None]:
        """A [B, 1, T|1, S] bool mask, and where rows are fully masked ([B, 1, T|1, 1] or None)."""
        if mask is None:
            return None, None
        if mask.dtype != torch.bool or tuple(mask.shape) not in ((B, S), (B, T, S)):
            raise InvalidInputError(
                f"mask must be bool of shape {(B, S)} or {(B, T, S)}; got {mask.dtype} {tuple(mask.shape)}"
            )
        mask = mask[:, None, None, :] if mask.dim() == 2 else mask[:, None]
        empty = ~mask.any(-1, keepdim=True)  # [B, 1, T|1, 1]
        return mask, (empty if empty.any() else None)
