"""The KPI records the engine emits, as plain data: whose record it is (`Place`), its identity
across revisions (`record_key`), a closed window's components with the counter the machine
lacks derived (`finished`, docs/kpi.md "Counters"), and the events per definition. Pure.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from agent.kpi.calendar import Window
from agent.kpi.config import MachineKpi
from agent.kpi.formulas import COUNT_FIELDS, Components, classic, flags, iso22400, unknown_share
from agent.kpi.losses import pareto, six_big_losses
from agent.kpi.products import by_product, product_label
from agent.model import Event, EventKind

DEFINITIONS = ("classic", "iso22400")

Scope = Literal["machine", "line", "area", "site"]
SCOPES: tuple[Scope, ...] = ("machine", "line", "area", "site")
Group = tuple[Scope, str]  # a roll-up of machines: ("line", "area/line"), ("area", a), ("site", s)
# A KPI record's identity: (scope, who: the machine, "area/line", area or site, kind, name).
RecordKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class Place:
    """Whose record it is: a machine or a roll-up (line, area, site), its ISA-95 path and the
    unit its counts are in (None: a roll-up of unlike units, whose counts are not added)."""

    scope: Scope
    machine: str | None
    line: str | None  # "area/line"; None for an area or the site
    area: str | None  # None for the site
    site: str
    unit: str | None
    notes: tuple[str, ...] = ()
    labels: MachineKpi | None = None  # a machine's kpi section: names its products

    def data(self) -> dict[str, Any]:
        return {"scope": self.scope, "machine": self.machine, "line": self.line,
                "area": self.area, "site": self.site}  # fmt: skip


def record_key(data: Mapping[str, Any]) -> RecordKey:
    """The identity of a KPI record (event data): the same window of the same machine, line,
    area or site, whatever its revision or definition."""
    scope = str(data.get("scope", "machine" if data.get("machine") else "line"))
    who = data.get(scope) or data.get("machine") or data.get("line")
    w = data["window"]
    return (scope, str(who), str(w["kind"]), str(w["name"]))


def finished(kpi: MachineKpi, c: Components) -> Components:
    """A copy with the counter the machine does not have derived from the others
    (docs/kpi.md, "Counters"): total = good + reject + rework; a reworked part is made but
    not good (first-time good), so good = total - reject - rework. The ideal times of the
    counts follow the same sums, so quality by ideal time matches quality by count."""
    done = copy.deepcopy(c)
    done.products = {k: finished(kpi, p) for k, p in c.products.items()}
    if kpi.inspection is not None:
        # Good, reject and total all come from verdicts: the sample's quality.
        share = done.good / done.total if done.total > 0 else 0.0
        done.good_ideal_s = done.ideal_s * share
        done.reject_ideal_s = done.ideal_s - done.good_ideal_s
        return done
    if kpi.total is not None:
        # The total counter's ideal time is ideal_s; per-role ideal times come from the
        # counters present, the missing one from the rest.
        if kpi.good is None:
            done.good = max(done.total - done.reject - done.rework, 0.0)
            done.good_ideal_s = max(done.ideal_s - done.reject_ideal_s - done.rework_ideal_s, 0)
        elif kpi.reject is None:
            done.reject = max(done.total - done.good - done.rework, 0.0)
            done.reject_ideal_s = max(done.ideal_s - done.good_ideal_s - done.rework_ideal_s, 0)
    else:
        done.total = done.good + done.reject + done.rework
    return done


def window_data(w: Window) -> dict[str, Any]:
    return {"kind": w.kind, "name": w.name, "start_ns": w.start_ns, "end_ns": w.end_ns}


def components_data(c: Components, place: Place) -> dict[str, Any]:
    """The components as plain data; the counts of a roll-up whose machines count in
    different units are null (not added)."""
    data = asdict(c)
    del data["products"]  # given apart, with their KPIs (`products`)
    if not c.units and place.unit is None:
        data.update(dict.fromkeys(COUNT_FIELDS))
    return data


def figures(c: Components, place: Place) -> dict[str, Any]:
    return {
        "classic": classic(c),
        "iso22400": iso22400(c),
        "components": components_data(c, place),
        "unit": place.unit,
        "notes": list(place.notes),
        "unknown": unknown_share(c),
        "flags": flags(c),
        "losses": six_big_losses(c),
        "pareto": [list(p) for p in pareto(c.down_by_reason)],
        "products": product_figures(c, place),
    }


def product_figures(c: Components, place: Place) -> list[dict[str, Any]]:
    """A machine's figures per product code (sorted; no product last), both definitions."""
    out = []
    for key, p in by_product(c):
        out.append(
            {
                "product": key or None,
                "label": product_label(place.labels, key),
                "classic": classic(p),
                "iso22400": iso22400(p),
                "components": components_data(p, place),
                "unknown": unknown_share(p),
                "flags": flags(p),
            }
        )
    return out


def window_events(w: Window, c: Components, revision: int, place: Place) -> list[Event]:
    """One KPI event per definition for a closed (or revised) window; per product, each event
    carries its definition's KPIs as `kpis` too."""
    shared_figures = figures(c, place)
    kpis = {d: shared_figures.pop(d) for d in DEFINITIONS}
    products = shared_figures.pop("products")
    shared = {**place.data(), "window": window_data(w), **shared_figures, "revision": revision}
    out = []
    for d in DEFINITIONS:
        mine = [
            {**{k: v for k, v in p.items() if k not in DEFINITIONS}, "kpis": p[d]} for p in products
        ]
        data = {"definition": d, "kpis": kpis[d], **shared, "products": mine}
        out.append(Event(EventKind.KPI, ts_ns=w.end_ns, machine=place.machine, data=data))
    return out
