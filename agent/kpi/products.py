"""Products in the KPI engine (docs/kpi.md, "Per product"): which product a reading names, the
key a window keeps that product's components under, and the order and label a KPI record lists
them by. Pure.

A machine with a product tag counts everything twice: into the window and into the window's
components of the product in force (`Components.products`, agent/kpi/fold.py).
"""

from __future__ import annotations

from agent.kpi.config import MachineKpi
from agent.kpi.formulas import Components


def product_of(value: float) -> int:
    """The product a product tag's reading names: a numeric tag's code, or the code a text
    tag's string was given (`agent.kpi.config.product_code`), labelled by `product_label`."""
    return int(value)


def products_key(code: int | None) -> str:
    """A window's per-product key (JSON `product`): the code as text, "" for no product."""
    return "" if code is None else str(code)


def by_product(c: Components) -> list[tuple[str, Components]]:
    """A window's components per product, by code (no product last)."""
    keys = sorted(c.products, key=lambda k: (k == "", int(k) if k.isdigit() else 0, k))
    return [(key, c.products[key]) for key in keys]


def product_label(labels: MachineKpi | None, key: str) -> str:
    """What a record calls the product under `key`: the machine's label for its code."""
    return labels.product_label(int(key) if key else None) if labels else key
