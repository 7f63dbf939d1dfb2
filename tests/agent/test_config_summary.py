"""The validate summary: as data for --json, and as one screen of tables."""

import json
from pathlib import Path

import pytest
from rich.console import Console

from agent.config import load_config
from agent.store.bounds import record_bytes
from agent.summary import render_summary, summary_dict

EXAMPLES_DIR = Path(__file__).parents[2] / "examples"


def test_summary_dict_of_press_line() -> None:
    summary = summary_dict(load_config(EXAMPLES_DIR / "press-line.toml"))
    json.dumps(summary)  # plain data only
    assert summary["agent"] == {
        "id": "suzhou-press-edge-1",
        "data_dir": str((EXAMPLES_DIR / "data").resolve()),
    }
    assert summary["site"] == "suzhou"
    machines = summary["machines"]
    assert isinstance(machines, list)
    assert [(m["name"], m["sources"], len(m["tags"])) for m in machines] == [
        ("press1", ["press1-plc"], 5),
        ("press2", ["press2-plc"], 8),
    ]
    sources = summary["sources"]
    assert isinstance(sources, list)
    assert sources[0] == {
        "name": "press1-plc",
        "type": "modbus_tcp",
        "endpoint": "192.168.10.21:502",
        "unit_ids": [1],
        "machines": ["press1"],
        "tags": 5,
        "poll_intervals": ["1s", "5s"],
    }
    assert sources[1]["poll_intervals"] == ["500ms"]
    calendar = summary["calendar"]
    assert isinstance(calendar, dict)
    assert calendar["shifts"][1] == {
        "name": "night",
        "start": "20:00",
        "end": "08:00",
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "breaks": ["00:00-00:30"],
    }


def test_summary_dict_of_sinks() -> None:
    summary = summary_dict(load_config(EXAMPLES_DIR / "mqtt-sinks.toml"))
    assert summary["sinks"] == [
        {"name": "uns", "type": "mqtt", "endpoint": "mqtts://broker.plant.local:8883"},
        {"name": "scada", "type": "sparkplug", "endpoint": "mqtt://10.0.0.5:1883"},
        {"name": "mes", "type": "http", "endpoint": "https://mes.plant.local/api/v1/production"},
    ]
    assert summary["calendar"] is None


def test_render_summary_fits_one_screen() -> None:
    console = Console(record=True, width=120)
    render_summary(load_config(EXAMPLES_DIR / "cement.toml"), console)
    text = console.export_text()
    for expected in (
        "anhui-cement-edge-1",
        "mill1",
        "grinding / cement-mill-1",
        "mill-bus",
        "/dev/ttyUSB0 19200 8E1",
        "1, 7",
        "10.0.3.40:502",
        "No sinks",
        "Shifts (Asia/Shanghai)",
    ):
        assert expected in text, expected
    assert len(text.splitlines()) < 50


def test_the_summary_says_how_many_days_the_size_bound_holds(tmp_path: Path) -> None:
    tags = "".join(
        f'[[sources.units.tags]]\nname = "t{i}"\naddress = "hr:{i}"\ntype = "uint16"\n'
        for i in range(50)
    )
    path = tmp_path / "lineside.toml"
    path.write_text(
        'config_version = 1\n[agent]\nid = "demo"\n[plant]\nsite = "s"\n'
        '[[machines]]\nname = "press1"\narea = "a"\nline = "l"\n'
        '[store]\nmax_size = "700kB"\n'
        '[[sources]]\nname = "plc"\ntype = "modbus_tcp"\nhost = "127.0.0.1"\n'
        '[[sources.units]]\nunit_id = 1\nmachine = "press1"\npoll_interval = "100ms"\n' + tags
    )
    config = load_config(path)
    store = summary_dict(config)["store"]
    assert isinstance(store, dict)
    per_day = 10 * record_bytes(50) * 86400  # ten records of 50 readings a second
    assert store["bytes_per_day"] == round(per_day)
    assert store["days_held"] == pytest.approx(700_000 / per_day)
    console = Console(record=True, width=200)
    render_summary(config, console)
    text = console.export_text()
    assert "max_size 700kB holds about 1.4 minutes" in text
    assert "less than max_age 7d" in text


def test_a_press_line_holds_its_week() -> None:
    console = Console(record=True, width=200)
    config = load_config(EXAMPLES_DIR / "press-line.toml")
    render_summary(config, console)
    assert "records stay for max_age 7d" in console.export_text()


def test_each_poll_group_is_one_stored_record_per_poll(tmp_path: Path) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(
        'config_version = 1\n[agent]\nid = "demo"\n[plant]\nsite = "s"\n'
        '[[machines]]\nname = "m1"\narea = "a"\nline = "l"\n'
        '[[machines]]\nname = "m2"\narea = "a"\nline = "l"\n'
        '[[sources]]\nname = "plc"\ntype = "modbus_tcp"\nhost = "127.0.0.1"\n'
        '[[sources.units]]\nunit_id = 1\nmachine = "m1"\npoll_interval = "500ms"\n'
        '[[sources.units.tags]]\nname = "a"\naddress = "hr:0"\ntype = "uint16"\n'
        '[[sources.units.tags]]\nname = "b"\naddress = "hr:1"\ntype = "uint16"\n'
        '[[sources.units.tags]]\nname = "c"\naddress = "hr:2"\ntype = "uint16"\n'
        'interval = "5s"\n'
        '[[sources]]\nname = "ua"\ntype = "opcua"\nendpoint = "opc.tcp://127.0.0.1:4840"\n'
        'machine = "m2"\ninterval = "1s"\n'
        '[[sources.tags]]\nname = "x"\nnode_id = "ns=2;s=x"\n'
        '[[sources.tags]]\nname = "y"\nnode_id = "ns=2;s=y"\narray_length = 3\n'
        '[[sources.tags]]\nname = "z"\nnode_id = "ns=2;s=z"\ninterval = "10s"\n'
    )
    modbus, opcua = load_config(path).sources
    assert modbus.poll_groups() == ((0.5, 2), (5.0, 1))
    assert opcua.poll_groups() == ((1.0, 4), (10.0, 1))  # an array's elements are readings
