"""agent/web/verdicts.py: latency histograms and the latest rejects, from emitted events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.model import Event, EventKind
from agent.web.verdicts import VerdictLog, image_url


def verdict(name: str, kind: str, ms: Any, image: str | None = None, ts: int = 1) -> Event:
    data: dict[str, Any] = {"inspection": name, "verdict": kind, "latency_ms": ms, "score": 0.9}
    data["source"] = f"part{ts}.jpg"
    if image is not None:
        data["image"] = image
    return Event(EventKind.INSPECTION, ts, "press1", data)


def test_verdicts_are_counted_and_rejects_kept_newest_first(tmp_path: Path) -> None:
    log = VerdictLog({"surface": tmp_path, "plain": None}, keep=2)
    log.record(verdict("surface", "OK", 4.0, ts=1))
    log.record(verdict("surface", "NotOK", 12.5, str(tmp_path / "2_NotOK_part2.jpg"), ts=2))
    log.record(verdict("plain", "NotDecidable", "late", ts=3))  # a latency that is no number
    log.record(verdict("surface", "NotOK", 30.0, str(tmp_path / "4_NotOK_part4.jpg"), ts=4))
    log.record(verdict("plain", "NotOK", 2.0, str(tmp_path / "5_NotOK_part5.jpg"), ts=5))
    # neither an audit of a write-back nor another kind of event is a verdict
    audit = {"inspection": "surface", "audit": "write_back", "verdict": "NotOK"}
    log.record(Event(EventKind.INSPECTION, 6, "press1", audit))
    log.record(Event(EventKind.STATE, 7, "press1", {"verdict": "NotOK"}))
    assert log.verdicts == {
        ("surface", "OK"): 1,
        ("surface", "NotOK"): 2,
        ("plain", "NotDecidable"): 1,
        ("plain", "NotOK"): 1,
    }
    assert log.latency["surface"].counts[5] == 1  # 12.5 ms in (0.01, 0.025]
    assert log.latency["surface"].count == 3
    assert abs(log.latency["surface"].sum - 0.0465) < 1e-12
    assert log.latency["plain"].count == 1
    # two kept, newest first; "plain" saves no images, so no link
    assert [(r["inspection"], r["ts_ns"], r["image_url"]) for r in log.rejects] == [
        ("plain", 5, None),
        ("surface", 4, "images/surface/4_NotOK_part4.jpg"),
    ]


def test_an_image_link_only_for_a_file_the_route_serves(tmp_path: Path) -> None:
    folder = tmp_path / "rejects"
    folder.mkdir()
    assert image_url("surface", str(folder / "1_NotOK_a.jpg"), folder) == (
        "images/surface/1_NotOK_a.jpg"
    )
    assert image_url("a b/c", str(folder / "1.png"), folder) == "images/a%20b%2Fc/1.png"
    assert image_url("surface", str(tmp_path / "1_NotOK_a.jpg"), folder) is None  # elsewhere
    assert image_url("surface", str(folder / "x.bmp"), folder) is None
    assert image_url("surface", str(folder / ".x.jpg"), folder) is None
    assert image_url("surface", None, folder) is None
    assert image_url("surface", 3, folder) is None
    assert image_url("surface", str(folder / "1.jpg"), None) is None


def test_of_names_each_inspection_and_its_image_folder(tmp_path: Path) -> None:
    class Archive:
        folder = tmp_path

    class Saving:
        name, archive = "surface", Archive()

    class NotSaving:
        name, archive = "edges", None

    log = VerdictLog.of([Saving(), NotSaving()])  # type: ignore[list-item]
    assert log.folders == {"surface": tmp_path, "edges": None}
    assert log.verdicts == {}
