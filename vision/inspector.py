"""The inspection pipeline of one `[[inspections]]` entry: trigger → frame → model → verdict.

Two stages run at once, each in its own thread, so the pipeline goes at the pace of the slower
one, not their sum:

- the producer waits for the trigger, takes a slot in the queue, then has the frame worker
  (one thread of its own: a shared pool would let other work queue in front of it) read,
  decode and preprocess a frame and submit it to the model worker itself, without a trip
  through the event loop. At most `queue_size` frames wait for the model, plus the one under
  inference. With a live trigger (fps, PLC tag) a frame that finds every slot taken is not
  even read: it is dropped and counted, as a late verdict is worth less than the next part's
  and nothing upstream may ever wait for vision. A replay (folder, video) waits for a slot
  instead, before reading, so a decoded frame never waits outside the queue.
- the model worker (one thread, the agent's thread boundary for inference) runs the session
  and the adapter on each prepared frame in turn, the next one the moment the last is done, and
  queues the outcome for the consumer, waking the event loop only when it is not already due to
  look (one wake-up for all the verdicts that finish while the loop is busy: the loop holds the
  GIL while it runs, and every moment it does is one the model worker may wait for it). The
  consumer collects verdicts in order on the loop and hands them on: an `Event` to
  `emit_event`, the image to the archive, the value to the PLC when write-back is configured
  (every write audited as an event). A slow archive or PLC write delays the hand-on, not the
  model.

Both workers spend their time in code that releases the GIL (libjpeg and OpenCV in the frame
worker, onnxruntime in the model worker), so on two cores they really do run side by side;
`overlapped` counts the frames whose decode ran while the model was busy with an earlier one.

Failures are contained and counted: an unreadable frame, a camera gone (retried after a pause),
a model missing or corrupt (retried every MODEL_RETRY seconds), an inference error.

The triggers (`vision.triggers`), the image archive (`vision.archive`), the counters and the
event payload (`vision.verdicts`) have modules of their own; their names are imported here as
themselves (`X as X`), so they stay importable from `vision.inspector`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import cv2

from agent.clock import Clock
from agent.errors import LinesideError
from agent.model import Event, EventKind
from agent.statistics import InspectionCounts, InspectionStatistics
from vision.adapters import Verdict
from vision.archive import ImageArchive as ImageArchive
from vision.archive import archive_for
from vision.config import InspectionConfig
from vision.frames import Frame, FrameError, FrameSource, SourceGone
from vision.frames import open_source as open_source
from vision.model import Model, ModelError, Prepared
from vision.preprocess import Roi
from vision.triggers import FpsTrigger as FpsTrigger
from vision.triggers import ReplayTrigger as ReplayTrigger
from vision.triggers import TagTrigger as TagTrigger
from vision.triggers import Trigger as Trigger
from vision.triggers import trigger_for
from vision.verdicts import count_verdict
from vision.verdicts import verdict_data as verdict_data
from vision.writeback import WriteBack as WriteBack

log = logging.getLogger("lineside.vision")

MODEL_RETRY = 30.0  # seconds between attempts to load a missing or corrupt model
SOURCE_RETRY = 1.0  # pause after a frame source failed (camera gone, folder missing)
IDLE_POLL = 0.2  # a watched folder or camera with nothing new: look again after this
# OpenCV's own thread pool is turned off (process-wide): the pipeline gets its parallelism from
# running decode and inference side by side, and on a 2-core box a parallel resize or blob in
# the frame worker would take the core the model worker (and the PLC poller) is using, then
# wait for its slowest slice. One thread per stage keeps each stage on one core.
OPENCV_THREADS = 1


@dataclass(frozen=True, slots=True)
class _Work:
    frame: Frame
    prepared: Prepared
    ts_ns: int
    started: float  # perf_counter when the frame was read
    overlapped: bool  # the model was busy with an earlier frame while this one was decoded


# A frame the model worker is done with: its (verdict, inference ms), or what went wrong.
_Outcome = tuple[_Work, tuple[Verdict, float] | Exception]


class Inspector:
    """One inspection: `await run()` until cancelled (or a replay runs out of frames)."""

    def __init__(
        self,
        name: str,
        machine: str,
        load_model: Callable[[], Model],
        open_source: Callable[[Model], FrameSource],
        trigger: Trigger,
        *,
        clock: Clock,
        emit_event: Callable[[Event], None],
        roi: Roi | None = None,
        threshold: float | None = None,
        margin: int = 16,
        queue_size: int = 2,
        archive: ImageArchive | None = None,
        write_back: WriteBack | None = None,
        source_retry: float = SOURCE_RETRY,
        idle_poll: float = IDLE_POLL,
    ) -> None:
        self.name = name
        self.machine = machine
        self.load_model = load_model
        self.open_source = open_source
        self.source: FrameSource | None = None
        self.trigger = trigger
        self.clock = clock
        self.emit_event = emit_event
        self.roi = roi
        self.threshold = threshold
        self.margin = margin
        self.queue_size = queue_size
        self.archive = archive
        self.write_back = write_back
        self.source_retry = source_retry
        self.idle_poll = idle_poll
        self.model: Model | None = None
        self.stats = InspectionCounts()
        self.latest: dict[str, Any] | None = None
        self._executor: ThreadPoolExecutor | None = None  # the model worker
        self._frames: ThreadPoolExecutor | None = None  # the frame worker
        # Written by the model worker only, read by the frame worker: how many inferences have
        # started and ended. Plain ints: each has one writer, and a stale read only undercounts.
        self._model_started = 0
        self._model_ended = 0
        # Outcomes from the model worker, in order (None: the replay ended), and the wake-up
        # of the consumer on the loop; `_wake_pending` is true while a wake-up is on its way.
        self._done: deque[_Outcome | None] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._wake_pending = False

    # -- the two stages -------------------------------------------------------------------------

    async def run(self) -> None:
        self.model = model = await self._load()
        # The source is opened once the model is known: JPEGs are decoded to fit its input.
        self.source = source = self.open_source(model)
        cv2.setNumThreads(OPENCV_THREADS)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"inspect-{self.name}")
        self._frames = ThreadPoolExecutor(1, thread_name_prefix=f"frames-{self.name}")
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._done.clear()
        self._wake_pending = False
        # A slot is taken before a frame is read and given back when its verdict is collected:
        # queue_size prepared frames waiting plus the one under inference, as an
        # asyncio.Queue(queue_size) and a busy consumer would be. Taken before the read, not
        # after, so no decoded frame waits in the producer (it would only add to its latency).
        slots = asyncio.Semaphore(self.queue_size + 1)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._produce(slots, source, model), name=f"frames-{self.name}")
                group.create_task(self._consume(slots, model), name=f"model-{self.name}")
        finally:
            source.close()
            # Do not wait for a frame under decode or inference: cancellation must be prompt.
            self._frames.shutdown(wait=False, cancel_futures=True)
            self._executor.shutdown(wait=False, cancel_futures=True)
            if self.write_back is not None and hasattr(self.write_back, "close"):
                with contextlib.suppress(Exception):
                    await self.write_back.close()

    async def _load(self) -> Model:
        while True:
            try:
                return await asyncio.to_thread(self.load_model)
            except ModelError as exc:
                self._fail("model_errors", str(exc))
            await self.clock.sleep_until(self.clock.monotonic() + MODEL_RETRY)

    def _fail(self, counter: str, message: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        if self.stats.last_error != message:
            log.error("inspection %s: %s", self.name, message)
        self.stats.last_error = message

    def _grab(self, source: FrameSource, model: Model) -> _Work | None:
        """The frame worker: read, decode and preprocess one frame, then hand it to the model
        worker itself (no trip through the event loop between the two stages)."""
        started = time.perf_counter()
        begun, ended = self._model_started, self._model_ended
        # A read queued ahead may find the source finished by the read before it.
        frame = None if source.finished else source.read()
        if frame is None:
            return None
        ts_ns = self.clock.time_ns()
        prepared = model.prepare(frame.image, roi=self.roi, decode_scale=frame.decode_scale)
        # The model was busy during this decode if an inference was under way when it began or
        # one began before it ended.
        overlapped = begun > ended or self._model_started > begun
        work = _Work(frame, prepared, ts_ns, started, overlapped)
        assert self._executor is not None
        self._executor.submit(self._predict, model, work)
        return work

    async def _produce(self, slots: asyncio.Semaphore, source: FrameSource, model: Model) -> None:
        loop = asyncio.get_running_loop()
        # Reads handed to the frame worker, oldest first. A replay (a trigger that waits for
        # room rather than drop) queues the next read while one is under way, when a slot is
        # free and the last read gave a frame: the frame worker then goes from one frame to the
        # next without waiting for a turn of the loop in between, which is what bounds a
        # decode-bound replay. After a failed or empty read, reads go one at a time again, so a
        # missing folder is retried (and counted) once per `source_retry`, not twice.
        reads: deque[asyncio.Future[_Work | None]] = deque()
        flowing = False
        try:
            while not source.finished or reads:
                ahead = 2 if flowing and not self.trigger.drops else 1
                while (
                    not source.finished
                    and len(reads) < ahead
                    and not (reads and slots.locked())  # read ahead only into a free slot
                ):
                    await self.trigger.wait()
                    self.stats.triggers += 1
                    if self.trigger.drops and slots.locked():
                        self.stats.dropped += 1  # do not even decode what cannot be inspected
                        continue
                    await slots.acquire()  # a replay waits here; a live trigger found one free
                    reads.append(loop.run_in_executor(self._frames, self._grab, source, model))
                if reads:
                    flowing = await self._read_done(reads.popleft(), slots, source)
        finally:
            for read in reads:  # cancelled: their slots go with the inspector
                read.cancel()
        # The end of a replay, queued behind the last inference: the consumer returns on it.
        assert self._executor is not None
        self._executor.submit(self._deliver, None)

    async def _read_done(
        self, read: asyncio.Future[_Work | None], slots: asyncio.Semaphore, source: FrameSource
    ) -> bool:
        """Account for one read of the frame worker: True when it gave a frame, which went on
        to the model worker (the consumer gives its slot back with the verdict); otherwise the
        slot goes back here."""
        try:
            work = await read
        except SourceGone as exc:
            slots.release()
            self._fail("frame_errors", str(exc))
            await self.clock.sleep_until(self.clock.monotonic() + self.source_retry)
            return False
        except (FrameError, ValueError) as exc:  # one bad frame: on to the next
            slots.release()
            self._fail("frame_errors", str(exc))
            return False
        except BaseException:
            slots.release()
            raise
        if work is None:
            slots.release()
            if not source.finished:
                await self.clock.sleep_until(self.clock.monotonic() + self.idle_poll)
            return False
        self.stats.frames += 1
        self.stats.overlapped += work.overlapped
        return True

    def _predict(self, model: Model, work: _Work) -> None:
        """The model worker: session and adapter, timed in this thread (queue wait excluded)."""
        self._model_started += 1
        begun = time.perf_counter()
        outcome: tuple[Verdict, float] | Exception
        try:
            verdict = model.predict(work.prepared, threshold=self.threshold, margin=self.margin)
            outcome = (verdict, (time.perf_counter() - begun) * 1e3)
        except Exception as exc:  # sorted out on the loop, as any other outcome
            outcome = exc
        finally:
            self._model_ended += 1
        self._deliver((work, outcome))

    def _deliver(self, item: _Outcome | None) -> None:
        """Any thread: queue an outcome for the consumer, waking the loop only if it is not
        already due to look: verdicts that finish while the loop is busy go in one wake-up, so
        the loop (and the GIL it holds while it runs) costs the model worker less per frame."""
        self._done.append(item)  # deque.append is atomic
        if not self._wake_pending:
            self._wake_pending = True
            assert self._loop is not None and self._ready is not None
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                self._loop.call_soon_threadsafe(self._ready.set)

    async def _consume(self, slots: asyncio.Semaphore, model: Model) -> None:
        assert self._ready is not None
        while True:
            await self._ready.wait()
            self._ready.clear()
            # Cleared before the deque is read: an outcome added from now on wakes the loop
            # again (at worst once for nothing), so none is ever left waiting unseen.
            self._wake_pending = False
            while self._done:
                item = self._done.popleft()
                if item is None:
                    return
                slots.release()
                work, outcome = item
                if isinstance(outcome, Exception):
                    if not isinstance(outcome, LinesideError | ValueError | RuntimeError):
                        raise outcome
                    message = f"{work.frame.name}: inference failed: {outcome}"
                    self._fail("inference_errors", message)
                    continue
                verdict, inference_ms = outcome
                latency_ms = (time.perf_counter() - work.started) * 1e3
                await self._hand_on(work, verdict, latency_ms, inference_ms, model)

    async def _hand_on(
        self, work: _Work, verdict: Verdict, latency_ms: float, inference_ms: float, model: Model
    ) -> None:
        count_verdict(self.stats, verdict, latency_ms, inference_ms)
        data = verdict_data(self.name, work.frame.name, model, verdict, latency_ms)
        if self.archive is not None and self.archive.wanted(verdict.verdict):
            try:
                saved = await asyncio.to_thread(
                    self.archive.save, work.frame, verdict.verdict, work.ts_ns
                )
            except OSError as exc:
                self._fail("save_errors", f"cannot save image: {exc}")
            else:
                self.stats.saved += 1
                data["image"] = str(saved)
        self.emit_event(Event(EventKind.INSPECTION, work.ts_ns, self.machine, data))
        self.latest = data
        if self.write_back is not None:
            await self._write(verdict.verdict, work.ts_ns)

    async def _write(self, verdict: str, ts_ns: int) -> None:
        assert self.write_back is not None
        audit = await self.write_back.write(
            verdict, inspection=self.name, verdict_ts_ns=ts_ns, ts_ns=self.clock.time_ns()
        )
        result = audit.data["result"]
        if result == "ok":
            self.stats.writes += 1
        else:
            counter = "write_refused" if result == "refused" else "write_errors"
            self._fail(counter, str(audit.data.get("error")))
        self.emit_event(audit)  # refused and failed writes are audited too

    def statistics(self) -> InspectionStatistics:
        return InspectionStatistics(
            replace(self.stats),
            model=self.model.name if self.model is not None else None,
            queue_size=self.queue_size,
        )


def build_inspector(
    config: InspectionConfig,
    *,
    clock: Clock,
    emit_event: Callable[[Event], None],
    read_tag: Callable[[str], Callable[[], float]] | None = None,
    write_back: WriteBack | None = None,
) -> Inspector:
    """An Inspector for one `[[inspections]]` entry. `read_tag(name)` gives a function that
    returns the latest value of the machine's tag `name` (NaN while unknown)."""
    path, adapter, threads = config.model, config.adapter, config.threads
    overlap = config.tile_overlap if config.tile else None
    return Inspector(
        config.name,
        config.machine,
        lambda: Model.load(path, adapter=adapter, threads=threads, tile_overlap=overlap),
        lambda model: open_source(config, model, clock),
        trigger_for(config, clock, read_tag),
        clock=clock,
        emit_event=emit_event,
        roi=config.roi,
        threshold=config.threshold,
        margin=config.margin,
        queue_size=config.queue,
        archive=archive_for(config),
        write_back=write_back,
    )
