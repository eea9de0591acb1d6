"""How a seq2seq model is trained: :class:`TrainConfig`, saved with every checkpoint.

Kept apart from the engine so that loading a run (``keymodels.runs``) does not import training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError, check_number, reject_unknown_fields
from ..runguard import NonFiniteGuard
from .data import SYNTHETIC_TASKS, TASKS

# The value of "kind" in a seq2seq checkpoint's meta (also keymodels.rundir.SEQ2SEQ_KIND).
KIND = "keymodels.seq2seq"
SCHEDULES = ("plateau", "cosine", "inverse_sqrt")
VOCABS = ("word", "bpe", "unigram")
# Fields renamed since checkpoints were first written: old name -> new name.
RENAMED_FIELDS = {"len_max": "synthetic_max_len"}


@dataclass
class TrainConfig:
    """How to train; saved with every checkpoint so ``--resume`` and ``eval`` rebuild the same data."""

    task: str = "reverse"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    # "plateau": halve lr when the validation score stops rising; "cosine": anneal it per step to
    # zero over ``epochs``, the better use of a fixed budget (Li et al. 2020, budgeted training).
    # "inverse_sqrt": Vaswani et al.'s warmup then lr ∝ 1/√step, peak ``lr`` at step ``warmup``.
    schedule: str = "plateau"
    warmup: int = 0  # steps of linear warmup (cosine, inverse_sqrt)
    adam_beta2: float = 0.999  # the Transformer paper used 0.98
    clip: float = 1.0
    teacher_forcing: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    max_len: int = 50  # longest training sentence kept (tokens), every task
    too_long: str = "truncate"  # or "drop" / "error" for training pairs over max_len
    num_workers: int = 0
    max_minutes: float | None = None  # stop after the epoch that would overrun this budget
    on_nonfinite: str = "stop"  # a NaN/inf loss: "stop" (keep the last checkpoint) or "skip"
    # synthetic tasks
    train_size: int = 20000
    val_size: int = 1000
    min_len: int = 3
    synthetic_max_len: int = 12  # longest synthetic sequence generated
    num_symbols: int = 20
    # translation
    data_dir: str = "../shared/data/multi30k"
    src_lang: str = "de"
    tgt_lang: str = "en"
    min_freq: int = 2
    max_vocab: int | None = None
    lowercase: bool = False
    # vocabulary: words, or subword pieces (BPE / unigram) learned from the training split
    vocab: str = "word"
    vocab_size: int = 8000  # subword vocabularies: entries per vocabulary, specials included
    joint_vocab: bool = False  # one subword vocabulary for both languages
    subword_model: str | None = None  # a tokenizers JSON file to use instead of training one
    val_beam: int = 1  # greedy on validation during training; beam at eval time

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InvalidInputError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise InvalidInputError(
                f"teacher_forcing must be in [0, 1]; got {self.teacher_forcing}"
            )
        NonFiniteGuard(self.on_nonfinite)  # validates the policy
        if self.schedule not in SCHEDULES:
            raise InvalidInputError(f"schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        if self.vocab not in VOCABS:
            raise InvalidInputError(f"vocab must be one of {VOCABS}; got {self.vocab!r}")
        if self.warmup < 0:
            raise InvalidInputError(f"warmup must be >= 0 steps; got {self.warmup}")
        if self.warmup and self.schedule == "plateau":
            raise InvalidInputError(
                "warmup needs a step schedule: pass --schedule cosine or inverse_sqrt with --warmup"
            )
        if self.schedule == "inverse_sqrt" and self.warmup < 1:
            raise InvalidInputError(
                "the inverse_sqrt schedule peaks after its warmup: give --warmup N (N >= 1 steps, "
                "e.g. 4000 as the paper, or about one epoch)"
            )
        if self.vocab == "word" and (self.joint_vocab or self.subword_model):
            raise InvalidInputError(
                "--joint-vocab and --subword-model are for subword vocabularies: add --vocab bpe "
                "or --vocab unigram"
            )
        if self.vocab_size < 5:
            raise InvalidInputError(
                f"vocab_size must hold the 4 specials and at least one piece; got {self.vocab_size}"
            )
        for name in ("epochs", "batch_size", "max_len", "train_size", "val_size", "min_len",
                     "synthetic_max_len", "num_symbols", "val_beam"):  # fmt: skip
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1; got {getattr(self, name)}")
        # Checked here, not after training starts: a NaN or infinite lr only shows as a
        # non-finite loss at the first step, answered with a misleading resume hint.
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("clip", self.clip, low=0.0)
        check_number("adam_beta2", self.adam_beta2, low=0.0, high=0.9999)
        check_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0)
        if self.max_minutes is not None:
            check_number("max_minutes", self.max_minutes, low=0.0, low_open=True)
        if self.num_workers < 0:
            raise InvalidInputError(
                f"num_workers must be >= 0 (0: load in the main process); got {self.num_workers}"
            )

    @property
    def synthetic(self) -> bool:
        return self.task in SYNTHETIC_TASKS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of :meth:`to_dict` (old field names read too); an unknown key is an error,
        not silently dropped."""
        d = {RENAMED_FIELDS.get(k, k): v for k, v in d.items()}
        reject_unknown_fields("train config", d, (f.name for f in dataclasses.fields(cls)))
        return cls(**d)
