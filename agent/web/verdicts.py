"""The inspections' verdicts as the page and `/metrics` need them: a latency histogram per
inspection and the latest rejects (NotOK) with the image the archive saved of each.

An inspector keeps only its latest verdict, and the store's copies may be gone (forwarded and
deleted) before anyone looks, so `VerdictLog` sees every verdict as it is emitted: the web
server adds its `record` to `Agent.event_listeners`, called after the store has the event.
`record` is the whole logic and takes a plain `Event`, so it is tested without a model.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agent.histogram import Histogram
from agent.model import Event, EventKind
from agent.snapshot import VerdictFigures

if TYPE_CHECKING:
    from vision.inspector import Inspector

log = logging.getLogger("lineside.web")

REJECTS_KEPT = 12  # the page shows the latest dozen rejects
# What an image the page links to may be called: the archive's own names
# (`<ts>_<verdict>_<stem>.jpg`, the stem reduced to these characters) and PNG besides.
IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.(?:jpe?g|png)", re.IGNORECASE)


def image_url(inspection: str, image: Any, folder: Path | None) -> str | None:
    """The page's link to a saved image, or None when there is no image or it is not a file
    the `/images` route would serve (outside the inspection's folder, an odd name)."""
    if folder is None or not isinstance(image, str) or not image:
        return None
    path = Path(image)
    if not IMAGE_NAME.fullmatch(path.name) or path.parent.resolve() != folder.resolve():
        return None
    return f"images/{quote(inspection, safe='')}/{quote(path.name, safe='')}"


class VerdictLog:
    def __init__(self, folders: Mapping[str, Path | None], keep: int = REJECTS_KEPT) -> None:
        self.folders = dict(folders)  # inspection -> its image folder (None: saves nothing)
        self.latency: dict[str, Histogram] = {name: Histogram() for name in self.folders}
        self.verdicts: dict[tuple[str, str], int] = {}  # (inspection, verdict) -> count
        self.rejects: deque[dict[str, Any]] = deque(maxlen=keep)  # newest first

    def record(self, event: Event) -> None:
        """Count one emitted event if it is a verdict (not a write-back audit, not a KPI)."""
        data = event.data
        if event.kind is not EventKind.INSPECTION or "verdict" not in data or "audit" in data:
            return
        name = str(data.get("inspection") or "?")
        verdict = str(data["verdict"])
        self.verdicts[name, verdict] = self.verdicts.get((name, verdict), 0) + 1
        latency_ms = data.get("latency_ms")
        if isinstance(latency_ms, int | float):
            self.latency.setdefault(name, Histogram()).observe(latency_ms / 1000)
        if verdict != "NotOK":
            return
        self.rejects.appendleft(
            {
                "inspection": name,
                "machine": event.machine,
                "ts_ns": event.ts_ns,
                "source": data.get("source"),
                "label": data.get("label"),
                "score": data.get("score"),
                "image_url": image_url(name, data.get("image"), self.folders.get(name)),
            }
        )

    def figures(self) -> VerdictFigures:
        """What the log counted so far, frozen (for the agent's snapshot)."""
        return VerdictFigures(
            latency={name: h.snapshot() for name, h in self.latency.items()},
            counts=dict(self.verdicts),
            rejects=tuple(dict(r) for r in self.rejects),
        )

    @classmethod
    def of(cls, inspectors: Iterable[Inspector]) -> VerdictLog:
        """An empty log for these inspectors' verdicts (fed by `Agent.event_listeners`)."""
        return cls(
            {i.name: i.archive.folder if i.archive is not None else None for i in inspectors}
        )
