"""``keymodels serve RUN [RUN ...]``: the attention explorer in the browser, and its JSON API.

Loads each run once and serves a page at http://127.0.0.1:7860 (docs/serve.md).
"""

from __future__ import annotations

import argparse
import logging

from ..errors import InvalidInputError
from ..serve.service import SERVE_MAX_PIXELS
from . import add_precision_argument, positive_int

log = logging.getLogger("keymodels.serve")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def run(args: argparse.Namespace) -> int:
    try:
        import python_multipart  # noqa: F401  (FastAPI needs it for uploads, and says so late)
        import uvicorn

        from ..serve.app import create_app
    except ImportError as e:
        raise InvalidInputError(
            f"keymodels serve needs FastAPI and uvicorn ({e.name} is missing); install them with "
            "pip install 'keymodels[serve]'"
        ) from e
    if not 1 <= args.port <= 65535:
        raise InvalidInputError(f"--port must be 1..65535; got {args.port}")
    app = create_app(
        args.runs,
        precision=args.precision,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        max_batch=args.max_batch,
    )
    if args.host not in LOCAL_HOSTS:
        log.warning(
            "serving on %s: anyone who can reach this machine can use the models (there is no "
            "login); bind to 127.0.0.1 (the default) to keep it local",
            args.host,
        )
    host = f"[{args.host}]" if ":" in args.host else args.host
    names = ", ".join(app.state.services)
    print(f"serving {names} at http://{host}:{args.port} (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _megabytes(value: str) -> float:
    try:
        mb = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in MB, e.g. 10; got {value!r}") from None
    if not 0 < mb <= 1024:
        raise argparse.ArgumentTypeError(f"expected a size in MB in (0, 1024]; got {value}")
    return mb


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="explore trained runs' attention in the browser", description=__doc__
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (image or translation)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it, with a "
        "warning)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--max-upload-mb",
        type=_megabytes,
        default=10.0,
        help="largest request body (an uploaded image) in MB (default 10)",
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=SERVE_MAX_PIXELS,
        help=f"largest image in pixels, read from its header before decoding (default "
        f"{SERVE_MAX_PIXELS:,}: a 4000×4000 photo)",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=16,
        help="most waiting requests run through a model together (default 16)",
    )
    add_precision_argument(p, "the models")
    p.set_defaults(func=run)
