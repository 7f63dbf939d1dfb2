"""The inspection pipeline with real models, real files, a fake clock and the simulated plant."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from pymodbus.client import AsyncModbusTcpClient

from agent.clock import FakeClock
from agent.model import Event, EventKind
from connectors.modbus.address import parse_address
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.vision import onnx_graphs as graphs
from tests.waiting import until
from vision.frames import FolderSource, Frame, FrameSource, SourceGone
from vision.inspector import (
    MODEL_RETRY,
    FpsTrigger,
    ImageArchive,
    Inspector,
    ReplayTrigger,
    TagTrigger,
    Trigger,
    WriteBack,
)
from vision.model import Model
from vision.writeback import ModbusWriteBack


def write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    path.write_bytes(data.tobytes())


def part(defect: bool) -> np.ndarray:
    image = np.zeros((128, 128, 3), np.uint8)
    if defect:
        image[56:72, 56:72] = 255  # what the brightness "anomaly model" calls a defect
    return image


class LiveCamera:
    """A live camera whose every frame is one part, stamped with the clock's time; unplugged,
    it is gone (as a device that disappears)."""

    name, live, finished = "cam", True, False

    def __init__(self, clock: FakeClock, defect: bool = False) -> None:
        self.clock = clock
        self.defect = defect
        self.plugged = True

    def read(self) -> Frame:
        if not self.plugged:
            raise SourceGone("cam: no frame (device gone or stream ended)")
        return Frame(part(self.defect), "cam", self.clock.time_ns())

    def close(self) -> None:
        pass


class SlowDecode:
    """A replay of `count` frames, each a real JPEG of noise (`side` px square) decoded in full
    on every read, then cropped to `crop` px: a slow decode for a small model input."""

    name, live = "slow", False

    def __init__(self, count: int, *, side: int, crop: int) -> None:
        noise = np.random.default_rng(side).integers(0, 256, (side, side, 3), np.uint8)
        ok, self.encoded = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        self.count, self.crop = count, crop
        self.read_count = 0
        self.inspector: Inspector | None = None  # set: count the reads queued ahead
        self.ahead = 0  # reads that ended with the next one already asked for

    @property
    def finished(self) -> bool:
        return self.read_count >= self.count

    def read(self) -> Frame:
        self.read_count += 1
        image = cv2.imdecode(self.encoded, cv2.IMREAD_COLOR)
        assert image is not None
        if self.inspector is not None:  # the producer counts a trigger for each read it asks for
            self.ahead += self.inspector.stats.triggers > self.read_count
        corner = np.ascontiguousarray(image[: self.crop, : self.crop], dtype=np.uint8)
        return Frame(corner, f"f{self.read_count}", 0)

    def close(self) -> None:
        pass


def make_inspector(
    model_path: Path,
    source: FrameSource | Callable[[Model], FrameSource],
    trigger: Trigger,
    clock: FakeClock,
    events: list[Event],
    **kw: object,
) -> Inspector:
    def open_source(model: Model) -> FrameSource:
        return source(model) if callable(source) else source

    return Inspector(
        "surface",
        "press1",
        lambda: Model.load(model_path),
        open_source,
        trigger,
        clock=clock,
        emit_event=events.append,
        **kw,  # type: ignore[arg-type]
    )


async def step_tag(
    inspector: Inspector,
    clock: FakeClock,
    events: list[Event],
    value: list[float],
    steps: Sequence[float],
) -> None:
    """Set the trigger tag to each of `steps` in turn, one poll apart, each time until the
    inspector has emitted a verdict for every frame it took."""
    await until(lambda: clock.sleepers() == 1)
    for step in steps:
        value[0] = step
        clock.advance(0.01)
        await until(lambda: clock.sleepers() == 1 and inspector.stats.frames == len(events))


@contextlib.asynccontextmanager
async def running(inspector: Inspector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(inspector.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_folder_replay_gives_one_verdict_event_per_image(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    write_jpeg(folder / "p1.jpg", part(False))
    write_jpeg(folder / "p2.jpg", part(True))
    (folder / "p3.jpg").write_bytes((folder / "p2.jpg").read_bytes()[:400])  # truncated
    write_jpeg(folder / "p4.jpg", part(False))
    model = graphs.anomaly_model(tmp_path / "a.onnx")
    clock = FakeClock()
    events: list[Event] = []
    inspector = make_inspector(model, FolderSource(folder), ReplayTrigger(), clock, events)
    await asyncio.wait_for(inspector.run(), 10)  # a replay ends with its folder
    assert [e.kind for e in events] == [EventKind.INSPECTION] * 3
    assert [(e.data["source"], e.data["verdict"]) for e in events] == [
        ("p1.jpg", "OK"),
        ("p2.jpg", "NotOK"),
        ("p4.jpg", "OK"),
    ]
    bad = events[1].data
    assert bad["model"] == "a.onnx" and bad["adapter"] == "anomaly"
    assert bad["score"] == pytest.approx(1.0, abs=0.01)
    (box,) = bad["boxes"]
    assert box["box"] == pytest.approx([56, 56, 72, 72], abs=2)
    assert bad["latency_ms"] > 0
    assert all(e.machine == "press1" and e.ts_ns == clock.time_ns() for e in events)
    stats = inspector.statistics().counts
    assert (stats.inspected, stats.ok, stats.not_ok, stats.frame_errors) == (3, 2, 1, 1)
    assert "p3.jpg: truncated JPEG" in str(stats.last_error)
    assert inspector.latest == events[-1].data


async def test_queue_drops_and_counts_when_the_model_is_slow(tmp_path: Path) -> None:
    model = graphs.heavy_model(tmp_path / "heavy.onnx", layers=60)
    clock = FakeClock()
    events: list[Event] = []
    inspector = make_inspector(
        model, LiveCamera(clock), FpsTrigger(100.0, clock), clock, events, queue_size=2
    )
    async with running(inspector):
        await until(lambda: clock.sleepers() == 1)  # model loaded, waiting for the first tick
        for _ in range(100):  # one second at 100 frames/s, much faster than the model
            clock.advance(0.01)
            await until(lambda: clock.sleepers() == 1)
        stats = inspector.statistics().counts
    assert stats.triggers == 101
    assert stats.dropped >= 50, stats
    assert stats.frames + stats.dropped == stats.triggers
    assert stats.inspected <= stats.frames <= stats.inspected + 3
    assert len(events) == stats.inspected


async def test_tag_trigger_fires_on_the_edge_after_the_delay() -> None:
    clock = FakeClock()
    value = [math.nan]  # not read yet
    trigger = TagTrigger(lambda: value[0], clock, edge="rising", delay=0.05, poll=0.01)
    # values change between polls (every 10 ms), so the poll that sees them is known
    wait = asyncio.create_task(trigger.wait())
    await clock.run_until(0.055)
    value[0] = 1.0  # unknown → 1 is no edge: the part may have been there all along
    await clock.run_until(0.105)
    value[0] = 0.0
    await clock.run_until(0.205)
    assert not wait.done()
    value[0] = 1.0
    await clock.run_until(0.255)  # seen at 0.21, fires at 0.26
    assert not wait.done()
    await clock.run_until(0.265)
    assert wait.done()
    wait = asyncio.create_task(trigger.wait())
    await clock.run_until(0.505)
    value[0] = 0.0  # a falling edge: nothing
    await clock.run_until(0.605)
    assert not wait.done()
    await clock.run_until(1.0)
    wait.cancel()
    falling = TagTrigger(lambda: value[0], clock, edge="falling", poll=0.01)
    value[0] = 1.0
    wait = asyncio.create_task(falling.wait())
    await clock.run_until(1.105)
    value[0] = 0.0
    await clock.run_until(1.115)
    assert wait.done()


async def test_tag_edges_give_verdicts(tmp_path: Path) -> None:
    model = graphs.anomaly_model(tmp_path / "a.onnx")
    clock = FakeClock()
    events: list[Event] = []
    value = [0.0]
    trigger = TagTrigger(lambda: value[0], clock, poll=0.01)
    inspector = make_inspector(model, LiveCamera(clock, defect=True), trigger, clock, events)
    async with running(inspector):
        # Rising, steady, falling, rising: two rising edges.
        await step_tag(inspector, clock, events, value, (1.0, 1.0, 0.0, 1.0))
    assert inspector.stats.triggers == 2
    assert [e.data["verdict"] for e in events] == ["NotOK", "NotOK"]


async def test_missing_model_is_counted_and_retried(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    write_jpeg(folder / "p1.jpg", part(True))
    model = tmp_path / "later.onnx"
    clock = FakeClock()
    events: list[Event] = []
    inspector = make_inspector(model, FolderSource(folder), ReplayTrigger(), clock, events)
    task = asyncio.create_task(inspector.run())
    await until(lambda: inspector.stats.model_errors == 1 and clock.sleepers() == 1)
    assert inspector.stats.last_error == f"model file not found: {model}"
    graphs.anomaly_model(model)  # the model arrives
    clock.advance(MODEL_RETRY)
    await asyncio.wait_for(task, 10)
    assert inspector.stats.model_errors == 1
    assert [e.data["verdict"] for e in events] == ["NotOK"]


async def test_a_camera_that_disappears_is_counted_and_retried(tmp_path: Path) -> None:
    model = graphs.anomaly_model(tmp_path / "a.onnx")
    clock = FakeClock()
    events: list[Event] = []
    camera = LiveCamera(clock)
    inspector = make_inspector(
        model, camera, FpsTrigger(10.0, clock), clock, events, source_retry=1.0
    )
    async with running(inspector):
        await until(lambda: len(events) == 1 and clock.sleepers() == 1)
        camera.plugged = False
        clock.advance(0.1)
        await until(lambda: inspector.stats.frame_errors == 1 and clock.sleepers() == 1)
        clock.advance(0.5)  # within the retry pause: no new attempt
        await until(lambda: clock.sleepers() == 1)
        assert inspector.stats.frame_errors == 1
        camera.plugged = True
        clock.advance(0.6)
        await until(lambda: clock.sleepers() == 1)
        clock.advance(0.1)
        await until(lambda: len(events) >= 2)
    assert inspector.stats.last_error == "cam: no frame (device gone or stream ended)"


async def test_a_replay_of_a_missing_folder_is_tried_once_per_retry(tmp_path: Path) -> None:
    # A replay reads ahead only while frames come: a folder that is not there is tried and
    # counted once per pause, as a camera is, then replayed when it appears.
    model = graphs.anomaly_model(tmp_path / "a.onnx")
    clock = FakeClock()
    events: list[Event] = []
    folder = tmp_path / "frames"
    source = FolderSource(folder)
    inspector = make_inspector(model, source, ReplayTrigger(), clock, events, source_retry=1.0)
    async with running(inspector):
        for attempt in (1, 2, 3):
            await until(lambda: clock.sleepers() == 1)
            assert inspector.stats.frame_errors == attempt
            clock.advance(1.0)
        await until(lambda: clock.sleepers() == 1)
        part_folder(folder, defect=True)
        clock.advance(1.0)
        await until(lambda: len(events) == 1)
    assert inspector.stats.frame_errors == 4
    assert inspector.stats.last_error == f"{folder}: folder not found"
    assert events[0].data["verdict"] == "NotOK"


def test_archive_is_bounded_by_size_and_age(tmp_path: Path) -> None:
    frame = Frame(part(True), "cam#1", 0)
    archive = ImageArchive(tmp_path / "img", max_size=10**9, retention=60.0, good_sample=0.5)
    one = archive.save(frame, "NotOK", 1_000).stat().st_size
    archive.max_size = 3 * one + one // 2
    for i in range(2, 7):
        archive.save(frame, "NotOK", i * 1_000)
    kept = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert kept == [f"{i}000_NotOK_cam-1.jpg" for i in (4, 5, 6)]
    assert archive.total == sum(p.stat().st_size for p in (tmp_path / "img").iterdir())
    archive.save(frame, "NotOK", 61 * 10**9 + 5_000)  # a minute later: the rest is too old
    assert len(list((tmp_path / "img").iterdir())) == 1
    assert [archive.wanted("OK") for _ in range(4)] == [True, False, True, False]
    assert archive.wanted("NotDecidable")
    # a restarted agent sees what is already there
    again = ImageArchive(tmp_path / "img", max_size=10, retention=60.0, good_sample=0.0)
    assert again.total == archive.total and not again.wanted("OK")


async def test_saved_images_go_with_their_events(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        write_jpeg(folder / f"p{i}.jpg", part(i == 2))
    clock = FakeClock()
    events: list[Event] = []
    archive = ImageArchive(tmp_path / "saved", max_size=10**8, retention=3600.0, good_sample=0.0)
    inspector = make_inspector(
        graphs.anomaly_model(tmp_path / "a.onnx"),
        FolderSource(folder),
        ReplayTrigger(),
        clock,
        events,
        archive=archive,
    )
    await asyncio.wait_for(inspector.run(), 10)
    saved = [e.data.get("image") for e in events]
    assert saved[:2] == [None, None] and saved[3] is None
    assert saved[2] is not None
    assert os.listdir(tmp_path / "saved") == [saved[2].rsplit("/", 1)[-1]]


@pytest.fixture
async def plant() -> AsyncIterator[Plant]:
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as running_plant:
        yield running_plant


async def read_coil(port: int, offset: int) -> bool:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        rr = await client.read_coils(offset, count=1, device_id=1)
        return bool(rr.bits[0])
    finally:
        client.close()


def press_port(plant: Plant) -> int:
    return int(plant.endpoints()[0].modbus_tcp.rsplit(":", 1)[1])


def press_write_back(plant: Plant, address: str, allow: list[str]) -> ModbusWriteBack:
    """A write-back to the simulated press's PLC."""
    return ModbusWriteBack(
        "press1",
        parse_address(address),
        host="127.0.0.1",
        port=press_port(plant),
        unit_id=plant.endpoints()[0].unit_id,
        allow=allow,
    )


