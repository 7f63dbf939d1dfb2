"""Test helper: a KPI window whose figures come from the real KPI maths on given components."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from agent.kpi.formulas import Components, classic, flags, iso22400
from agent.kpi.losses import pareto, six_big_losses
from agent.kpi.replay import KpiWindow


def kpi_window(
    c: Components,
    machine: str | None,
    line: str,
    kind: str,
    name: str,
    start_ns: int,
    end_ns: int,
    **state: Any,
) -> KpiWindow:
    """One machine's window (a line's where `machine` is None) with the figures of `c`."""
    return KpiWindow(
        scope="machine" if machine is not None else "line",
        machine=machine,
        line=line,
        kind=kind,
        name=name,
        start_ns=start_ns,
        end_ns=end_ns,
        classic=classic(c),
        iso22400=iso22400(c),
        components=asdict(c),
        flags=flags(c),
        losses=six_big_losses(c),
        pareto=pareto(c.down_by_reason),
        **state,
    )
