"""The Transformer encoder-decoder (Vaswani et al. 2017): attention in place of recurrence.

Same interface as the RNN ``Seq2Seq`` (``encode``/``init_state``/``decode_step``/``forward``), so
greedy and beam search, training and translate serve both; decoding caches keys and values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import MultiHeadAttention
from ..errors import InvalidInputError, reject_unknown_fields, unknown_name
from ..registry import register_model
from .model import State, _check_ids, check_source

NORMS = ("pre", "post")
POSITIONS = ("sinusoidal", "learned")
TIES = ("none", "decoder", "all")


@dataclass
class TransformerConfig:
    """An encoder-decoder Transformer; defaults are the paper's base model.

    Args:
        norm: ``post`` (the paper: x = LayerNorm(x + sublayer(x))) or ``pre`` (x = x +
            sublayer(LayerNorm(x)), with a final LayerNorm: trains without warmup tricks).
        positions: ``sinusoidal`` (the paper; any length) or ``learned`` (``max_len`` rows).
        tie_embeddings: ``decoder`` (the target embedding is the output layer, as the paper),
            ``all`` (source embedding too: needs one joint vocabulary) or ``none``.
        max_len: longest source or output, in tokens with <eos>.
    """

    src_vocab_size: int = 37000
    tgt_vocab_size: int = 37000
    dim: int = 512
    num_heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    ff_dim: int = 2048
    dropout: float = 0.1
    attn_dropout: float = 0.0
    norm: str = "post"
    positions: str = "sinusoidal"
    tie_embeddings: str = "decoder"
    max_len: int = 256
    arch: str = "transformer"  # tells a saved config from the RNN's

    def __post_init__(self) -> None:
        if self.arch != "transformer":
            raise InvalidInputError(
                f"a TransformerConfig has arch 'transformer'; got {self.arch!r}"
            )
        if self.norm not in NORMS:
            raise unknown_name("norm", self.norm, NORMS)
        if self.positions not in POSITIONS:
            raise unknown_name("positions", self.positions, POSITIONS)
        if self.tie_embeddings not in TIES:
            raise unknown_name("tie_embeddings", self.tie_embeddings, TIES)
        for name in ("src_vocab_size", "tgt_vocab_size", "dim", "num_heads", "enc_layers",
                     "dec_layers", "ff_dim", "max_len"):  # fmt: skip
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise InvalidInputError(
                f"dim must be divisible by num_heads; got dim={self.dim}, heads={self.num_heads}"
            )
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InvalidInputError(f"{name} must be in [0, 1); got {getattr(self, name)}")
        if self.tie_embeddings == "all" and self.src_vocab_size != self.tgt_vocab_size:
            raise InvalidInputError(
                "tie_embeddings='all' shares one embedding between the languages, so it needs one "
                f"joint vocabulary; got {self.src_vocab_size} source and {self.tgt_vocab_size} "
                "target entries (train with --joint-vocab, or tie 'decoder' only)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransformerConfig:
        reject_unknown_fields("transformer config", d, (f.name for f in dataclasses.fields(cls)))
        return cls(**d)


def sinusoidal_positions(positions: Tensor, dim: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(…): [*positions.shape, dim]."""
    freqs = torch.exp(
        torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
        * (-math.log(10000.0) / dim)
    )
    angles = positions.float()[..., None] * freqs
    pe = torch.stack([angles.sin(), angles.cos()], -1).flatten(-2)  # interleaved sin, cos
    return pe[..., :dim]


class FeedForward(nn.Sequential):
    """FFN(x) = W_2 ReLU(W_1 x + b_1) + b_2, applied to every position alike."""

    def __init__(self, dim: int, ff_dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )


class EncoderLayer(nn.Module):
    """Self-attention over the source (padding masked), then the feed-forward network."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.self_attn = MultiHeadAttention(cfg.dim, cfg.num_heads, attn_drop=cfg.attn_dropout)
        self.ff = FeedForward(cfg.dim, cfg.ff_dim, cfg.dropout)
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.pre:
            x = x + self.drop(self.self_attn(self.norm1(x), mask=mask)[0])
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self.self_attn(x, mask=mask)[0]))
        return self.norm2(x + self.drop(self.ff(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the encoder states, feed-forward network.

    ``cache`` (decoding one step at a time) holds this layer's keys/values of the earlier steps
    and of the source; the step appends its own, so no earlier position is computed again.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.self_attn = MultiHeadAttention(cfg.dim, cfg.num_heads, attn_drop=cfg.attn_dropout)
        self.cross_attn = MultiHeadAttention(cfg.dim, cfg.num_heads, attn_drop=cfg.attn_dropout)
        self.ff = FeedForward(cfg.dim, cfg.ff_dim, cfg.dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(cfg.dim) for _ in range(3))
        self.drop = nn.Dropout(cfg.dropout)

    def _self(self, x: Tensor, past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Any]:
        if past is None:  # all positions at once (training)
            return self.self_attn(x, causal=True)[0], None
        k, v = self.self_attn.project_kv(x)
        # the first step starts the cache in the keys' own dtype (bf16 under autocast)
        kv = (
            (k, v)
            if past[0].shape[2] == 0
            else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        )
        return self.self_attn(x, kv=kv)[0], kv

    def forward(
        self,
        x: Tensor,
        memory_kv: tuple[Tensor, Tensor],
        src_mask: Tensor,
        past: tuple[Tensor, Tensor] | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """x [B, T, D] -> output, this layer's self-attention keys/values so far (with ``past``),
        cross-attention weights [B, H, T, S] (with ``need_weights``)."""
        cross = dict(mask=src_mask, kv=memory_kv, need_weights=need_weights)
        if self.pre:
            h, kv = self._self(self.norm1(x), past)
            x = x + self.drop(h)
            h, weights = self.cross_attn(self.norm2(x), **cross)
            x = x + self.drop(h)
            return x + self.drop(self.ff(self.norm3(x))), kv, weights
        h, kv = self._self(x, past)
        x = self.norm1(x + self.drop(h))
        h, weights = self.cross_attn(x, **cross)
        x = self.norm2(x + self.drop(h))
        return self.norm3(x + self.drop(self.ff(x))), kv, weights


class Transformer(nn.Module):
    """Embeddings × √d plus positions, N encoder layers, N decoder layers, output projection.

    The encoder states h_1..h_N are the keys and values of every decoder layer's cross-attention,
    whose weights α are the alignment: per layer and head with :meth:`cross_attention`, the last
    layer's mean over heads from :meth:`decode_step` (what search records and heatmaps show).
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.src_embed = nn.Embedding(cfg.src_vocab_size, cfg.dim, padding_idx=0)
        self.tgt_embed = (
            self.src_embed
            if cfg.tie_embeddings == "all"
            else nn.Embedding(cfg.tgt_vocab_size, cfg.dim, padding_idx=0)
        )
        self.pos_embed = nn.Embedding(cfg.max_len, cfg.dim) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        pre = cfg.norm == "pre"
        self.enc_norm = nn.LayerNorm(cfg.dim) if pre else nn.Identity()
        self.dec_norm = nn.LayerNorm(cfg.dim) if pre else nn.Identity()
        self.out = nn.Linear(cfg.dim, cfg.tgt_vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_embeddings != "none":
            self.out.weight = self.tgt_embed.weight

    has_attention = True

    @property
    def max_positions(self) -> int:
        """The longest output search may produce: the position table's size."""
        return self.config.max_len

    @property
    def max_source_tokens(self) -> int:
        """The longest source sentence, in tokens before its <eos>."""
        return self.config.max_len - 1

    def _init_weights(self) -> None:
        # Xavier for the projections (as the reference implementations); embeddings N(0, d^-1/2),
        # so that × √d gives unit-variance inputs and a tied output layer starts small.
        for name, p in self.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                nn.init.xavier_uniform_(p)
        for emb in {self.src_embed, self.tgt_embed}:
            nn.init.normal_(emb.weight, 0.0, self.config.dim**-0.5)
            with torch.no_grad():
                emb.weight[0].zero_()
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed.weight, 0.0, 0.02)

    def _embed(self, table: nn.Embedding, ids: Tensor, positions: Tensor) -> Tensor:
        """ids [B, T] at positions [B, T] -> √d · E[ids] + P[positions], with dropout."""
        if int(positions.max()) >= self.config.max_len:
            raise InvalidInputError(
                f"position {int(positions.max())} is past this model's table of "
                f"{self.config.max_len} positions (max_len, <eos> included); shorten the input "
                "or pass --too-long truncate"
            )
        x = table(ids) * math.sqrt(self.config.dim)
        if self.pos_embed is not None:
            pe = self.pos_embed(positions)
        else:
            pe = sinusoidal_positions(positions, self.config.dim)
        return self.drop(x + pe.to(x.dtype))

    def encode(self, src: Tensor, src_lengths: Tensor) -> State:
        """Memory for decoding: ``states`` [B, S, D] (h_1..h_N), ``mask`` [B, S] (True at real
        tokens) and, per decoder layer i, its cross-attention keys/values ``k{i}``/``v{i}``."""
        check_source(src, src_lengths, self.config.src_vocab_size)
        B, S = src.shape
        positions = torch.arange(S, device=src.device).expand(B, S)
        mask = positions < src_lengths[:, None]
        x = self._embed(self.src_embed, src, positions)
        for layer in self.encoder_layers:
            x = layer(x, mask)
        states = self.enc_norm(x)
        memory = {"states": states, "mask": mask}
        for i, layer in enumerate(self.decoder_layers):
            memory[f"k{i}"], memory[f"v{i}"] = layer.cross_attn.project_kv(states)
        return memory

    def init_state(self, memory: State) -> State:
        """Position 0 and an empty key/value cache per decoder layer (all batch-first)."""
        states = memory["states"]
        B = states.shape[0]
        heads, dh = self.config.num_heads, self.config.dim // self.config.num_heads
        empty = states.new_zeros(B, heads, 0, dh)
        state = {"pos": torch.zeros(B, dtype=torch.long, device=states.device)}
        for i in range(len(self.decoder_layers)):
            state[f"k{i}"], state[f"v{i}"] = empty, empty
        return state

    def decode_step(
        self, prev: Tensor, state: State, memory: State
    ) -> tuple[Tensor, State, Tensor]:
        """log p(y_t | y_<t, x) [B, V], the new state, the last layer's cross-attention α_t [B, S]
        (mean over heads). Each layer attends to its cached keys/values plus this step's."""
        x = self._embed(self.tgt_embed, prev[:, None], state["pos"][:, None])
        new = {"pos": state["pos"] + 1}
        last = len(self.decoder_layers) - 1
        weights = None
        for i, layer in enumerate(self.decoder_layers):
            x, kv, w = layer(
                x, (memory[f"k{i}"], memory[f"v{i}"]), memory["mask"],
                past=(state[f"k{i}"], state[f"v{i}"]), need_weights=i == last,
            )  # fmt: skip
            new[f"k{i}"], new[f"v{i}"] = kv
            if w is not None:
                weights = w
        logits = self.out(self.dec_norm(x[:, 0]))
        # fp32 log-probabilities under bf16 autocast too: search sums them over many steps
        return F.log_softmax(logits.float(), dim=-1), new, weights.mean(1)[:, 0].float()

    def _decode_all(
        self, tgt_in: Tensor, memory: State, need_weights: bool
    ) -> tuple[Tensor, list[Tensor]]:
        B, T = tgt_in.shape
        positions = torch.arange(T, device=tgt_in.device).expand(B, T)
        x = self._embed(self.tgt_embed, tgt_in, positions)
        weights = []
        for i, layer in enumerate(self.decoder_layers):
            x, _, w = layer(x, (memory[f"k{i}"], memory[f"v{i}"]), memory["mask"],
                            need_weights=need_weights)  # fmt: skip
            if w is not None:
                weights.append(w)
        return self.out(self.dec_norm(x)), weights

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, teacher_forcing: float = 1.0
    ) -> tuple[Tensor, None]:
        """Logits [B, T, V] for every target position at once (the causal mask keeps position t
        from seeing y_t and later), and None (weights: :meth:`cross_attention`).

        ``teacher_forcing`` must be 1: a Transformer trains on the true previous tokens of all
        positions in parallel (scheduled sampling would need T sequential passes).
        """
        if teacher_forcing < 1.0:
            raise InvalidInputError(
                f"the Transformer trains with teacher forcing 1.0 only; got {teacher_forcing} "
                "(use --teacher-forcing with the RNN models)"
            )
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0] or tgt_in.shape[1] < 1:
            raise InvalidInputError(
                f"tgt_in must be [B={src.shape[0]}, T>=1] ids; got shape {tuple(tgt_in.shape)}"
            )
        _check_ids(tgt_in, self.config.tgt_vocab_size, "tgt_in")
        logits, _ = self._decode_all(tgt_in, self.encode(src, src_lengths), False)
        return logits, None

    @torch.no_grad()
    def cross_attention(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Cross-attention weights of every decoder layer and head for the target ``tgt_in``
        (teacher-forced, e.g. a translation the model produced): [L, B, H, T, S]."""
        _check_ids(tgt_in, self.config.tgt_vocab_size, "tgt_in")
        _, weights = self._decode_all(tgt_in, self.encode(src, src_lengths), True)
        return torch.stack(weights)


def _cfg(**kw: Any) -> TransformerConfig:
    return TransformerConfig(**kw)


# The paper's base and big models; a Multi30k-size one (3+3 layers of 256, pre-norm, as the
# small-data Transformers that train in an hour on a CPU); tiny ones for tests.
register_model("transformer_base", _cfg(), Transformer)
register_model(
    "transformer_big", _cfg(dim=1024, num_heads=16, ff_dim=4096, dropout=0.3), Transformer
)
register_model(
    "transformer_multi30k",
    _cfg(
        src_vocab_size=8000,
        tgt_vocab_size=8000,
        dim=256,
        num_heads=4,
        enc_layers=3,
        dec_layers=3,
        ff_dim=1024,
        dropout=0.2,
        norm="pre",
    ),
    Transformer,
)
register_model(
    "transformer_small",
    _cfg(
        src_vocab_size=64,
        tgt_vocab_size=64,
        dim=64,
        num_heads=4,
        enc_layers=2,
        dec_layers=2,
        ff_dim=128,
        dropout=0.1,
        norm="pre",
        max_len=64,
    ),
    Transformer,
)
_TINY = dict(src_vocab_size=24, tgt_vocab_size=24, dim=16, num_heads=2, enc_layers=2,
             dec_layers=2, ff_dim=32, dropout=0.0, max_len=32)  # fmt: skip
register_model("transformer_tiny", _cfg(**_TINY, norm="pre"), Transformer)
register_model(
    "transformer_tiny_post_learned",
    _cfg(**_TINY, norm="post", positions="learned", tie_embeddings="none"),
    Transformer,
)