def part_folder(folder: Path, defect: bool) -> Path:
    folder.mkdir()
    write_jpeg(folder / "part.jpg", part(defect))
    return folder


async def inspect_one_part(
    folder: Path, model: Path, defect: bool, events: list[Event], write_back: WriteBack
) -> Inspector:
    """Replay one generated part (NotOK with a defect, OK without) with a verdict write-back."""
    source = FolderSource(part_folder(folder, defect))
    inspector = make_inspector(
        model, source, ReplayTrigger(), FakeClock(), events, write_back=write_back
    )
    await asyncio.wait_for(inspector.run(), 10)
    return inspector


async def test_write_back_to_the_plant_is_audited(tmp_path: Path, plant: Plant) -> None:
    port = press_port(plant)
    write_back = press_write_back(plant, "co:5", ["press1:co:5"])
    model = graphs.anomaly_model(tmp_path / "a.onnx")
    events: list[Event] = []
    seen = []
    writes = 0
    for name, defect in (("reject", True), ("good", False)):
        inspector = await inspect_one_part(tmp_path / name, model, defect, events, write_back)
        seen.append(await read_coil(port, 5))  # read back by an independent client
        writes += inspector.stats.writes
    # Each verdict, then the audit of its write: its own kind, pointing back at the verdict.
    assert [e.kind for e in events] == [EventKind.INSPECTION, EventKind.AUDIT] * 2
    verdicts, audits = events[0::2], events[1::2]
    assert [a.data for a in audits] == [
        {
            "who": "inspection",
            "inspection": "surface",
            "machine": "press1",
            "address": "co:5",
            "target": "press1:co:5",
            "value": value,
            "verdict": verdict,
            "verdict_ts_ns": v.ts_ns,
            "result": "ok",
        }
        for v, (verdict, value) in zip(verdicts, (("NotOK", 1), ("OK", 0)), strict=True)
    ]
    assert all(a.machine == "press1" for a in audits)
    assert [v.data["verdict"] for v in verdicts] == ["NotOK", "OK"]
    assert all("audit" not in v.data for v in verdicts)
    assert seen == [True, False]
    assert writes == 2


