"""Alarms: the `[[alarms]]` conditions evaluated on every stored batch, raised and cleared as
`alarm` events, acknowledged as `audit` events.

Pure: `AlarmBook` holds each alarm's state (pending since, active since, acknowledged) and
turns batches and clock ticks into events; it does no I/O, so the runtime stores and forwards
what it returns like every other event. A batch is first matched against every watched tag id
in one `np.isin`; only the rows of an alarm's own tag are then walked, in order, because a
delay and hysteresis depend on the sequence of readings.

The event data keeps the shape of the store's own `store_full` alarm (`alarm`, `active`,
`reason`) and adds the tag, value, limit, condition and severity; a cleared alarm carries
`active_s`, how long it was active.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.config.sections import AlarmSection
from agent.kpi.config import MachineKpi
from agent.kpi.states import PACKML_PRODUCTION
from agent.model import Event, EventKind, Quality, ReadingBatch

NS = 1_000_000_000


def state_codes(kpi: MachineKpi, state: str) -> tuple[float, ...]:
    """The raw codes of the machine's state tag that mean `state`: its code table, or the
    PackML states of that category in Production mode (the config refuses PackML's setup and
    planned stop, which the unit mode decides)."""
    if kpi.packml:
        return tuple(float(c) for c, name in PACKML_PRODUCTION.items() if name == state)
    return tuple(float(c) for c in (kpi.states or {}).get(state, ()))  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class AlarmRule:
    """One configured alarm bound to its tag's store id."""

    name: str
    machine: str
    tag: str
    tag_id: int
    condition: str  # state, above, below, equals, stale
    limit: float  # the limit or value compared with; the stale duration in seconds for stale
    hysteresis: float
    delay_ns: int
    severity: str
    message: str
    state: str | None = None  # a state alarm: the state's name and its codes
    codes: tuple[float, ...] = ()

    @classmethod
    def of(cls, section: AlarmSection, tag_id: int, kpi: MachineKpi | None = None) -> AlarmRule:
        """The rule of one entry; a state alarm needs its machine's `[machines.kpi]`."""
        condition = section.condition
        codes: tuple[float, ...] = ()
        tag = section.tag
        if section.state is not None:
            assert kpi is not None  # the config's cross-check
            tag = kpi.state
            codes = state_codes(kpi, section.state)
            limit = math.nan
        else:
            limit = float(getattr(section, condition))
        # Stale is "no good reading for `stale`": a bad-quality condition with that delay.
        delay = limit if condition == "stale" else section.delay
        assert tag is not None  # the config model's check
        return cls(
            name=section.name,
            machine=section.machine,
            tag=tag,
            tag_id=tag_id,
            condition=condition,
            limit=limit,
            hysteresis=section.hysteresis,
            delay_ns=int(delay * NS),
            severity=section.severity,
            message=section.message,
            state=section.state,
            codes=codes,
        )

    def conditions(
        self, values: npt.NDArray[np.float64], quality: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Per reading: does it raise (`on`), does it clear (`off`)? Neither: the state holds
        (a value inside the hysteresis band, or a bad reading of a limit alarm)."""
        good = quality == Quality.GOOD
        if self.condition == "stale":
            return ~good, good
        if self.condition == "state":
            on = np.isin(values, self.codes)
            return on & good, ~on & good
        if self.condition == "above":
            on, off = values > self.limit, values <= self.limit - self.hysteresis
        elif self.condition == "below":
            on, off = values < self.limit, values >= self.limit + self.hysteresis
        else:
            on = values == self.limit
            off = ~on
        return on & good, off & good

    def reason(self, value: float | None) -> str:
        if self.message:
            return self.message
        if self.condition == "stale":
            return f"{self.tag}: no good reading for {self.limit:g} s"
        if self.condition == "state":
            return f"{self.machine} is {str(self.state).replace('_', ' ')}"
        shown = "no value" if value is None else f"{value:g}"
        word = "=" if self.condition == "equals" else self.condition
        return f"{self.tag} {shown} {word} {self.limit:g}"


def rules_of(
    sections: Sequence[AlarmSection],
    ids: Mapping[tuple[str, str], int],
    kpis: Mapping[str, MachineKpi] | None = None,
) -> list[AlarmRule]:
    """The rules of the `[[alarms]]` entries; `ids` maps (machine, tag) to the tag's store id,
    `kpis` the running machines' `[machines.kpi]` sections (for state alarms). ValueError when
    a state alarm's machine runs without KPIs (added by a reload: a restart adds its KPIs)."""
    rules = []
    for s in sections:
        kpi = (kpis or {}).get(s.machine)
        if s.state is not None and kpi is None:
            raise ValueError(
                f"alarm {s.name!r}: machine {s.machine!r} runs without [machines.kpi] until a "
                "restart, so its state is not known"
            )
        tag = kpi.state if s.state is not None and kpi is not None else s.tag
        rules.append(AlarmRule.of(s, ids[s.machine, str(tag)], kpi))
    return rules


def _same(a: AlarmRule, b: AlarmRule) -> bool:
    """Equal rules; a state alarm's limit is NaN, which equals nothing."""
    both_nan = math.isnan(a.limit) and math.isnan(b.limit)
    return a == b or (both_nan and replace(a, limit=0.0) == replace(b, limit=0.0))


@dataclass(slots=True)
class AlarmState:
    pending_ns: int | None = None  # when the condition began to hold (the delay runs)
    since_ns: int | None = None  # when raised; None while clear
    value: float | None = None  # the reading that raised it
    acknowledged: bool = False
    acknowledged_by: str | None = None
    raised: int = 0  # times raised in this run (`/metrics`)


def _watched(rules: Sequence[AlarmRule]) -> npt.NDArray[np.int32]:
    """The tag ids the rules watch, sorted and distinct, as np.unique gives, without it:
    np.unique imports numpy.ma (1.3 MB of the running agent's memory) to look for masks."""
    return np.array(sorted({r.tag_id for r in rules}), dtype=np.int32)


class AlarmBook:
    """Every configured alarm's state; fed stored batches and ticks, returns alarm events."""

    def __init__(self, rules: Sequence[AlarmRule], start_ns: int) -> None:
        self.rules = tuple(rules)
        self.states = {r.name: AlarmState() for r in self.rules}
        # A stale alarm counts from the start: a source that never answers is stale too.
        for rule in self.rules:
            if rule.condition == "stale":
                self.states[rule.name].pending_ns = start_ns
        self._watched = _watched(self.rules)

    @classmethod
    def from_config(
        cls,
        sections: Sequence[AlarmSection],
        ids: Mapping[tuple[str, str], int],
        start_ns: int,
        kpis: Mapping[str, MachineKpi] | None = None,
    ) -> AlarmBook:
        """Rules from the config; `ids` maps (machine, tag) to the tag's store id, `kpis` the
        machines' `[machines.kpi]` sections (for state alarms)."""
        return cls(rules_of(sections, ids, kpis), start_ns)

    def reconfigure(self, rules: Sequence[AlarmRule], now_ns: int) -> list[Event]:
        """Take the rules of a reloaded config. An alarm whose rule is the same keeps its
        state (active, pending, acknowledged); one removed or changed is cleared with an event
        when it is active (`cleared_by`: "config reload"), and a changed or added one starts
        clear, as at start. The events to store, in the old rules' order."""
        before = {r.name: r for r in self.rules}
        states: dict[str, AlarmState] = {}
        events: list[Event] = []
        for rule in rules:
            old = before.pop(rule.name, None)
            if old is not None and _same(old, rule):
                states[rule.name] = self.states[rule.name]
                continue
            if old is not None:
                events += self._retire(old, now_ns)
            states[rule.name] = AlarmState(now_ns if rule.condition == "stale" else None)
        for old in before.values():
            events += self._retire(old, now_ns)
        self.rules = tuple(rules)
        self.states = states
        self._watched = _watched(self.rules)
        return events

    def _retire(self, rule: AlarmRule, now_ns: int) -> list[Event]:
        """The clear event of an active alarm that a reload removes or changes."""
        state = self.states[rule.name]
        if state.since_ns is None:
            return []
        data = self._data(rule, False, None)
        data["reason"] = rule.reason(state.value)  # why it was raised
        data["active_s"] = round((now_ns - state.since_ns) / NS, 3)
        data["cleared_by"] = "config reload"
        return [Event(EventKind.ALARM, now_ns, rule.machine, data)]

    def on_batch(self, batch: ReadingBatch) -> list[Event]:
        if not self.rules:
            return []
        hit = np.isin(batch.tag_ids, self._watched)
        if not bool(hit.any()):
            return []
        rows = np.flatnonzero(hit)
        ids = batch.tag_ids[rows]
        values = batch.values[rows]
        quality = batch.quality[rows]
        ts = batch.timestamps()[rows]
        events: list[Event] = []
        for rule in self.rules:
            mine = ids == rule.tag_id
            if not bool(mine.any()):
                continue
            vals = values[mine]
            on, off = rule.conditions(vals, quality[mine])
            for k, t in enumerate(ts[mine].tolist()):
                value = float(vals[k])
                events.extend(self._step(rule, bool(on[k]), bool(off[k]), int(t), value))
        return events

    def tick(self, now_ns: int) -> list[Event]:
        """Raise the alarms whose delay ran out with no new reading (report by exception stores
        a steady value once; a stale source stores nothing)."""
        events = []
        for rule in self.rules:
            state = self.states[rule.name]
            pending = state.pending_ns
            if state.since_ns is None and pending is not None and now_ns - pending >= rule.delay_ns:
                events.append(self._raise(rule, state, now_ns, state.value))
        return events

    def _step(self, rule: AlarmRule, on: bool, off: bool, ts_ns: int, value: float) -> list[Event]:
        state = self.states[rule.name]
        if state.since_ns is None:
            if on:
                if state.pending_ns is None:
                    state.pending_ns = ts_ns
                state.value = value
                if ts_ns - state.pending_ns >= rule.delay_ns:
                    return [self._raise(rule, state, ts_ns, value)]
            elif off:
                # The condition must hold without a break for the whole delay. A bad reading
                # of a limit alarm says nothing about the value: it neither starts nor breaks it.
                state.pending_ns = None
            return []
        if off:
            return [self._clear(rule, state, ts_ns, value)]
        return []

    def _raise(self, rule: AlarmRule, state: AlarmState, ts_ns: int, value: float | None) -> Event:
        state.since_ns = ts_ns
        state.pending_ns = None
        state.raised += 1
        state.acknowledged = False
        state.acknowledged_by = None
        data = self._data(rule, True, value)
        return Event(EventKind.ALARM, ts_ns, rule.machine, data)

    def _clear(self, rule: AlarmRule, state: AlarmState, ts_ns: int, value: float) -> Event:
        since = state.since_ns if state.since_ns is not None else ts_ns
        data = self._data(rule, False, value)
        data["reason"] = rule.reason(state.value)  # why it was raised
        data["active_s"] = round((ts_ns - since) / NS, 3)
        state.since_ns = None
        state.pending_ns = None
        state.value = None
        return Event(EventKind.ALARM, ts_ns, rule.machine, data)

    @staticmethod
    def _data(rule: AlarmRule, active: bool, value: float | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "alarm": rule.name,
            "active": active,
            "reason": rule.reason(value),
            "tag": rule.tag,
            "condition": rule.condition,
            "limit": rule.limit,
            "severity": rule.severity,
        }
        if value is not None and rule.condition != "stale":
            data["value"] = value
        if rule.state is not None:
            data["state"] = rule.state
            del data["limit"]
        return data

    def active(self) -> dict[str, dict[str, Any]]:
        """The active alarms' state, to keep across a restart (`restore`)."""
        return {
            name: {
                "since_ns": state.since_ns,
                "value": state.value,
                "acknowledged": state.acknowledged,
                "acknowledged_by": state.acknowledged_by,
            }
            for name, state in self.states.items()
            if state.since_ns is not None
        }

    def restore(self, active: Mapping[str, Any]) -> int:
        """Take back the alarms a previous run left active, so a restart neither raises them
        again nor leaves them raised upstream for good: the next reading clears them if the
        condition is gone. Alarms no longer configured, or malformed entries, are skipped.
        Returns how many were restored."""
        restored = 0
        for name, saved in active.items():
            state = self.states.get(name)
            if state is None or not isinstance(saved, dict):
                continue
            since = saved.get("since_ns")
            if not isinstance(since, int):
                continue
            value = saved.get("value")
            state.since_ns = since
            state.pending_ns = None
            state.value = float(value) if isinstance(value, int | float) else None
            state.acknowledged = saved.get("acknowledged") is True
            by = saved.get("acknowledged_by")
            state.acknowledged_by = by if isinstance(by, str) else None
            restored += 1
        return restored

    def acknowledge(self, name: str, by: str, now_ns: int) -> Event | None:
        """Mark an alarm acknowledged; the audit event to store, or None for an unknown name
        or one with nothing to acknowledge."""
        rule = next((r for r in self.rules if r.name == name), None)
        if rule is None:
            return None
        state = self.states[name]
        if state.since_ns is None or state.acknowledged:
            return None
        state.acknowledged = True
        state.acknowledged_by = by
        data = {
            "who": "operator",
            "action": "acknowledge",
            "alarm": name,
            "machine": rule.machine,
            "by": by,
            "active_since_ns": state.since_ns,
            "result": "ok",
        }
        return Event(EventKind.AUDIT, now_ns, rule.machine, data)

    def view(self, now_ns: int) -> list[dict[str, Any]]:
        """The active alarms for the page, longest active first."""
        rows: list[dict[str, Any]] = []
        for rule in self.rules:
            state = self.states[rule.name]
            if state.since_ns is None:
                continue
            rows.append(
                {
                    "alarm": rule.name,
                    "machine": rule.machine,
                    "tag": rule.tag,
                    "severity": rule.severity,
                    "reason": rule.reason(state.value),
                    "since_ns": state.since_ns,
                    "active_s": round(max(0, now_ns - state.since_ns) / NS, 1),
                    "acknowledged": state.acknowledged,
                    "acknowledged_by": state.acknowledged_by,
                }
            )
        rows.sort(key=lambda r: r["since_ns"])
        return rows
