"""The ``keymodels`` command line: a thin layer that parses arguments and calls the library.

Each command lives in its own module here with ``add_parser(subparsers)``; errors exit with code 2
and one line on stderr (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import InvalidInputError, KeymodelsError
from ..runguard import TrainingInterrupted

# One module per command (or group of commands); each adds its sub-parsers.
COMMAND_MODULES = ["models", "demo", "convert", "train", "explain", "seq2seq", "serve"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def format_help(self) -> str:
        return super().format_help().replace("``", "'")  # descriptions are module docstrings


def add_precision_argument(parser: argparse.ArgumentParser, what: str = "the job") -> None:
    """``--precision auto|fp32|bf16``, one spelling and one help text for every command."""
    from ..runtime import PRECISIONS

    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help=f"compute precision of {what}: auto (default) times fp32 and bf16 on this machine "
        "and keeps the faster; weights stay fp32",
    )


def positive_int(value: str) -> int:
    """An argparse type: an integer >= 1 (``--threads``, ``--max-steps``, ``--top-k`` …)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {number}")
    return number


def finite_float(value: str) -> float:
    """An argparse type: a float that is not NaN or infinite (``--alpha`` …)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {value!r}")
    return number


def png_path(value: str | os.PathLike, what: str, example: str = "figure.png") -> Path:
    """``value`` as the path of a PNG to write, refusing a folder or another file type.

    Raises:
        InvalidInputError: ``value`` is a folder (or ends in a slash), or does not end in .png
            (matplotlib would write another format, or add .png to a name without a suffix).
    """
    text, path = str(value), Path(value)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise InvalidInputError(
            f"{what} {text} is a folder; give the PNG file to write, e.g. {path / example}"
        )
    if path.suffix.lower() != ".png":
        raise InvalidInputError(
            f"{what} {text}: the figure is written as PNG; give a file name ending in .png, "
            f"e.g. {path.with_suffix('.png')}"
        )
    return path


def add_hidden_alias(parser: argparse.ArgumentParser, alias: str, action: argparse.Action) -> None:
    """Accept ``alias`` as an old spelling of ``action``'s option, left out of ``--help``.

    A renamed flag keeps working in scripts, while the help shows one name for one idea.

    Args:
        parser: the parser that holds ``action``.
        alias: the old option string, e.g. ``"--clip"``.
        action: what ``add_argument`` returned for the documented option.
    """
    parser.add_argument(
        alias,
        dest=action.dest,
        type=action.type,
        choices=action.choices,
        # SUPPRESS: the documented option's default stands when neither spelling is given.
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def add_compile_argument(parser: argparse.ArgumentParser) -> None:
    """``--compile auto|on|off`` for inference commands."""
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile the model: auto (default) compiles only when the work is long enough "
        "to repay the compile time; compiled graphs are cached between runs",
    )


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Give every (sub-)command its full name, so errors say ``keymodels seq2seq train: …``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(command_name=sub.prog)
                _name_commands(sub)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="keymodels",
        description="keymodels: RNN seq2seq with attention and the Vision Transformer: train, "
        "evaluate, explain, convert.",
    )
    parser.add_argument("--version", action="version", version=f"keymodels {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    _name_commands(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Library log lines are plain messages on stderr; the precision choice is always shown.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("keymodels.runtime").setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`keymodels eval RUN | head -2`): not an error of ours. Point
        # stdout at devnull so that flushing it at exit does not raise again.
        with contextlib.suppress(OSError, ValueError):  # stdout may be no file (in-process)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("keymodels: interrupted", file=sys.stderr)
        return 130
    except TrainingInterrupted as e:
        print(f"{args.command_name}: {e}", file=sys.stderr)
        return 128 + e.signum
    except (KeymodelsError, ValueError, OSError) as e:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{args.command_name}: error: {message}", file=sys.stderr)
        return 2
