"""The status page in headless Chromium, for commissioning: state names beside their codes and
each source's error list, read from the page's DOM over the DevTools protocol."""

from __future__ import annotations

from pathlib import Path

from agent.codenames import PACKML_STATES
from firmware_sim.machines.press import DIES
from tests.agent.web.running import running_agent
from tests.integration.test_status_page import chromium, chromium_or_skip, open_page, wait_for

ERRORS = (
    "Array.from(document.querySelectorAll('#errors tbody tr'))"
    ".map(r => Array.from(r.cells).map(c => c.textContent))"
)
STATE = (
    "Array.from(document.querySelectorAll('#values tbody tr'))"
    ".filter(r => r.cells[0].textContent === 'state').map(r => r.cells[1].textContent)[0]"
)


async def test_page_names_states_and_lists_errors_in_chromium(tmp_path: Path) -> None:
    binary = chromium_or_skip()
    async with (
        running_agent(tmp_path, speed=1.0, poll_interval="200ms") as run,
        chromium(binary, tmp_path / "profile") as tools,
    ):
        session = await open_page(tools, f"{run.url}?machine=press2")
        state = await wait_for(tools, session, STATE + " || ''")
        none = await wait_for(tools, session, f"{ERRORS}.length && {ERRORS}")
        run.plant.units["press1"].faults.set("exception", code=2)
        errors = await wait_for(
            tools, session, f"{ERRORS}.some(r => r[0] === 'press1-plc') && {ERRORS}"
        )
        code = int(state.rsplit("(", 1)[1].rstrip(")"))
    assert state == f"{PACKML_STATES[code]} ({code})", state
    assert none == [["no errors since start"]]
    (row,) = [r for r in errors if r[0] == "press1-plc"]
    assert row[1] == "illegal data address (02)"
    assert row[2] and row[3] and int(row[4].replace(",", "")) >= 1 and row[5] == "now", row


TEXT = (
    "Array.from(document.querySelectorAll('#values tbody tr'))"
    ".filter(r => r.cells[0].textContent === 'die_id').map(r => r.cells[1].textContent)[0]"
)


async def test_page_shows_a_text_tag_as_its_string_in_chromium(tmp_path: Path) -> None:
    """The press's die id (a Modbus string) in the page's DOM, as the plant holds it."""
    binary = chromium_or_skip()
    async with (
        running_agent(tmp_path, speed=1.0, poll_interval="200ms") as run,
        chromium(binary, tmp_path / "profile") as tools,
    ):
        session = await open_page(tools, f"{run.url}?machine=press1")
        shown = await wait_for(tools, session, TEXT + " || ''")
        truth = str(run.plant.machines["press1"].values()["die_id"])
    assert shown in DIES and shown == truth, (shown, truth)
