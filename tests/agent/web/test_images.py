"""`/images/<inspection>/<file>`: saved images of rejected parts, and never anything else.

The route is tested twice: `read_image` on real files and symlinks (every trick in one table),
then over HTTP against a real agent whose inspection judged real frames with a real ONNX model
and saved its rejects, with raw requests so no client tidies the path first.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from agent.web.images import MAX_IMAGE, NoImage, image_target, read_image
from tests.agent.web.running import running_agent
from tests.agent.web.test_server import samples
from tests.vision import onnx_graphs as graphs
from tests.vision.parts import write_parts
from tests.waiting import until

JPEG = b"\xff\xd8\xff\xe0" + b"jpeg body"
PNG = b"\x89PNG\r\n\x1a\n" + b"png body"


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path | None]:
    rejects = tmp_path / "rejects"
    rejects.mkdir()
    (rejects / "1_NotOK_part.jpg").write_bytes(JPEG)
    (rejects / "2_NotOK_part.PNG").write_bytes(PNG)
    (rejects / "notes.txt").write_bytes(b"not an image")
    (rejects / "page.jpg").write_bytes(b"<html><script>alert(1)</script>")  # not a JPEG inside
    (rejects / "big.jpg").write_bytes(JPEG + b"\0" * MAX_IMAGE)
    (rejects / "dir.jpg").mkdir()
    (tmp_path / "secret.jpg").write_bytes(JPEG + b"outside the folder")
    (rejects / "out.jpg").symlink_to(tmp_path / "secret.jpg")
    (rejects / "in.jpg").symlink_to(rejects / "1_NotOK_part.jpg")  # even inside: refused
    os.mkfifo(rejects / "fifo.jpg")  # must not hang the reader
    return {"surface": rejects, "nosave": None}


def test_an_image_in_the_folder_is_served(folders: dict[str, Path | None]) -> None:
    assert read_image("/images/surface/1_NotOK_part.jpg", folders) == (JPEG, "image/jpeg")
    assert read_image("/images/surface/2_NotOK_part.PNG", folders) == (PNG, "image/png")
    assert read_image("/images/surface/1%5FNotOK%5Fpart.jpg", folders)[0] == JPEG  # %5F is "_"


@pytest.mark.parametrize(
    "path",
    [
        "/images/surface/../secret.jpg",
        "/images/surface/..%2Fsecret.jpg",
        "/images/surface/..%2fsecret.jpg",
        "/images/surface/%2e%2e/secret.jpg",
        "/images/surface/%2e%2e%2fsecret.jpg",
        "/images/surface/%252e%252e%252fsecret.jpg",  # double-encoded: decoded once only
        "/images/surface/..%5Csecret.jpg",
        "/images/surface//etc/passwd",
        "/images/surface/%2Fetc%2Fpasswd",
        "/images/surface/%2Ftmp%2Fsecret.jpg",
        "/images/../rejects/1_NotOK_part.jpg",
        "/images/%2e%2e/1_NotOK_part.jpg",
        "/images/surface/1_NotOK_part.jpg%00.txt",
        "/images/surface/1_NotOK_part.jpg/x",
        "/images/surface/",
        "/images/surface",
        "/images//1_NotOK_part.jpg",
        "/images/surface/.hidden.jpg",
        "/images/surface/%ff.jpg",  # not UTF-8
        "/images/surface/out.jpg",  # a symlink out of the folder
        "/images/surface/in.jpg",  # a symlink, even to an image inside
        "/images/surface/notes.txt",
        "/images/surface/page.jpg",  # named .jpg, not a JPEG
        "/images/surface/big.jpg",
        "/images/surface/dir.jpg",
        "/images/surface/fifo.jpg",
        "/images/surface/missing.jpg",
        "/images/nosave/1_NotOK_part.jpg",  # an inspection that saves nothing
        "/images/other/1_NotOK_part.jpg",  # no such inspection
        "/images/SURFACE/1_NotOK_part.jpg",
    ],
)
def test_anything_else_is_refused(folders: dict[str, Path | None], path: str) -> None:
    with pytest.raises(NoImage):
        read_image(path, folders)


def test_the_target_is_always_inside_the_folder(folders: dict[str, Path | None]) -> None:
    target = image_target("/images/surface/1_NotOK_part.jpg", folders)
    assert target.parent == folders["surface"]


# ---------------------------------------------------------------------------------------------
# Over HTTP, with the agent's own saved rejects


INSPECTIONS = """
[[inspections]]
name = "surface"
machine = "press1"
source = { type = "folder", path = "frames" }
model = "surface.onnx"
save = { dir = "rejects", good_sample = 0.0 }

