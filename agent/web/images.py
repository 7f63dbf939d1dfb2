"""`/images/<inspection>/<file>`: the saved images of inspected parts, and nothing else.

The one route that reads files named in a request, so it takes nothing on trust: the target is
split before percent-decoding (an encoded `/` cannot make a third segment), each segment is
decoded once and must be a plain name (no separator, no `..`, no NUL, no leading dot); the
inspection must be configured with an image folder; the file is opened inside that folder
with O_NOFOLLOW (a symlink, even one pointing back inside, is refused), must be a regular file
of at most MAX_IMAGE bytes, and its first bytes must say JPEG or PNG (the Content-Type comes
from them, not from the name). Every refusal is the same 404, so a probe learns nothing about
what exists.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from agent.web.verdicts import IMAGE_NAME

PREFIX = "/images/"
MAX_IMAGE = 16 * 1024 * 1024  # bytes; a camera frame saved as JPEG is far smaller

_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


class NoImage(Exception):
    """The request names no image this route serves (the reason is for logs, not clients)."""


def _segment(raw: str) -> str:
    text = unquote(raw, errors="strict")
    if not text or text in (".", "..") or text.startswith("."):
        raise NoImage(f"bad name {raw!r}")
    if any(c in text for c in "/\\\0") or not text.isprintable():
        raise NoImage(f"bad name {raw!r}")
    return text


def image_target(path: str, folders: Mapping[str, Path | None]) -> Path:
    """The file `/images/<inspection>/<file>` names (not opened yet). Raises NoImage."""
    if not path.startswith(PREFIX):
        raise NoImage("not an image path")
    parts = path[len(PREFIX) :].split("/")
    if len(parts) != 2:
        raise NoImage("want /images/<inspection>/<file>")
    try:
        inspection, name = _segment(parts[0]), _segment(parts[1])
    except UnicodeDecodeError:
        raise NoImage("not UTF-8") from None
    folder = folders.get(inspection)
    if folder is None:
        raise NoImage(f"no image folder for inspection {inspection!r}")
    if not IMAGE_NAME.fullmatch(name):
        raise NoImage(f"not an image name: {name!r}")
    return folder / name


def read_image(path: str, folders: Mapping[str, Path | None]) -> tuple[bytes, str]:
    """The bytes and Content-Type of the image `path` names (blocking). Raises NoImage."""
    target = image_target(path, folders)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:  # missing, a symlink (ELOOP), no permission
        raise NoImage(f"{target}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)  # of what was opened: no race with a rename after a check
        if not stat.S_ISREG(info.st_mode):
            raise NoImage(f"{target}: not a regular file")
        if info.st_size > MAX_IMAGE:
            raise NoImage(f"{target}: {info.st_size} bytes, more than {MAX_IMAGE}")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_IMAGE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_IMAGE:  # it grew after the look
        raise NoImage(f"{target}: more than {MAX_IMAGE} bytes")
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return data, content_type
    raise NoImage(f"{target}: neither JPEG nor PNG")
