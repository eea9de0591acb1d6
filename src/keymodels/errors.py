"""The errors keymodels raises on purpose.

Each one carries a message that says what was wrong, what was expected and how to fix it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class KeymodelsError(Exception):
    """Base of every error raised on purpose by keymodels (the CLI prints these in one line)."""


class InvalidInputError(KeymodelsError, ValueError):
    """A tensor, config value or name that does not fit what the function expects."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> InvalidInputError:
    """An error for an unknown registry name that lists the known ones and suggests the closest."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listed = (
        ", ".join(known)
        if len(known) <= 12
        else ", ".join(known[:10]) + f", … ({len(known)} in all)"
    )
    return InvalidInputError(f"unknown {kind} {name!r}.{hint} Known: {listed}.")


def reject_unknown_fields(kind: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise :class:`InvalidInputError` naming each of ``given`` not in ``valid``, listing those.

    Every ``from_dict`` and override check uses it: dropping an unknown key instead would turn a
    typo (``"dept"``), or a config written by a newer version, into a silent default.
    """
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if not unknown:
        return
    close = {m for k in unknown for m in difflib.get_close_matches(k, valid, n=1, cutoff=0.6)}
    hint = f" Did you mean {', '.join(map(repr, sorted(close)))}?" if close else ""
    raise InvalidInputError(
        f"unknown {kind} field(s) {unknown}; valid fields: {', '.join(valid)}.{hint}"
    )


def check_number(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    """Raise :class:`InvalidInputError` unless ``value`` is finite and in range.

    Args:
        name: the parameter, as the message names it.
        value: the number to check.
        low: the smallest value allowed (excluded with ``low_open``); None: no bound.
        high: the bound ``value`` must stay below (excluded); None: no bound.
        low_open: ``value`` must be greater than ``low``, not equal to it.
    """
    ok = math.isfinite(value)
    if low is not None:
        ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and value < high
    if ok:
        return
    if low is not None and high is not None:
        expected = f"in {'(' if low_open else '['}{low:g}, {high:g})"
    elif low is not None:
        expected = f"{'>' if low_open else '>='} {low:g}"
    else:
        expected = f"< {high:g}" if high is not None else ""
    raise InvalidInputError(f"{name} must be a finite number {expected}; got {value}".rstrip())
