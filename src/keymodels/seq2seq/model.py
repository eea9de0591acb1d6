"""The RNN encoder-decoder: Encoder, PlainDecoder (Cho et al. 2014), AttentionDecoder, Seq2Seq.

Encoder states h_1..h_N, decoder state s_t, scores e_t, weights α_t and context a_t as in the notes;
decoders run one step at a time so that teacher forcing, greedy and beam search share one code path.
State and memory are dicts of batch-first tensors, so search reorders them with one index_select.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..attention import SCORES, Attention
from ..errors import InvalidInputError, reject_unknown_fields, unknown_name
from ..registry import register_model

RNNS = {"gru": nn.GRU, "lstm": nn.LSTM}
STYLES = ("bahdanau", "luong")

State = dict[str, Tensor]


@dataclass
class Seq2SeqConfig:
    """An encoder-decoder; defaults follow Bahdanau et al. 2015 at the scale Multi30k needs.

    Args:
        attention: ``none`` (the plain Cho et al. 2014 decoder) or a score of
            :mod:`keymodels.attention`: ``dot``, ``general``, ``concat``, ``scaled_dot``.
        style: ``bahdanau`` (attend with s_{t-1} before the RNN step) or ``luong`` (attend with s_t
            after it; ``input_feeding`` feeds the attentional vector h̃_{t-1} back as input).
        max_len: longest source sentence (tokens) the model accepts.
    """

    src_vocab_size: int = 8000
    tgt_vocab_size: int = 6000
    emb_dim: int = 256
    hidden_dim: int = 512  # per direction in the encoder, and the decoder's state size
    num_layers: int = 1
    rnn: str = "gru"
    bidirectional: bool = True  # Bahdanau's encoder; the final states are bridged to hidden_dim
    dropout: float = 0.3
    attention: str = "concat"
    style: str = "bahdanau"
    input_feeding: bool = True
    attn_dim: int | None = None  # A of the concat score; hidden_dim when None
    max_len: int = 100

    def __post_init__(self) -> None:
        if self.rnn not in RNNS:
            raise unknown_name("rnn type", self.rnn, RNNS)
        if self.attention != "none" and self.attention not in (*SCORES, "additive"):
            raise unknown_name("attention", self.attention, ("none", *SCORES))
        if self.style not in STYLES:
            raise unknown_name("attention style", self.style, STYLES)
        for name in (
            "src_vocab_size",
            "tgt_vocab_size",
            "emb_dim",
            "hidden_dim",
            "num_layers",
            "max_len",
        ):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidInputError(f"dropout must be in [0, 1); got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Seq2SeqConfig:
        """The config of :meth:`to_dict`; an unknown key is an error, not silently dropped."""
        reject_unknown_fields("seq2seq config", d, (f.name for f in dataclasses.fields(cls)))
        return cls(**d)


def reorder(d: State, index: Tensor) -> State:
    """Rows ``index`` of every batch-first tensor in ``d`` (beam search's reordering)."""
    return {k: v.index_select(0, index) for k, v in d.items()}


class Encoder(nn.Module):
    """Embedding + (bi)directional GRU/LSTM over packed sequences: padding never enters a state.

    ``output_dim`` is hidden_dim × directions; the final state of each layer concatenates the
    forward state at the last real token and the backward state at the first.
    """

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.src_vocab_size, cfg.emb_dim, padding_idx=0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.rnn = RNNS[cfg.rnn](
            cfg.emb_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            bidirectional=cfg.bidirectional,
        )
        self.num_layers = cfg.num_layers
        self.directions = 2 if cfg.bidirectional else 1
        self.output_dim = cfg.hidden_dim * self.directions

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Encode a padded batch.

        Args:
            src: ids, [B, S], padded with 0 after each sentence's length.
            src_lengths: [B], each >= 1.

        Returns:
            states h_1..h_N [B, S, Eo] (zeros at padding), final hidden [B, L, Eo], and the final
            LSTM cell [B, L, Eo] (None for GRU).
        """
        x = self.dropout(self.embed(src))
        packed = pack_padded_sequence(x, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        h, c = hidden if isinstance(hidden, tuple) else (hidden, None)
        return states, self._layers(h), None if c is None else self._layers(c)

    def _layers(self, h: Tensor) -> Tensor:
        # [L * dirs, B, H] -> [B, L, dirs * H]
        B = h.shape[1]
        return (
            h.view(self.num_layers, self.directions, B, -1)
            .permute(2, 0, 1, 3)
            .reshape(B, self.num_layers, -1)
        )


class _Decoder(nn.Module):
    """What both decoders share: embedding, RNN, bridge from the encoder, output layer."""

    def __init__(self, cfg: Seq2SeqConfig, enc_dim: int, rnn_input: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.tgt_vocab_size, cfg.emb_dim, padding_idx=0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.rnn = RNNS[cfg.rnn](
            rnn_input,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        # s_0 = tanh(W h_final): the encoder's final state in the decoder's size.
        self.bridge = nn.Linear(enc_dim, cfg.hidden_dim)
        self.bridge_c = nn.Linear(enc_dim, cfg.hidden_dim) if cfg.rnn == "lstm" else None
        self.out = nn.Linear(cfg.hidden_dim, cfg.tgt_vocab_size)

    def _init_hidden(self, memory: State) -> State:
        state = {"h": torch.tanh(self.bridge(memory["final"]))}
        if self.bridge_c is not None:
            state["c"] = torch.tanh(self.bridge_c(memory["final_c"]))
        return state

    def _rnn_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One RNN step: x [B, In], state h (and c) [B, L, H] -> top-layer s_t [B, H], new state."""
        h = state["h"].transpose(0, 1).contiguous()
        hidden = (h, state["c"].transpose(0, 1).contiguous()) if "c" in state else h
        out, hidden = self.rnn(x.unsqueeze(1), hidden)
        if isinstance(hidden, tuple):
            new = {"h": hidden[0].transpose(0, 1), "c": hidden[1].transpose(0, 1)}
        else:
            new = {"h": hidden.transpose(0, 1)}
        return out.squeeze(1), new

    def _rnn_all(self, x: Tensor, state: State) -> Tensor:
        """The RNN over all steps at once (teacher forcing): x [B, T, In] -> s_1..s_T [B, T, H]."""
        h = state["h"].transpose(0, 1).contiguous()
        hidden = (h, state["c"].transpose(0, 1).contiguous()) if "c" in state else h
        return self.rnn(x, hidden)[0]


class PlainDecoder(_Decoder):
    """Cho et al. 2014: the encoder's final state c is the one context vector, given at every step.

    s_t = RNN([y_{t-1}; c], s_{t-1}), s_0 = tanh(W c); o_t = tanh(W_o [s_t; y_{t-1}; c]).
    """

    def __init__(self, cfg: Seq2SeqConfig, enc_dim: int) -> None:
        super().__init__(cfg, enc_dim, cfg.emb_dim + enc_dim)
        self.pre_output = nn.Linear(cfg.hidden_dim + cfg.emb_dim + enc_dim, cfg.hidden_dim)

    def init_state(self, memory: State) -> State:
        return self._init_hidden(memory)

    def forward(self, prev: Tensor, state: State, memory: State) -> tuple[Tensor, State, None]:
        """One step: prev ids [B] -> output vector o_t [B, H], new state, no weights."""
        y = self.dropout(self.embed(prev))
        c = memory["context"]
        s, state = self._rnn_step(torch.cat([y, c], -1), state)
        o = torch.tanh(self.pre_output(torch.cat([s, y, c], -1)))
        return self.dropout(o), state, None

    parallel = True  # with teacher forcing no step depends on an earlier output

    def forward_all(self, tgt_in: Tensor, state: State, memory: State) -> tuple[Tensor, None]:
        """All steps at once: tgt_in [B, T] -> o_1..o_T [B, T, H] (same as T calls of forward)."""
        y = self.dropout(self.embed(tgt_in))
        c = memory["context"][:, None].expand(-1, y.shape[1], -1)
        s = self._rnn_all(torch.cat([y, c], -1), state)
        return self.dropout(torch.tanh(self.pre_output(torch.cat([s, y, c], -1)))), None


class AttentionDecoder(_Decoder):
    """A decoder that attends over all encoder states at every step.

    Bahdanau: a_t = attend(s_{t-1}, h), s_t = RNN([y_{t-1}; a_t], s_{t-1}),
    o_t = tanh(W_o [s_t; a_t; y_{t-1}]).
    Luong: s_t = RNN([y_{t-1}; h̃_{t-1}], s_{t-1}) (input feeding), a_t = attend(s_t, h),
    h̃_t = tanh(W_c [s_t; a_t]) = o_t.
    """

    def __init__(self, cfg: Seq2SeqConfig, enc_dim: int) -> None:
        luong = cfg.style == "luong"
        feed = luong and cfg.input_feeding
        if luong:
            rnn_input = cfg.emb_dim + (cfg.hidden_dim if feed else 0)
        else:
            rnn_input = cfg.emb_dim + enc_dim
        super().__init__(cfg, enc_dim, rnn_input)
        self.luong, self.feed = luong, feed
        # Luong without input feeding: attention needs s_t only, so all steps run at once.
        self.parallel = luong and not feed
        score = "concat" if cfg.attention == "additive" else cfg.attention
        key_dim = enc_dim
        # dot products need keys of the query's size: project h_i once per sentence.
        self.key_proj = None
        if score in ("dot", "scaled_dot") and enc_dim != cfg.hidden_dim:
            self.key_proj = nn.Linear(enc_dim, cfg.hidden_dim, bias=False)
            key_dim = cfg.hidden_dim
        self.attention = Attention(cfg.hidden_dim, key_dim, score, cfg.attn_dim)
        out_in = cfg.hidden_dim + enc_dim + (0 if self.luong else cfg.emb_dim)
        self.pre_output = nn.Linear(out_in, cfg.hidden_dim)

    def prepare(self, memory: State) -> State:
        """Per-sentence work done once, not at every step: key projections."""
        keys = memory["states"] if self.key_proj is None else self.key_proj(memory["states"])
        memory = {**memory, "keys": keys}
        proj = self.attention.project_keys(keys)
        if proj is not None:
            memory["keys_proj"] = proj
        return memory

    def init_state(self, memory: State) -> State:
        state = self._init_hidden(memory)
        if self.feed:
            state["feed"] = memory["states"].new_zeros(
                memory["states"].shape[0], self.cfg.hidden_dim
            )
        return state

    def _attend(self, query: Tensor, memory: State) -> tuple[Tensor, Tensor]:
        return self.attention(
            query, memory["keys"], memory["states"], memory["mask"], memory.get("keys_proj")
        )

    def forward(self, prev: Tensor, state: State, memory: State) -> tuple[Tensor, State, Tensor]:
        """One step: prev ids [B] -> o_t [B, H], new state, weights α_t [B, S]."""
        y = self.dropout(self.embed(prev))
        if self.luong:
            x = torch.cat([y, state["feed"]], -1) if self.feed else y
            s, new = self._rnn_step(x, state)
            context, weights = self._attend(s, memory)
            o = torch.tanh(self.pre_output(torch.cat([s, context], -1)))
            if self.feed:
                new["feed"] = o
        else:
            context, weights = self._attend(state["h"][:, -1], memory)
            s, new = self._rnn_step(torch.cat([y, context], -1), state)
            o = torch.tanh(self.pre_output(torch.cat([s, context, y], -1)))
        return self.dropout(o), new, weights

    def forward_all(self, tgt_in: Tensor, state: State, memory: State) -> tuple[Tensor, Tensor]:
        """Luong without input feeding, all steps at once: o [B, T, H], α [B, T, S]."""
        if not self.parallel:
            raise InvalidInputError(
                "only Luong-style decoders without input feeding run all steps at once"
            )
        y = self.dropout(self.embed(tgt_in))
        s = self._rnn_all(y, state)
        context, weights = self._attend(s, memory)
        return self.dropout(torch.tanh(self.pre_output(torch.cat([s, context], -1)))), weights


def _check_ids(ids: Tensor, vocab_size: int, name: str) -> None:
    if ids.dtype not in (torch.int64, torch.int32) or (
        ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size)
    ):
        raise InvalidInputError(
            f"{name} must hold integer token ids in [0, {vocab_size}); got {ids.dtype} values "
            f"in [{int(ids.min()) if ids.numel() else '-'}, {int(ids.max()) if ids.numel() else '-'}]"
        )