async def test_write_back_outside_the_allow_list_is_refused(tmp_path: Path, plant: Plant) -> None:
    port = press_port(plant)
    write_back = press_write_back(plant, "co:6", ["press1:co:5"])
    events: list[Event] = []
    model = graphs.anomaly_model(tmp_path / "a.onnx")
    inspector = await inspect_one_part(tmp_path / "frames", model, True, events, write_back)
    (audit,) = [e.data for e in events if e.kind is EventKind.AUDIT]
    assert audit["result"] == "refused"
    assert audit["error"] == "write to press1:co:6 refused: not on the write_allow list"
    assert (audit["target"], audit["value"], audit["verdict"]) == ("press1:co:6", 1, "NotOK")
    assert (inspector.stats.write_refused, inspector.stats.writes) == (1, 0)
    assert inspector.stats.last_error == audit["error"]
    assert await read_coil(port, 6) is False
    assert [e.data["verdict"] for e in events if e.kind is EventKind.INSPECTION] == ["NotOK"]


async def test_a_failed_write_back_is_audited_with_its_reason(tmp_path: Path, plant: Plant) -> None:
    # A port nobody listens on (bound, then closed): the connection is refused.
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    allow = ["press1:co:5", "press1:hr:60000"]
    gone = ModbusWriteBack(
        "press1", parse_address("co:5"), host="127.0.0.1", port=closed_port, unit_id=1, allow=allow
    )
    # beyond the press's registers: a Modbus exception
    refused_by_plc = press_write_back(plant, "hr:60000", allow)
    audits = [
        await w.write("NotOK", inspection="surface", verdict_ts_ns=5, ts_ns=7)
        for w in (gone, refused_by_plc)
    ]
    await refused_by_plc.close()
    assert [a.kind for a in audits] == [EventKind.AUDIT] * 2
    assert [(a.ts_ns, a.data["verdict_ts_ns"]) for a in audits] == [(7, 5)] * 2
    assert [a.data["result"] for a in audits] == ["failed", "failed"]
    assert audits[0].data["error"].startswith("write to press1:co:5: ")
    assert audits[1].data["error"].startswith("write to press1:hr:60000: ")
    assert "address" in audits[1].data["error"].lower()
    assert audits[1].data["value"] == 2  # NotOK's code in a register
    # Through an inspection: counted as a write error, the audit stored like a verdict.
    events: list[Event] = []
    model = graphs.anomaly_model(tmp_path / "a.onnx")
    inspector = await inspect_one_part(tmp_path / "frames", model, False, events, gone)
    assert [e.kind for e in events] == [EventKind.INSPECTION, EventKind.AUDIT]
    assert events[1].data["result"] == "failed" and events[1].data["value"] == 0
    assert (inspector.stats.write_errors, inspector.stats.writes) == (1, 0)


