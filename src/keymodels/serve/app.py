"""The web app of ``keymodels serve``: the explorer page and the JSON API over the run services.

Every error is JSON, ``{"error": message, "status": code}``: 4xx for bad input, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidInputError, KeymodelsError
from .service import (
    MAX_ALPHA,
    MAX_BEAM,
    SERVE_MAX_PIXELS,
    ImageRun,
    NotFoundError,
    ServerBusyError,
    Service,
    TranslationRun,
    load_services,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# The only files the server reads besides the runs' own: named here, never joined from a URL.
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
MAX_UPLOAD_BYTES = 10 * 1024 * 1024

Upload = Annotated[UploadFile | None, File()]
Field_ = Annotated[str | None, Form()]  # parsed by _optional_int, for errors in our words


class BodyTooLarge(HTTPException):
    """A request body over the server's limit; an HTTPException so that FastAPI passes it on."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is {size:,} bytes or more, over the server's limit of {limit:,} "
            "bytes; send a smaller image (or start the server with a larger --max-upload-mb)",
        )


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413) as they arrive, before they are parsed or
    spooled to disk: by their Content-Length when sent, else by counting what is received."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await _send_json(send, 413, BodyTooLarge(int(length), self.max_bytes).detail)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(received, self.max_bytes)
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, message: str) -> None:
    response = _error(status, message)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


class TranslateRequest(BaseModel):
    """The body of ``POST /api/runs/{run}/translate``."""

    text: str
    beam: int = Field(5, ge=1, le=MAX_BEAM)
    n_best: int = Field(1, ge=1, le=MAX_BEAM)
    alpha: float = Field(0.6, ge=0.0, le=MAX_ALPHA)
    too_long: Literal["error", "truncate"] = "error"


def _optional_int(name: str, value: str | None) -> int | None:
    """A form field that may be empty ("" = not given, e.g. the mean of the heads)."""
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number; got {value!r}") from None


def create_app(
    runs: Sequence[str | Path] | dict[str, Service],
    precision: str = "auto",
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = SERVE_MAX_PIXELS,
    max_batch: int = 16,
) -> FastAPI:
    """The FastAPI app serving ``runs`` (run folders, each loaded once here, or loaded services).

    Raises:
        CheckpointError, InvalidInputError: a folder that is not a trained run (see
            :func:`~keymodels.serve.service.load_services`).
    """
    owned = not isinstance(runs, dict)
    services = load_services(runs, precision, max_pixels, max_batch) if owned else runs

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:  # the models this app loaded: stop their worker threads with the server
            for found in services.values():
                found.batcher.close()

    # Swagger's /docs page loads its scripts from a CDN, which an offline machine cannot reach;
    # the API is documented in docs/serve.md and described by /openapi.json.
    app = FastAPI(title="keymodels serve", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.services = services
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)

    def service(run: str) -> Service:
        if run not in services:
            raise NotFoundError(f"no run named {run!r}; this server serves: {', '.join(services)}")
        return services[run]

    def image_run(run: str) -> ImageRun:
        found = service(run)
        if not isinstance(found, ImageRun):
            raise InvalidInputError(f"run {run!r} is a translation model; use its /translate")
        return found

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in STATIC_FILES:
            raise NotFoundError(f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    @app.get("/api/runs")
    def list_runs() -> dict[str, Any]:
        """The runs this server serves."""
        return {
            "runs": [
                {
                    "name": name,
                    "kind": s.kind,
                    "model": card["model"],
                    "title": f"{name} ({card['model']})",
                }
                for name, s in services.items()
                for card in [s.card()]
            ]
        }

    @app.get("/api/runs/{run}")
    def card(run: str) -> dict[str, Any]:
        """The model card: config, parameters, accuracy, training curves, samples or examples."""
        return service(run).card()

    @app.get("/api/runs/{run}/samples/{name}")
    def sample(run: str, name: str) -> Response:
        """A bundled sample image (only the names the card lists)."""
        return Response(image_run(run).sample_bytes(name), media_type="image/png")

    def read_input(found: ImageRun, image: UploadFile | None, sample: str | None) -> Any:
        data = image.file.read() if image is not None else None
        return found.image_input(data, sample, (image.filename or "") if image is not None else "")

    @app.post("/api/runs/{run}/predict")
    def predict(
        run: str,
        image: Upload = None,
        sample: Field_ = None,
        top_k: Field_ = None,
    ) -> dict[str, Any]:
        """Top-k classes, the input as the model sees it, rollout and every layer's/head's map."""
        found = image_run(run)
        k = _optional_int("top_k", top_k)
        return found.predict(read_input(found, image, sample), 5 if k is None else k)

    @app.post("/api/runs/{run}/explain")
    def explain(
        run: str,
        image: Upload = None,
        sample: Field_ = None,
        method: Annotated[str, Form()] = "rollout",
        layer: Field_ = None,
        head: Field_ = None,
        patch: Field_ = None,
        class_index: Field_ = None,
    ) -> dict[str, Any]:
        """One map: rollout, heads, grad-rollout (of a class) or patch (where a patch attends)."""
        found = image_run(run)
        x = read_input(found, image, sample)
        return found.explain(
            x,
            method,
            _optional_int("layer", layer),
            _optional_int("head", head),
            _optional_int("patch", patch),
            _optional_int("class_index", class_index),
        )

    @app.post("/api/runs/{run}/translate")
    def translate(run: str, body: TranslateRequest) -> dict[str, Any]:
        """The translation, n-best list and source × target attention (every layer and head)."""
        found = service(run)
        if not isinstance(found, TranslationRun):
            raise InvalidInputError(f"run {run!r} is an image model; use its /predict")
        return found.translate(body.text, body.beam, body.n_best, body.alpha, body.too_long)

    @app.exception_handler(NotFoundError)
    def not_found(_: Request, e: NotFoundError) -> JSONResponse:
        return _error(404, str(e))

    @app.exception_handler(ServerBusyError)
    def busy(_: Request, e: ServerBusyError) -> JSONResponse:
        return _error(503, str(e))

    @app.exception_handler(KeymodelsError)
    def bad_input(_: Request, e: KeymodelsError) -> JSONResponse:
        return _error(400, str(e))

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        parts = [
            f"{'.'.join(str(x) for x in err['loc'][1:]) or 'body'}: {err['msg']}"
            for err in e.errors()
        ]
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(HTTPException)
    def http_error(request: Request, e: HTTPException) -> JSONResponse:
        if e.status_code == 404:
            return _error(404, f"no such page or API route: {request.url.path}")
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    def internal(_: Request, e: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error(500, f"internal error ({type(e).__name__}); the server's log has the details")

    return app


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """``app`` on a real uvicorn server in a background thread (port 0: a free one), for tests,
    benchmarks and notebooks; yields its base URL and stops the server on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="keymodels-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


__all__ = ["MAX_UPLOAD_BYTES", "BodyLimit", "TranslateRequest", "create_app", "running"]
