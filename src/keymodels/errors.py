"""The errors keymodels raises on purpose.

Each one carries a message that says what was wrong, what was expected and how to fix it.
"""

from __future__ import annotations

import difflib
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