[[inspections]]
name = "nosave"
machine = "press2"
source = { type = "folder", path = "frames" }
model = "surface.onnx"
"""


async def raw_get(port: int, target: bytes, headers: bytes = b"") -> bytes:
    """A GET sent byte for byte (httpx would normalise `..` and re-encode the path)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    return answer


def prepare(tmp_path: Path) -> None:
    write_parts(tmp_path / "frames", [False, True, False, True, True])
    graphs.anomaly_model(tmp_path / "surface.onnx")
    (tmp_path / "secret.jpg").write_bytes(JPEG + b"outside")


async def test_the_page_links_the_saved_rejects_and_serves_only_them(tmp_path: Path) -> None:
    prepare(tmp_path)
    async with running_agent(tmp_path, more=INSPECTIONS) as run:
        await until(lambda: sum(i.stats.inspected for i in run.agent.inspectors) == 10)
        await asyncio.sleep(1.1)  # past the shared state's refresh
        async with httpx.AsyncClient(base_url=run.url) as client:
            state = (await client.get("/api/state")).json()
            rejects = state["inspections"]["rejects"]
            # both inspections judge every frame; which one reports last is a race
            saved_url = next(r["image_url"] for r in rejects if r["image_url"] is not None)
            first = await client.get(saved_url)
            metrics = samples((await client.get("/metrics")).text)
        rejects_dir = tmp_path / "rejects"
        (rejects_dir / "link.jpg").symlink_to(tmp_path / "secret.jpg")
        port = run.web.port
        refused = {
            target: await raw_get(port, target)
            for target in (
                b"/images/surface/../secret.jpg",
                b"/images/surface/..%2Fsecret.jpg",
                b"/images/surface/%2e%2e%2Fsecret.jpg",
                b"/images/surface/%2Fetc%2Fpasswd",
                b"/images/surface/link.jpg",
                b"/images/nosave/" + saved_url.rsplit("/", 1)[1].encode(),
                b"/images/../lineside.toml",
            )
        }
    # five frames, three with a defect, judged by both inspections: six rejects, newest first
    assert [r["inspection"] for r in rejects].count("surface") == 3
    assert [r["inspection"] for r in rejects].count("nosave") == 3
    assert [r["source"] for r in rejects if r["inspection"] == "surface"] == [
        "part04.jpg",
        "part03.jpg",
        "part01.jpg",
    ]
    assert all(r["image_url"] is None for r in rejects if r["inspection"] == "nosave")
    saved = sorted(rejects_dir.glob("*_NotOK_*.jpg"))
    assert len(saved) == 3
    newest = rejects[[r["inspection"] for r in rejects].index("surface")]
    assert newest["image_url"] == f"images/surface/{saved[-1].name}"
    assert first.status_code == 200
    assert first.headers["content-type"] in ("image/jpeg", "image/png")
    assert first.content == (tmp_path / "rejects" / first.url.path.rsplit("/", 1)[1]).read_bytes()
    assert "immutable" in first.headers["cache-control"]
    # every verdict in the inspections' histograms and counts
    for name in ("surface", "nosave"):
        label = (("inspection", name),)
        assert metrics["lineside_inspection_latency_seconds_count", label] == 5
        assert metrics["lineside_inspection_latency_seconds_sum", label] > 0
        assert metrics["lineside_inspection_verdicts_total", (*label, ("verdict", "NotOK"))] == 3
        assert metrics["lineside_inspection_verdicts_total", (*label, ("verdict", "OK"))] == 2
    for target, answer in refused.items():
        assert answer.startswith(b"HTTP/1.1 404 "), target
        assert b"outside" not in answer and b"[agent]" not in answer, target


async def test_images_ask_for_the_token_like_every_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare(tmp_path)
    monkeypatch.setenv("LINESIDE_TEST_TOKEN", "s3cret-token")
    web = 'bind = "0.0.0.0"\nport = 0\ntoken_env = "LINESIDE_TEST_TOKEN"'
    async with running_agent(tmp_path, web=web, more=INSPECTIONS) as run:
        await until(lambda: any(i.stats.saved for i in run.agent.inspectors))
        name = sorted((tmp_path / "rejects").glob("*.jpg"))[0].name
        target = f"/images/surface/{name}".encode()
        bare = await raw_get(run.web.port, target)
        wrong = await raw_get(run.web.port, target, b"Authorization: Bearer nope\r\n")
        good = await raw_get(run.web.port, target, b"Authorization: Bearer s3cret-token\r\n")
        cookie = await raw_get(run.web.port, target, b"Cookie: lineside_token=s3cret-token\r\n")
    assert bare.startswith(b"HTTP/1.1 401 ") and wrong.startswith(b"HTTP/1.1 401 ")
    assert good.startswith(b"HTTP/1.1 200 ") and b"\r\nContent-Type: image/jpeg\r\n" in good
    assert cookie.startswith(b"HTTP/1.1 200 ")
