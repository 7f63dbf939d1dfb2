"""Upgrades: a store written by the previous release opens in this one; a newer one is refused.

`fixtures/store-16033ae.db` was written by `lineside demo` at commit 16033ae (the last release
before the service work); `store-16033ae.json` holds what that code read back from it.
"""

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.errors import StoreTooNew
from agent.store import Store
from agent.store.schema import MIGRATIONS, db_path

FIXTURES = Path(__file__).parent / "fixtures"
OLD = FIXTURES / "store-16033ae.db"
FACTS = json.loads((FIXTURES / "store-16033ae.json").read_text())


def old_store(data: Path) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(OLD, db_path(data))  # a copy: opening migrates the file in place
    return data


def test_the_previous_release_s_store_opens_with_every_record(tmp_path: Path) -> None:
    data = old_store(tmp_path / "data")
    with Store(data) as store:
        tags = store.tags()
        batches = store.read_telemetry(0, 10_000)
        events = store.read_events(0, 10_000)
    assert len(tags) == FACTS["tags"]
    assert tags[1].path == FACTS["tag_1"]
    assert len(batches) == FACTS["telemetry_records"]
    assert sum(len(b.batch) for b in batches) == FACTS["readings"]
    assert batches[-1].seq == FACTS["last_telemetry_seq"]
    first, expected = batches[0].batch, FACTS["first_batch"]
    assert first.source == expected["source"]
    assert first.tag_ids.tolist() == expected["tag_ids"]
    np.testing.assert_array_equal(first.values, np.array(expected["values"], dtype=float))
    assert first.quality.tolist() == expected["quality"]
    kinds: dict[str, int] = {}
    for event in events:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    assert kinds == FACTS["events"]


def test_the_previous_release_s_store_keeps_taking_records(tmp_path: Path) -> None:
    data = old_store(tmp_path / "data")
    with Store(data) as store:
        store.register_sinks(["uns"])
        store.advance_cursor("uns", "telemetry", 10)
        store.set_meta("probe", "1")
    with Store(data) as store:
        assert store.cursor("uns", "telemetry") == 10
        assert store.get_meta("probe") == "1"
    conn = sqlite3.connect(db_path(data))
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert int(version[0]) == len(MIGRATIONS)


def newer(data: Path) -> Path:
    old_store(data)
    conn = sqlite3.connect(db_path(data))
    with conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(len(MIGRATIONS) + 1)]
        )
    conn.close()
    return data


def test_a_store_from_a_newer_lineside_is_refused_and_left_alone(tmp_path: Path) -> None:
    data = newer(tmp_path / "data")
    before = db_path(data).read_bytes()
    n = len(MIGRATIONS)
    with pytest.raises(
        StoreTooNew,
        match=rf"written by a newer lineside \(schema {n + 1}\); this is schema {n}: "
        "upgrade lineside or restore a backup",
    ):
        Store(data)
    assert db_path(data).read_bytes() == before


def test_run_on_a_newer_store_exits_2_with_one_line(tmp_path: Path) -> None:
    newer(tmp_path / "data")
    config = tmp_path / "lineside.toml"
    config.write_text(
        'config_version = 1\n[agent]\nid = "edge"\n[plant]\nsite = "s"\n[web]\nenabled = false\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(config), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "written by a newer lineside" in result.stderr
    assert "upgrade lineside or restore a backup" in result.stderr
    assert "Traceback" not in result.stderr