def check_source(src: Tensor, src_lengths: Tensor, vocab_size: int) -> None:
    """A padded source batch any encoder accepts: ids [B>=1, S] in the vocabulary, lengths [B]
    between 1 and S."""
    if src.dim() != 2 or src_lengths.shape != src.shape[:1]:
        raise InvalidInputError(
            f"src must be [B, S] ids with src_lengths [B]; got {tuple(src.shape)} and "
            f"{tuple(src_lengths.shape)}"
        )
    if src.shape[0] == 0:
        raise InvalidInputError("src is an empty batch: give at least one source sentence")
    if int(src_lengths.min()) < 1 or int(src_lengths.max()) > src.shape[1]:
        raise InvalidInputError(
            f"src_lengths must be between 1 and the padded length {src.shape[1]}; got "
            f"{src_lengths.tolist()[:8]} (every source sentence needs at least one token)"
        )
    _check_ids(src, vocab_size, "src")


class Seq2Seq(nn.Module):
    """Encoder + decoder (plain or attention), trained with teacher forcing.

    Search (greedy, beam) uses :meth:`encode`, :meth:`init_state` and :meth:`decode_step`.
    """

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        dec = PlainDecoder if cfg.attention == "none" else AttentionDecoder
        self.decoder = dec(cfg, self.encoder.output_dim)

    @property
    def has_attention(self) -> bool:
        return self.config.attention != "none"

    @property
    def max_source_tokens(self) -> int:
        """The longest source sentence, in tokens before its <eos>."""
        return self.config.max_len

    def encode(self, src: Tensor, src_lengths: Tensor) -> State:
        """Memory for decoding: ``states`` [B, S, Eo], ``mask`` [B, S] (True at real tokens),
        ``final`` [B, L, Eo], ``context`` [B, Eo] (top layer's final state), and what the decoder
        precomputes (``keys``, ``keys_proj``)."""
        check_source(src, src_lengths, self.config.src_vocab_size)
        states, final, final_c = self.encoder(src, src_lengths)
        mask = torch.arange(src.shape[1], device=src.device)[None, :] < src_lengths[:, None]
        memory = {"states": states, "mask": mask, "final": final, "context": final[:, -1]}
        if final_c is not None:
            memory["final_c"] = final_c
        if isinstance(self.decoder, AttentionDecoder):
            memory = self.decoder.prepare(memory)
        return memory

    def init_state(self, memory: State) -> State:
        return self.decoder.init_state(memory)

    def decode_step(
        self, prev: Tensor, state: State, memory: State
    ) -> tuple[Tensor, State, Tensor | None]:
        """log p(y_t | y_<t, x) [B, V], the new state and α_t [B, S] (None without attention)."""
        o, state, weights = self.decoder(prev, state, memory)
        # fp32 log-probabilities under bf16 autocast too: search sums them over many steps
        return F.log_softmax(self.decoder.out(o).float(), dim=-1), state, weights

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        teacher_forcing: float = 1.0,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits for every target position.

        Args:
            src: [B, S] ids; src_lengths: [B].
            tgt_in: decoder inputs ``<bos> y_1 … y_{T-1}``, [B, T].
            teacher_forcing: probability (per sentence and step) of feeding the true previous
                token rather than the model's own prediction.

        Returns:
            logits [B, T, V] and attention weights [B, T, S] (None for the plain decoder).
        """
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0] or tgt_in.shape[1] < 1:
            raise InvalidInputError(
                f"tgt_in must be [B={src.shape[0]}, T>=1] ids; got shape {tuple(tgt_in.shape)}"
            )
        _check_ids(tgt_in, self.config.tgt_vocab_size, "tgt_in")
        memory = self.encode(src, src_lengths)
        state = self.init_state(memory)
        if teacher_forcing >= 1.0 and self.decoder.parallel:
            o, weights = self.decoder.forward_all(tgt_in, state, memory)
            return self.decoder.out(o), weights
        T = tgt_in.shape[1]
        outputs, weights, logits = [], [], []
        prev = tgt_in[:, 0]
        for t in range(T):
            o, state, w = self.decoder(prev, state, memory)
            if w is not None:
                weights.append(w)
            if teacher_forcing >= 1.0:
                outputs.append(o)
                if t + 1 < T:
                    prev = tgt_in[:, t + 1]
                continue
            step_logits = self.decoder.out(o)
            logits.append(step_logits)
            if t + 1 < T:
                use_true = torch.rand(prev.shape[0], device=prev.device) < teacher_forcing
                prev = torch.where(use_true, tgt_in[:, t + 1], step_logits.argmax(-1))
        # One big output projection for all steps is much faster than T small ones.
        out = self.decoder.out(torch.stack(outputs, 1)) if outputs else torch.stack(logits, 1)
        return out, (torch.stack(weights, 1) if weights else None)


def _cfg(**kw: Any) -> Seq2SeqConfig:
    return Seq2SeqConfig(**kw)


_SMALL = dict(
    src_vocab_size=64, tgt_vocab_size=64, emb_dim=64, hidden_dim=128, dropout=0.1, max_len=64
)
_TINY = dict(
    src_vocab_size=24, tgt_vocab_size=24, emb_dim=16, hidden_dim=24, dropout=0.0, max_len=32
)

# Tiny configs exist for tests; small ones for the synthetic tasks; multi30k ones for translation.
register_model("seq2seq_tiny_plain", _cfg(**_TINY, attention="none"), Seq2Seq)
register_model("seq2seq_tiny_attn", _cfg(**_TINY, attention="concat"), Seq2Seq)
register_model(
    "seq2seq_tiny_lstm_luong",
    _cfg(**_TINY, rnn="lstm", attention="general", style="luong", num_layers=2),
    Seq2Seq,
)
register_model("seq2seq_gru_plain_small", _cfg(**_SMALL, attention="none"), Seq2Seq)
register_model("seq2seq_gru_attn_small", _cfg(**_SMALL, attention="concat"), Seq2Seq)
register_model(
    "seq2seq_lstm_luong_small",
    _cfg(**_SMALL, rnn="lstm", attention="general", style="luong"),
    Seq2Seq,
)
register_model("seq2seq_gru_plain_multi30k", _cfg(attention="none"), Seq2Seq)
register_model("seq2seq_gru_attn_multi30k", _cfg(attention="concat"), Seq2Seq)
register_model("seq2seq_gru_luong_multi30k", _cfg(attention="general", style="luong"), Seq2Seq)
