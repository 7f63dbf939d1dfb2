"""The status page in a real browser: Debian's headless Chromium, driven over the DevTools
protocol on a pipe (`--remote-debugging-pipe`: no websocket library, no browser download),
against a real agent polling the simulated demo plant, with the demo's camera inspection when
the bundled model is present.

Set LINESIDE_SCREENSHOT=docs/img/status-page.png to keep a screenshot of the page as tested;
it waits (up to LINESIDE_SCREENSHOT_WAIT seconds, default 120) for a reject's thumbnail first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.demo import bundled_model
from tests.agent.web.running import running_agent

CHROMIUM = "/usr/bin/chromium"
# As the machine notes say: without the background-networking flags Chromium keeps trying to
# reach Google's hosts, which this machine's closed network refuses.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-pipe",
)


def chromium_or_skip(binary: str = CHROMIUM) -> str:
    if os.path.exists(binary):
        return binary
    if os.environ.get("CI") == "true":
        pytest.fail(f"{binary} is missing: .ci/run installs Debian's chromium package")
    pytest.skip(f"{binary} is missing (apt-get install chromium)")


class DevTools:
    """The Chrome DevTools protocol over the pipe pair on fds 3 and 4: NUL-ended JSON."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.WriteTransport) -> None:
        self.reader = reader
        self.writer = writer
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                raw = await self.reader.readuntil(b"\0")
            except asyncio.IncompleteReadError:
                for future in self.waiting.values():
                    future.set_exception(ConnectionError("chromium closed its pipe"))
                return
            message = json.loads(raw[:-1])
            if "id" in message and message["id"] in self.waiting:
                self.waiting.pop(message["id"]).set_result(message)
            elif "method" in message:
                self.events.append(message)

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        self.writer.write(json.dumps(message).encode() + b"\0")
        async with asyncio.timeout(30):
            answer = await future
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})


def high_fds(*fds: int) -> tuple[int, ...]:
    """The same pipe ends above fd 9, so moving them onto 3 and 4 cannot clobber one."""
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return moved


@contextlib.asynccontextmanager
async def chromium(binary: str, profile: Path) -> AsyncIterator[DevTools]:
    to_browser_r, to_browser_w = high_fds(*os.pipe())
    from_browser_r, from_browser_w = high_fds(*os.pipe())
    # The browser wants the pipe on fds 3 and 4 exactly; a small launcher puts them there
    # (sh cannot: dash takes single-digit fd numbers only).
    launcher = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
        "os.execv(sys.argv[3], sys.argv[3:])"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        launcher,
        str(to_browser_r),
        str(from_browser_w),
        binary,
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        pass_fds=(to_browser_r, from_browser_w),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    os.close(to_browser_r)
    os.close(from_browser_w)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)  # screenshots come as one message
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(from_browser_r, "rb")
    )
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(to_browser_w, "wb"))
    tools = DevTools(reader, transport)
    try:
        yield tools
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tools.call("Browser.close"), 5)
        transport.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        tools.task.cancel()


def keep_small(png: bytes, path: Path) -> None:
    """A screenshot for the docs in 256 colours (a third of the size; a page has few colours)."""
    from PIL import Image  # with scikit-image (dev); only when screenshots are kept

    with Image.open(io.BytesIO(png)) as shot:
        small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


async def evaluate(tools: DevTools, session: str, expression: str) -> Any:
    result = await tools.call(
        "Runtime.evaluate", session, expression=expression, returnByValue=True
    )
    return result["result"].get("value")


async def wait_for(tools: DevTools, session: str, expression: str) -> Any:
    """Evaluate until the page gives a truthy answer (it renders on its own, from events)."""
    async with asyncio.timeout(20):
        while not (value := await evaluate(tools, session, expression)):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return value


async def open_page(
    tools: DevTools, url: str, width: int = 1280, height: int = 1000, mobile: bool = False
) -> str:
    """A new tab at `url` with a `width` × `height` viewport; its DevTools session."""
    target = await tools.call("Target.createTarget", url="about:blank")
    attached = await tools.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
    session: str = attached["sessionId"]
    for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
        await tools.call(domain, session)
    await tools.call(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=mobile,
    )
    await tools.call("Page.navigate", session, url=url)
    return session


VALUES = "Array.from(document.querySelectorAll('#values td.value')).map(c => c.textContent)"
OEE_FIGURES = "Array.from(document.querySelectorAll('#oee [data-kpi=oee]')).map(t => t.textContent)"
INSPECTIONS = (
    "Array.from(document.querySelectorAll('#inspections tbody tr'))"
    ".map(r => [r.cells[0].textContent, r.cells[2].textContent])"
)
# Every thumbnail shown, as [loaded, natural width]: a broken image has width 0.
THUMBNAILS = (
    "Array.from(document.querySelectorAll('#rejects img'))"
    ".map(i => [i.complete, i.naturalWidth, i.getAttribute('src')])"
)