@pytest.mark.slow
async def test_decode_runs_while_the_model_is_busy(tmp_path: Path) -> None:
    # A slow decode (a real 2400x2400 JPEG, decoded in full every read) and a slow model
    # (chained matmuls): each frame's decode should find the model at work on an earlier frame.
    model = graphs.heavy_model(tmp_path / "heavy.onnx", layers=20)
    count = 8
    clock = FakeClock()
    events: list[Event] = []
    source = SlowDecode(count, side=2400, crop=128)
    inspector = make_inspector(model, source, ReplayTrigger(), clock, events)
    await asyncio.wait_for(inspector.run(), 60)
    stats = inspector.statistics().counts
    assert [e.data["source"] for e in events] == [f"f{i}" for i in range(1, count + 1)]
    assert stats.frames == stats.inspected == count and stats.dropped == 0
    # The first decode has nothing to overlap; nearly every later one should.
    assert count // 2 <= stats.overlapped <= count - 1, stats


async def test_a_serial_pipeline_would_show_no_overlap(tmp_path: Path) -> None:
    # The counter's other side: one frame at a time (the model idle during every decode)
    # counts nothing, so the test above can fail.
    model = graphs.anomaly_model(tmp_path / "a.onnx")
    clock = FakeClock()
    events: list[Event] = []
    value = [0.0]
    trigger = TagTrigger(lambda: value[0], clock, poll=0.01)
    inspector = make_inspector(model, LiveCamera(clock), trigger, clock, events)
    async with running(inspector):
        # Three rising edges, each inspected in full.
        await step_tag(inspector, clock, events, value, (1.0, 0.0, 1.0, 0.0, 1.0))
    assert inspector.stats.inspected == 3 and inspector.stats.overlapped == 0


