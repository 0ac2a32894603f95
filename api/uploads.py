"""What the routes that take Arrow uploads share (external runs' steps, tracked runs' metrics): the body read
under its own size limit, the answer to a batch, and how a refused one is reported."""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from api.schemas import NOT_FOUND, HTTPError
from optibench.settings import Settings
from services.external import ARROW_STREAM, BadInput, Finished, NotArrow, TooFast

FINISHED: dict[int | str, dict[str, Any]] = {
    409: {"model": HTTPError, "description": "the run is finished: it takes no more rows"}
}


class IngestOut(BaseModel):
    run_id: str
    status: str = Field(description="'running', or 'cancelled': the client stops training")
    cancelled: bool
    rows: int = Field(description="rows in the batch")
    stored: int = Field(description="rows (or values) new to the server (a retried batch: 0)")


#: the decorator arguments of a route taking an Arrow upload: its answers and its body in the OpenAPI schema
ARROW_UPLOAD: dict[str, Any] = {
    "response_model": IngestOut,
    "responses": {
        **NOT_FOUND,
        **FINISHED,
        413: {"model": HTTPError, "description": "over OPTIBENCH_INGEST_MAX_BODY_BYTES"},
        415: {"model": HTTPError, "description": f"not {ARROW_STREAM}"},
        429: {"model": HTTPError, "description": "over the team's ingest limit; see Retry-After"},
    },
    "openapi_extra": {
        "requestBody": {"content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}}, "required": True}
    },
}


def too_large(settings: Settings) -> HTTPException:
    return HTTPException(
        413,
        f"a batch is at most {settings.ingest_max_body_bytes} bytes (OPTIBENCH_INGEST_MAX_BODY_BYTES): send fewer rows",
    )


async def read_upload(request: Request, settings: Settings) -> bytes:
    """An upload's body, refused with 413 as soon as it is over OPTIBENCH_INGEST_MAX_BODY_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.ingest_max_body_bytes:
        raise too_large(settings)
    pieces, size = [], 0
    async for piece in request.stream():
        size += len(piece)
        if size > settings.ingest_max_body_bytes:
            raise too_large(settings)
        pieces.append(piece)
    return b"".join(pieces)


@contextmanager
def refusals_as_http() -> Iterator[None]:
    """The services' refusals of a client-run request as their HTTP answers: 422 at the field it names, 409 for
    a finished run, 415 for a body that is not an Arrow stream, 429 (with Retry-After) over the team's limit."""
    try:
        yield
    except BadInput as exc:
        raise RequestValidationError([{"type": "value_error", "loc": exc.loc, "msg": str(exc)}]) from exc
    except Finished as exc:
        raise HTTPException(409, str(exc)) from exc
    except NotArrow as exc:
        raise HTTPException(415, str(exc)) from exc
    except TooFast as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(math.ceil(exc.retry_after_s))}) from exc