@pytest.mark.slow
async def test_page_shows_live_values_and_oee_in_chromium(tmp_path: Path) -> None:
    binary = chromium_or_skip()
    model = bundled_model()
    async with (
        running_agent(
            tmp_path,
            plant="demo",
            speed=1.0,
            poll_interval="200ms",
            camera_model=model,
            camera_save="rejects" if model else None,
        ) as run,
        chromium(binary, tmp_path / "profile") as tools,
    ):
        session = await open_page(tools, run.url)
        await wait_for(tools, session, "document.querySelectorAll('#sources tbody tr').length")
        first = await wait_for(
            tools, session, f"{VALUES}.filter(v => v !== '–').length && {VALUES}"
        )
        # The page changes by itself (EventSource): a value moves within a few pushes.
        async with asyncio.timeout(20):
            while (later := await evaluate(tools, session, VALUES)) == first:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        machines = await evaluate(
            tools, session, "Array.from(document.querySelectorAll('#machine option')).length"
        )
        states = await evaluate(
            tools,
            session,
            "Array.from(document.querySelectorAll('#sources td.state')).map(c => c.textContent)",
        )
        # Pick another machine: the values follow.
        await evaluate(
            tools,
            session,
            "(() => { const s = document.getElementById('machine'); s.value = 'mill1';"
            " s.dispatchEvent(new Event('change')); return true; })()",
        )
        mill = await wait_for(
            tools,
            session,
            "(() => { const rows = document.querySelectorAll('#values tbody tr');"
            " return rows.length && document.getElementById('machine').value === 'mill1'"
            " && rows[0].cells[0].textContent; })()",
        )
        has_kpi = callable(getattr(run.agent, "kpi_snapshot", None))
        if has_kpi:
            # the first pushes may come before a KPI window has planned time ("–")
            oee = await wait_for(
                tools, session, f"{OEE_FIGURES}.some(f => f.endsWith('%')) && {OEE_FIGURES}"
            )
        else:
            oee = []
            no_kpi = await evaluate(
                tools,
                session,
                "!document.getElementById('oee-empty').hidden"
                " && document.getElementById('oee-empty').textContent",
            )
        inspections = []
        if model is not None:
            # the camera judges a part on every stroke: a verdict shows within a few
            inspections = await wait_for(
                tools,
                session,
                f"{INSPECTIONS}.some(r => r[1] !== 'waiting') && {INSPECTIONS}",
            )
        if shot := os.environ.get("LINESIDE_SCREENSHOT"):
            await tools.call("Page.navigate", session, url=run.url)  # back to the first machine
            await wait_for(tools, session, f"{VALUES}.filter(v => v !== '–').length")
            if model is not None:  # a reject's thumbnail in the picture (one part in twenty)
                wait = float(os.environ.get("LINESIDE_SCREENSHOT_WAIT", "120"))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        while not await evaluate(  # noqa: ASYNC110
                            tools, session, f"{THUMBNAILS}.some(t => t[0] && t[1] > 0)"
                        ):
                            await asyncio.sleep(0.5)
            await asyncio.sleep(1.5)  # a couple of pushes, so the rates are measured
            image = await tools.call(
                "Page.captureScreenshot", session, format="png", captureBeyondViewport=True
            )
            await asyncio.to_thread(keep_small, base64.b64decode(image["data"]), Path(shot))
        await asyncio.sleep(0.3)  # let late console messages arrive
        thumbnails = await evaluate(tools, session, THUMBNAILS)
        errors = [
            e
            for e in tools.events
            if e["method"] == "Runtime.exceptionThrown"
            or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
            or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        ]
    assert errors == [], errors
    assert machines == 5
    assert states and all(s in ("connected", "connecting") for s in states), states
    assert later != first
    assert mill  # the mill's first tag name
    if has_kpi:
        assert oee and all(f.endswith("%") or f == "–" for f in oee), oee
        assert any(f.endswith("%") for f in oee), oee
    else:
        assert no_kpi == "no KPI configured"
    if model is not None:
        assert inspections and inspections[0][0] == "press1-surface", inspections
        assert inspections[0][1] in ("OK", "NotOK", "NotDecidable"), inspections
    # a reject seen so far shows its saved image, loaded (the route served a real JPEG)
    assert all(loaded and width > 0 for loaded, width, _ in thumbnails), thumbnails
    assert all(src.startswith("images/press1-surface/") for _, _, src in thumbnails), thumbnails


def test_skips_only_outside_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Chromium, CI fails instead of skipping (a skipped browser test proves nothing)."""
    missing = str(tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="installs Debian's chromium"):
        chromium_or_skip(missing)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        chromium_or_skip(missing)