async def test_a_replay_reads_no_further_ahead_than_the_queue(tmp_path: Path) -> None:
    # A fast source and a slow model: the producer takes a slot before it reads, so a decoded
    # frame never waits outside the queue (it would only add an inference time to its latency).
    model = graphs.heavy_model(tmp_path / "heavy.onnx", layers=20)
    events: list[Event] = []
    ahead: list[int] = []  # frames read and not yet given a verdict, at each read
    count = 12

    class FastFolder:
        name, live = "fast", False

        def __init__(self) -> None:
            self.read_count = 0

        @property
        def finished(self) -> bool:
            return self.read_count >= count

        def read(self) -> Frame:
            ahead.append(self.read_count - len(events))
            self.read_count += 1
            return Frame(part(False), f"f{self.read_count}", 0)

        def close(self) -> None:
            pass

    for queue_size in (1, 3):
        events.clear()
        ahead.clear()
        inspector = make_inspector(
            model, FastFolder(), ReplayTrigger(), FakeClock(), events, queue_size=queue_size
        )
        await asyncio.wait_for(inspector.run(), 60)
        assert [e.data["source"] for e in events] == [f"f{i}" for i in range(1, count + 1)]
        # At most queue_size waiting and one under inference when the next one is read; the
        # model is slow enough that the queue does fill up.
        assert max(ahead) == queue_size, ahead


