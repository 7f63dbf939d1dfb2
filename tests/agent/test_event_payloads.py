"""One Verdict enum and the typed payloads of the events the agent reads back: the stored JSON
stays byte for byte what it was."""

import json

from agent.model import Event, EventKind, InspectionVerdict, Outage, Verdict
from vision.adapters import VERDICT_CODES
from vision.writeback import verdict_value


def test_one_verdict_enum_with_the_register_codes() -> None:
    assert [(v.value, v.code) for v in Verdict] == [("OK", 1), ("NotOK", 2), ("NotDecidable", 3)]
    assert VERDICT_CODES == {"OK": 1, "NotOK": 2, "NotDecidable": 3}  # vision's, derived
    assert json.dumps({"verdict": Verdict.NOT_OK}) == '{"verdict": "NotOK"}'
    assert Verdict.parse("Maybe") is None


def test_a_write_back_writes_the_enums_code() -> None:
    from connectors.modbus.address import parse_address

    assert verdict_value(parse_address("hr:10"), "NotDecidable") == Verdict.NOT_DECIDABLE.code


def test_an_inspection_event_gives_its_verdict_and_an_audit_none() -> None:
    data = {"inspection": "cam1", "verdict": "NotOK", "score": 0.9}
    event = Event(EventKind.INSPECTION, 5, "press1", data)
    assert InspectionVerdict.of(event) == InspectionVerdict("cam1", Verdict.NOT_OK)
    audit = Event(EventKind.INSPECTION, 5, "press1", {**data, "audit": True})
    assert InspectionVerdict.of(audit) is None
    assert InspectionVerdict.of(Event(EventKind.ALARM, 5, None, data)) is None


def test_an_outage_is_stored_as_it_always_was() -> None:
    event = Outage(10, 20, "agent stopped").event()
    stored = json.dumps(event.data, separators=(",", ":"))
    assert stored == (
        '{"source":"agent","state":"outage","detail":"agent stopped","cause":"agent stopped",'
        '"start_ns":10,"end_ns":20}'
    )
    assert (event.kind, event.ts_ns, event.machine) == (EventKind.CONNECTION, 10, None)
    assert Outage.of(event) == Outage(10, 20, "agent stopped")
