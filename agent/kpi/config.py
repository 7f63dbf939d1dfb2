"""The `[machines.kpi]` section: which of a machine's tags feed its OEE, and how to read them.

    [machines.kpi]
    state = "state"                       # the state tag, raw codes mapped below ...
    states = { running = [1], idle = [2], down = [3], setup = [4], planned_stop = [5] }
    # packml = true                       # ... or PackML StateCurrent (+ unit_mode = "mode")
    reason = "stop_reason"                # optional stop-reason code, labelled by `reasons`
    reasons = { "101" = "die jam" }
    total = "part_count"                  # any two of total / good / reject; rework optional
    good = "good_count"
    ideal_cycle_time = "2.5s"             # or ideal_rate = 160 with rate_per = "hour"
    energy = "energy_kwh"                 # optional cumulative kWh meter
    max_gap = "3m"                        # no state reading for longer: unknown time
    frozen_after = "2m"                   # no value moving for longer: frozen, unknown time
    heartbeat = "plc_clock"               # optional: a tag that moves whatever the machine does
    target_oee = 0.85                     # optional: the shift report's target line (a ratio)
    target_output = 9000                  # optional: good units planned per shift
    product = "product_code"              # optional product tag: a code, or a text tag whose
    product_names = { "1" = "Bracket A" } # string is the product (names: its codes/strings)
    # inspection = "panel-surface"        # quality from this [[inspections]] entry's verdicts

This module imports no protocol library and not `agent.config` (which imports it): the checks
that need the rest of the config (tags exist on the machine, `max_gap` above the heartbeat) are
in `problems()`, which `agent.config` calls with what it knows.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from agent.duration import PositiveDuration, format_duration

# Kept in step with agent.kpi.states.Category (minus "unknown", which is never configured).
StateName = Literal["running", "idle", "down", "setup", "planned_stop"]
STATE_NAMES: tuple[StateName, ...] = ("running", "idle", "down", "setup", "planned_stop")

RatePer = Literal["second", "minute", "hour"]
SECONDS_PER: dict[str, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0}

# Counter widths by declared type: where an unsigned PLC counter wraps. Signed and float types
# have no useful wrap point (a float totaliser only ever resets), so they get None.
COUNTER_BITS: dict[str, int | None] = {"uint16": 16, "uint32": 32, "uint64": 64}
NOT_NUMERIC = ("string",)

COUNTER_ROLES = ("total", "good", "reject", "rework")


def _key_error(key: str, message: str) -> PydanticCustomError:
    # The same error shape as agent.config.key_error (reported at `...kpi.<key>`); repeated here
    # because importing agent.config from this module would be circular.
    return PydanticCustomError("at_key", "{message}", {"key": key, "message": message})


def _code(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class MachineKpi(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: str
    states: dict[StateName, tuple[int, ...]] | None = None
    packml: bool = False
    unit_mode: str | None = None
    reason: str | None = None
    reasons: dict[str, str] = Field(default_factory=dict)
    total: str | None = None
    good: str | None = None
    reject: str | None = None
    rework: str | None = None
    ideal_cycle_time: PositiveDuration | None = None
    ideal_rate: PositiveFloat | None = None
    rate_per: RatePer | None = None
    product: str | None = None
    products: dict[str, PositiveFloat] = Field(default_factory=dict)
    energy: str | None = None
    max_gap: PositiveDuration = 180.0
    # Frozen values (docs/kpi.md, Frozen values): none of the machine's KPI tags (nor its
    # `heartbeat` tag) changed for longer than this while it ran (any state with a heartbeat):
    # the time since the last change is unknown. Default: `frozen_after_s()`.
    frozen_after: PositiveDuration | None = None
    heartbeat: str | None = None
    # Targets of the shift report: OEE as a ratio (0.85), good units per shift.
    target_oee: PositiveFloat | None = None
    target_output: PositiveFloat | None = None
    product_names: dict[str, str] = Field(default_factory=dict)
    # Quality from the verdicts of this `[[inspections]]` entry (OK good, NotOK reject) instead
    # of the good / reject counters; the counters still give the ideal time (performance).
    inspection: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.packml and self.states is not None:
            raise _key_error("states", "use either states (raw codes) or packml = true, not both")
        if not self.packml and self.states is None:
            raise _key_error(
                "state", "say how to read the state: states = { running = [1], ... } or packml"
            )
        if self.unit_mode is not None and not self.packml:
            raise _key_error("unit_mode", "unit_mode is a PackML tag: set packml = true")
        owner: dict[int, str] = {}
        for name, codes in (self.states or {}).items():
            for code in codes:
                if code in owner:
                    raise _key_error(
                        f"states.{name}", f"code {code} is also mapped to {owner[code]}"
                    )
                owner[code] = name
        if self.reasons and self.reason is None:
            raise _key_error("reasons", "reasons label the codes of a reason tag: set reason")
        for key in self.reasons:
            if _code(key) is None:
                raise _key_error(f"reasons.{key}", f"reason codes are integers, got {key!r}")
        given = [r for r in ("total", "good", "reject") if getattr(self, r) is not None]
        if self.inspection is not None:
            # Verdicts give good and reject; a counter must still say how much was made.
            if self.total is None and len(given) < 2:
                raise _key_error(
                    "total", "with inspection, name the total counter (or both good and reject)"
                )
        elif len(given) < 2:
            raise _key_error("total", "name at least two of the counters total, good and reject")
        if (self.ideal_cycle_time is None) == (self.ideal_rate is None):
            raise _key_error(
                "ideal_rate", "give the ideal as either ideal_cycle_time or ideal_rate (one)"
            )
        if self.rate_per is not None and self.ideal_rate is None:
            raise _key_error("rate_per", "rate_per goes with ideal_rate")
        if self.products and self.ideal_rate is None:
            raise _key_error(
                "products", "products give ideal rates per product: use ideal_rate as the default"
            )
        if self.products and self.product is None:
            raise _key_error("products", "products need the product tag: set product")
        if self.target_oee is not None and self.target_oee > 1:
            raise _key_error(
                "target_oee", f"a ratio up to 1: write 0.85 for 85 %, got {self.target_oee:g}"
            )
        if self.product_names and self.product is None:
            raise _key_error("product_names", "product_names label the product tag: set product")
        # The keys of products and product_names are codes of a numeric product tag, or the
        # strings of a text one: `problems` checks them against the tag's type.
        return self

    # -- what the engine reads ---------------------------------------------------------------

    def tag_roles(self) -> Iterator[tuple[str, str]]:
        """(key, tag name) of every tag this section names."""
        keys = ("state", "unit_mode", "reason", *COUNTER_ROLES, "product", "energy", "heartbeat")
        for key in keys:
            name = getattr(self, key)
            if name is not None:
                yield key, name

    def frozen_after_s(self) -> float:
        """How long the values may stay the same before they count as frozen: as configured,
        else 10 cycles of the slowest product, at least a minute (a running machine counts)."""
        if self.frozen_after is not None:
            return self.frozen_after
        slowest = max(self.cycle_time_s(int(p)) for p in ("0", *self.products))
        return max(60.0, 10.0 * slowest)

    def code_table(self) -> dict[int, StateName]:
        return {code: name for name, codes in (self.states or {}).items() for code in codes}

    def product_label(self, code: int | None) -> str:
        if code is None:
            return "no product"
        return product_name(code, self.product_names)

    def reason_label(self, code: int) -> str:
        return self.reasons.get(str(code), f"reason {code}")

    def cycle_time_s(self, product: int | None = None) -> float:
        """Ideal seconds per unit of the product (the default for an unknown or no product)."""
        if self.ideal_rate is None:
            assert self.ideal_cycle_time is not None  # the validator requires one of the two
            return self.ideal_cycle_time
        per = SECONDS_PER[self.rate_per or "minute"]
        key = None if product is None else _TEXT_PRODUCTS.get(product, str(product))
        rate = self.products.get(key, self.ideal_rate) if key is not None else None
        return per / (rate if rate is not None else self.ideal_rate)


class Declared(Protocol):
    """What the kpi checks read of a configured tag (`agent.config.TagModel`)."""

    @property
    def type(self) -> str | None: ...


def problems(kpi: MachineKpi, tags: Mapping[str, Declared], heartbeat_s: float) -> list[Any]:
    """(key relative to the kpi section, message) for each tag the section names that the
    machine lacks or cannot use, and a `max_gap` the heartbeat would always exceed."""
    out: list[tuple[str, str]] = []
    known = ", ".join(tags) or "none"
    for key, name in kpi.tag_roles():
        facts = tags.get(name)
        if facts is None:
            out.append((key, f"no tag {name!r} on this machine (its tags: {known})"))
        elif facts.type in NOT_NUMERIC and key != "product":  # a text product: its string
            out.append((key, f"tag {name!r} is a {facts.type}: KPI inputs must be numeric"))
    product = tags.get(kpi.product) if kpi.product is not None else None
    if product is None or product.type not in NOT_NUMERIC:  # codes, not strings: integers
        for table in ("product_names", "products"):
            for code in getattr(kpi, table):
                if _code(code) is None:
                    out.append((f"{table}.{code}", f"product codes are integers, got {code!r}"))
    if heartbeat_s > 0 and kpi.max_gap <= heartbeat_s:
        out.append(
            (
                "max_gap",
                f"must exceed the agent heartbeat ({format_duration(heartbeat_s)}), or a quiet "
                "machine counts as unknown time",
            )
        )
    return out


# A text product tag (`product` naming a "string" tag): its string is the product's name. The
# engine's log holds float64, so a string stands there as a code of its own, far above any
# code a PLC register gives (2^32 + its CRC-32), and `product_name` gives the string back.
# Two products of one machine with the same CRC-32 would be counted as one.
TEXT_PRODUCT_BASE = 1 << 32
_TEXT_PRODUCTS: dict[int, str] = {}  # code -> string, for each string this process coded


def product_code(text: str) -> int:
    """The code that stands for the product named `text` (the same in every process)."""
    code = TEXT_PRODUCT_BASE + zlib.crc32(text.encode("utf-8"))
    _TEXT_PRODUCTS[code] = text
    return code


def product_key(key: str) -> int:
    """The code of a `products` key: the integer itself, or a text product's string coded."""
    code = _code(key)
    return code if code is not None else product_code(key)


def product_name(code: int, names: Mapping[str, str]) -> str:
    """The name of a product code: its `product_names` entry, the string a text product's
    code stands for (renamed by `product_names` if listed), or "product <code>"."""
    text = _TEXT_PRODUCTS.get(code)
    if text is not None:
        return names.get(text, text)
    return names.get(str(code), f"product {code}")
