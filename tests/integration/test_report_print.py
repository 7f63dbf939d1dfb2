"""The shift report in headless Chromium: it renders its charts, nothing is wider than an A4
page in print, and it prints on a bounded number of A4 pages (counted in the PDF Chromium
prints). Set LINESIDE_REPORT_SCREENSHOT=<file.png> to keep a screenshot (docs/img/)."""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path

import pytest

from agent.config import load_config
from agent.kpi.document import shift_report
from tests.integration.test_status_page import chromium, chromium_or_skip, evaluate, open_page

A4_W_IN, A4_H_IN = 8.27, 11.69
MARGIN_IN = 0.47  # 12 mm, the report's @page margin
CSS_PX = 96  # CSS pixels per inch


def pdf_pages(pdf: bytes) -> int:
    """Pages of a PDF: its page objects (`/Type /Page`, not the `/Pages` tree nodes)."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


def test_pdf_pages_counts_page_objects_only() -> None:
    pdf = b"<< /Type /Pages /Kids [3 0 R 4 0 R] >> << /Type /Page >> << /Type/Page /Parent >>"
    assert pdf_pages(pdf) == 2


def with_targets(config: Path, out: Path) -> Path:
    """`config` written to `out` with targets for every machine (the shared store's config
    stays as it is): the table and the dashed target lines have something to show."""
    text = config.read_text(encoding="utf-8")
    text = re.sub(r"^target_(oee|output) = .*\n", "", text, flags=re.MULTILINE)  # the starter's
    text = re.sub(
        r"(\[machines\.kpi\][^\n]*\n)", r"\1target_oee = 0.85\ntarget_output = 2000\n", text
    )
    out.write_text(text, encoding="utf-8")
    return out


@pytest.mark.timeout(180)
async def test_the_report_renders_and_fits_a4_in_chromium(
    tmp_path: Path, shift_store: Path
) -> None:
    binary = chromium_or_skip()
    config = load_config(with_targets(shift_store, tmp_path / "targets.toml"))
    html = shift_report(config, "2026-11-23/A", time.time_ns())
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    async with chromium(binary, tmp_path / "profile") as tools:
        session = await open_page(tools, page.as_uri(), 900, 1200)
        for _ in range(100):  # bounded: until the document has loaded
            if await evaluate(tools, session, "document.readyState") == "complete":
                break
            await tools.call("Runtime.evaluate", session, expression="0")
        counts = await evaluate(
            tools,
            session,
            "Object.fromEntries(['gantt', 'waterfall', 'pareto', 'trend', 'bars'].map("
            "c => [c, document.querySelectorAll('svg.' + c).length]))",
        )
        segments = await evaluate(
            tools, session, "document.querySelectorAll('rect.segment').length"
        )
        targets = await evaluate(tools, session, "document.querySelectorAll('line.target').length")
        # Every chart is drawn with a size (a broken SVG renders 0 x 0).
        sizes = await evaluate(
            tools,
            session,
            "Array.from(document.querySelectorAll('svg')).map(s => "
            "[s.getBoundingClientRect().width, s.getBoundingClientRect().height])",
        )
        if path := os.environ.get("LINESIDE_REPORT_SCREENSHOT"):
            shot = await tools.call(
                "Page.captureScreenshot", session, format="png",
                clip={"x": 0, "y": 0, "width": 900, "height": 1900, "scale": 1},
                captureBeyondViewport=True,
            )  # fmt: skip
            Path(path).write_bytes(base64.b64decode(shot["data"]))  # noqa: ASYNC240
        # Print: A4 content width in CSS pixels; nothing may reach beyond it.
        await tools.call("Emulation.setEmulatedMedia", session, media="print")
        content_px = (A4_W_IN - 2 * MARGIN_IN) * CSS_PX
        await tools.call(
            "Emulation.setDeviceMetricsOverride",
            session, width=round(content_px), height=1000, deviceScaleFactor=1, mobile=False,
        )  # fmt: skip
        widest = await evaluate(
            tools,
            session,
            "Math.max(document.documentElement.scrollWidth, ...Array.from("
            "document.querySelectorAll('svg, table')).map(e => e.getBoundingClientRect().right))",
        )
        culprit = await evaluate(
            tools,
            session,
            "Array.from(document.querySelectorAll('svg, table')).filter(e => "
            f"e.getBoundingClientRect().right > {content_px + 1}).map(e => e.className.baseVal"
            " ?? e.className)",
        )
        printed = await tools.call(
            "Page.printToPDF", session, paperWidth=A4_W_IN, paperHeight=A4_H_IN,
            marginTop=0, marginBottom=0, marginLeft=0, marginRight=0,
            preferCSSPageSize=True,
        )  # fmt: skip
    pdf = base64.b64decode(printed["data"])
    rows = 5  # press1, press2, mill1 and two lines
    assert counts == {"gantt": 1, "waterfall": rows, "pareto": rows, "trend": 1, "bars": 1}
    assert segments >= 3, "the machines' states are drawn"
    assert targets == 3, "a target line per machine on the hourly trend"
    assert all(w > 100 and h > 20 for w, h in sizes), sizes
    assert widest <= content_px + 1, f"{widest} CSS px wider than A4 ({content_px:.0f}): {culprit}"
    pages = pdf_pages(pdf)
    assert 1 <= pages <= 8, f"{pages} A4 pages for one shift"
