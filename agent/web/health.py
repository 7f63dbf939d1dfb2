"""Readiness: is the agent doing its job right now? One reason per thing that is not.

`/healthz` only says the process answers (liveness); `/readyz` asks `not_ready(state)`, a pure
function of the figures the page shows, so the page, `/readyz` and the tests agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def not_ready(figures: Mapping[str, Any], sink_max_unsent_age: float) -> list[str]:
    """Why the agent is not ready; empty when it is.

    Ready means: every source is connected and its tags read good (a device that answers an
    exception to every read is connected but not doing its job), the store takes writes (its
    last commit worked and it is not full), and no sink has been failing with records waiting
    longer than `sink_max_unsent_age` seconds. A sink that is down with nothing to send is not
    a reason.
    """
    reasons = []
    for source in figures.get("sources", []):
        if source["state"] != "connected":
            detail = f": {source['last_error']}" if source.get("last_error") else ""
            reasons.append(f"source {source['name']} is {source['state']}{detail}")
        elif source.get("problem"):
            reasons.append(f"source {source['name']}: {source['problem']}")
    store = figures.get("store", {})
    if store.get("last_error"):
        reasons.append(f"store cannot be written: {store['last_error']}")
    if store.get("store_full"):
        why = f" ({store['full_reason']})" if store.get("full_reason") else ""
        reasons.append(f"store is full{why}: events wait in memory")
    for sink in figures.get("sinks", []):
        age = sink.get("oldest_unsent_age_s")
        if sink["state"] != "connected" and age is not None and age > sink_max_unsent_age:
            detail = f": {sink['last_error']}" if sink.get("last_error") else ""
            reasons.append(
                f"sink {sink['name']} is {sink['state']} with records waiting {age:.0f} s "
                f"(more than {sink_max_unsent_age:g} s){detail}"
            )
    return reasons