async def test_a_decode_bound_replay_reads_the_next_frame_without_waiting_for_the_loop(
    tmp_path: Path,
) -> None:
    # A slow source and a fast model: a replay queues the next read behind the one under way,
    # so the frame worker goes on to it without waiting for the loop. Reading one frame at a
    # time, as a live trigger does, the next read is asked for only after this one is
    # collected, and this counts 0. Here every read but the first (after it, reads go ahead)
    # and the last has one behind it.
    model = graphs.anomaly_model(tmp_path / "a.onnx")
    count = 10
    source = SlowDecode(count, side=1600, crop=64)
    events: list[Event] = []
    # room in the queue for every frame: only the read-ahead itself decides
    inspector = make_inspector(
        model, source, ReplayTrigger(), FakeClock(), events, queue_size=count
    )
    source.inspector = inspector
    await asyncio.wait_for(inspector.run(), 60)
    assert [e.data["source"] for e in events] == [f"f{i}" for i in range(1, count + 1)]
    assert inspector.stats.frames == count
    # The last may find one asked for too: the producer can ask before the source has said it
    # is finished, and that read then returns nothing.
    assert count - 2 <= source.ahead <= count - 1, source.ahead


async def test_inference_errors_are_counted_and_the_replay_goes_on(tmp_path: Path) -> None:
    # A real model whose output the detect adapter refuses ([1, 4, N]: no class score), for
    # every frame: each one is an inference error, none stops the pipeline.
    model = graphs.constant_model(
        tmp_path / "bad-detect.onnx",
        np.zeros((1, 4, 8), np.float32),
        metadata={"task": "detect", "names": "{0: 'x'}", "imgsz": "[64, 64]"},
    )
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        write_jpeg(folder / f"p{i}.jpg", part(False))
    events: list[Event] = []
    inspector = make_inspector(model, FolderSource(folder), ReplayTrigger(), FakeClock(), events)
    await asyncio.wait_for(inspector.run(), 10)
    stats = inspector.statistics().counts
    assert events == []
    assert (stats.frames, stats.inference_errors, stats.inspected) == (3, 3, 0), stats
    assert "p2.jpg: inference failed: expected a detect output" in str(stats.last_error)
