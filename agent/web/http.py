"""HTTP/1.1 on the wire, pure: the request head parsed into a `Request`, and the bytes of a
response. One request per connection, so every response says `Connection: close`; a request
head is ASCII, at most MAX_HEAD bytes, and a control character in it is refused (smuggling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

MAX_HEAD = 8192  # bytes of request line and headers; a browser sends well under 2 KiB
# A field value may hold visible ASCII, spaces and tabs; NUL, CR or LF inside one is smuggling.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class HttpError(Exception):
    """A request head refused before routing: the status to answer and why, in one line."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head: the path without its query, header names in lower case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def parse_head(head: bytes) -> Request:
    """The request line and headers (up to the blank line). Raises HttpError(400) when bad."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "the request head is not ASCII") from None
    lines = text.removesuffix("\r\n\r\n").split("\r\n")
    if any(CONTROL.search(line) for line in lines):
        raise HttpError(HTTPStatus.BAD_REQUEST, "control character in the request head")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, _ = parts
    if not target.startswith("/"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the request target must be a path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed header line")
        key = name.lower()
        joiner = "; " if key == "cookie" else ", "
        headers[key] = f"{headers[key]}{joiner}{value.strip()}" if key in headers else value.strip()
    url = urlsplit(target)
    return Request(method, url.path, parse_qs(url.query), headers)


def response(
    status: HTTPStatus,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
    *,
    length: bool = True,
    cache: str = "no-store",
) -> bytes:
    headers = [
        ("Content-Type", content_type),
        ("Cache-Control", cache),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Connection", "close"),
        *(extra or []),
    ]
    if length:
        headers.append(("Content-Length", str(len(body))))
    head = f"HTTP/1.1 {status.value} {status.phrase}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


def json_response(
    status: HTTPStatus, data: Any, extra: list[tuple[str, str]] | None = None
) -> bytes:
    # orjson writes NaN as null: a bad-quality reading must not break the page's JSON.parse
    return response(status, orjson.dumps(data), "application/json", extra)


def error_response(
    status: HTTPStatus, message: str, extra: list[tuple[str, str]] | None = None
) -> bytes:
    """The JSON answer to a refused or failed request: `{"error": message}`."""
    return json_response(status, {"error": message}, extra)
