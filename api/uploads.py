"""What the routes that take Arrow uploads share (external runs' steps, tracked runs' metrics): the body read
under its own size limit, the answer to a batch, and how a refused one is reported."""

from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from api.schemas import NOT_FOUND, HTTPError
from optibench.settings import Settings
from services.external import ARROW_STREAM, BadInput

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


def bad_input(exc: BadInput) -> RequestValidationError:
    """A refused batch as a 422 at the field it names."""
    return RequestValidationError([{"type": "value_error", "loc": exc.loc, "msg": str(exc)}])
