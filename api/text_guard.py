"""Text that no backend can store and no JSON encoder can write, refused at the edge with a 422.

A NUL character (PostgreSQL's text and jsonb hold none) and a lone UTF-16 surrogate (not Unicode: no
UTF-8 encoder takes it) are refused wherever text enters: the path, the query string, header values,
JSON and form bodies. One ASGI middleware looks before any route, dependency or database access. On
the hot paths it costs a few byte searches: a JSON body is parsed here only when its raw bytes hold a
``\\u0000`` or ``\\ud800``-``\\udfff`` escape, to name the field; form bodies, paths and query strings
are percent-decoded only when they hold a ``%`` or a byte outside ASCII."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from fastapi.routing import iter_route_contexts
from starlette.responses import JSONResponse
from starlette.routing import Mount, Router, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import printable

#: the JSON escapes that may stand for a NUL or a (lone) surrogate
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF][0-9a-fA-F]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: a body with this many bad strings is answered with the first ones
MAX_ERRORS = 20
NUL_MESSAGE = "Text must not contain a NUL character (\\u0000)"
SURROGATE_MESSAGE = "Text must not contain a lone UTF-16 surrogate (\\ud800-\\udfff): send valid Unicode"
NOT_UTF8_MESSAGE = "Text must be valid UTF-8 once percent-decoded (no lone surrogate, no broken byte sequence)"


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    if "\x00" in text:
        return NUL_MESSAGE
    if not text.isascii() and _SURROGATE.search(text):
        return SURROGATE_MESSAGE
    return None


def _bytes_problem(raw: bytes) -> str | None:
    """Why percent-decoded ``raw`` cannot be stored as text, or None."""
    if b"\x00" in raw:
        return NUL_MESSAGE
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8_MESSAGE
    return None


def _error(loc: list, message: str) -> dict[str, Any]:
    return {
        "type": "invalid_text",
        "loc": [printable(part) if isinstance(part, str) else part for part in loc],
        "msg": message,
    }


def _plain(raw: bytes) -> bool:
    """Nothing to decode: no escape, no byte outside printable ASCII."""
    return b"%" not in raw and b"\x00" not in raw and raw.isascii()


def _decoded_name(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "backslashreplace")


def _pairs_errors(raw: bytes, where: str) -> list[dict]:
    """A query string or a form body: ``name=value`` pairs joined by ``&``."""
    if _plain(raw) or _bytes_problem(unquote_to_bytes(raw)) is None:
        return []
    errors = []  # then each pair, to name the bad one
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        problem = _bytes_problem(unquote_to_bytes(name.replace(b"+", b" ")))
        problem = problem or _bytes_problem(unquote_to_bytes(value.replace(b"+", b" ")))
        if problem:
            errors.append(_error([where, _decoded_name(name)], problem))
    return errors[:MAX_ERRORS]


def _walk(value: Any, loc: list, errors: list[dict]) -> None:
    if len(errors) >= MAX_ERRORS:
        return
    if isinstance(value, str):
        if problem := text_problem(value):
            errors.append(_error(loc, problem))
    elif isinstance(value, dict):
        for key, item in value.items():
            if problem := text_problem(key):
                errors.append(_error([*loc, key], "a key: " + problem))
            _walk(item, [*loc, key], errors)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, [*loc, index], errors)


def _json_errors(body: bytes) -> list[dict]:
    # a raw NUL or raw surrogate bytes make the body malformed JSON or not UTF-8: the app's own 422
    if b"\\u" not in body or not _SUSPECT_ESCAPE.search(body):
        return []
    try:
        document = json.loads(body)
    except ValueError:
        return []
    errors: list[dict] = []
    _walk(document, ["body"], errors)
    return errors


def _body_errors(body: bytes, content_type: bytes) -> list[dict]:
    if content_type.startswith(b"application/x-www-form-urlencoded"):
        return _pairs_errors(body, "body")
    if content_type.startswith(b"multipart/form-data"):
        return [_error(["body"], NUL_MESSAGE)] if b"\x00" in body else []
    return _json_errors(body)


class UnsafeTextGuard:
    """The middleware: a 422 naming where the bad text is, or the request as it came."""

    def __init__(self, app: ASGIApp, router: Router, max_body_bytes: int) -> None:
        self.app = app
        self.router = router
        self.max_body_bytes = max_body_bytes
        self._patterns: list[re.Pattern] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors = self._path_errors(scope) + _pairs_errors(scope.get("query_string", b""), "query")
        errors += [
            _error(["header", name.decode("latin-1")], NUL_MESSAGE)
            for name, value in scope["headers"]
            if b"\x00" in value
        ]
        if not errors and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            messages, body = await self._buffered_body(scope, receive)
            if body is not None:
                errors = _body_errors(body, _header(scope, b"content-type"))
            receive = _replay(messages, receive)
        if errors:
            await JSONResponse(status_code=422, content={"detail": errors[:MAX_ERRORS]})(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _path_errors(self, scope: Scope) -> list[dict]:
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        if _plain(raw):
            return []
        problem = _bytes_problem(unquote_to_bytes(raw))
        if problem is None:
            return []
        # the route's own parameters name the segment: match the path as decoded, bad bytes kept apart
        decoded = unquote(raw.decode("latin-1"), errors="surrogateescape")
        for pattern in self._path_patterns():
            if match := pattern.fullmatch(decoded):
                bad = [name for name, value in match.groupdict().items() if text_problem(value)]
                if bad:
                    return [_error(["path", name], problem) for name in bad]
        return [_error(["path"], problem)]

    def _path_patterns(self) -> list[re.Pattern]:
        """Every route's path as a regular expression whose groups are its parameters (built on the
        first bad path: no request needs them otherwise)."""
        if self._patterns is None:
            paths = [
                context.path + ("/{path:path}" if isinstance(context.original_route, Mount) else "")
                for context in iter_route_contexts(self.router.routes)
                if context.path is not None
            ]
            self._patterns = [re.compile(compile_path(path)[0].pattern.rstrip("$"), re.DOTALL) for path in paths]
        return self._patterns

    async def _buffered_body(self, scope: Scope, receive: Receive) -> tuple[list[Message], bytes | None]:
        """The body's messages as received, and the body; None when it is over the size limit (the app
        answers 413) or the client went away."""
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return [], None
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, None
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return messages, None
            if not message.get("more_body", False):
                break
        return messages, b"".join(message.get("body", b"") for message in messages)


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed
