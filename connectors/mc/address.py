"""MELSEC device addresses as engineers type them: `D100`, `M10`, `X1F`, `ZR2000`, `D100.3`.

A device name and a number in the device's own notation: decimal for D, M, R, ZR, SM, SD, L, F;
hexadecimal for W, B and (on Q and iQ-R) X and Y; octal for X and Y on the FX5 (iQ-F). So the
number's meaning depends on the source's `series`, and an address is parsed in two steps:
`parse_address` checks the form (no series needed, so a tag validates on its own) and
`McAddress.number(series)` turns the digits into the wire number, or says what is wrong.

`D100.3` is bit 3 (0 = least significant) of word D100; a bit device (M, X, ...) is one bool
per number. A word-sized value on a bit device (16 points from `X0`, written K4X0 in a ladder)
must start on a multiple of 16.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from connectors.mc.frame import DEVICES, Series

# Words a value occupies; strings take ceil(length / 2).
WORD_WIDTH = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
# The largest device number that fits the request: 3 bytes, or 4 on iQ-R.
MAX_NUMBER = {Series.FX5: 0xFFFFFF, Series.Q: 0xFFFFFF, Series.IQR: 0xFFFFFFFF}

_FORM = re.compile(r"([A-Z]{1,2}?)([0-9A-F]+)(?:\.([0-9]+))?")
_HELP = 'write a device and number like "D100", "M10", "X1F" or "D100.3" (bit 3 of D100)'


@dataclass(frozen=True, slots=True)
class McAddress:
    """A device, its number as written, and for a bit of a word device, the bit."""

    device: str
    digits: str
    bit: int | None = None

    def __str__(self) -> str:
        return self.device + self.digits + ("" if self.bit is None else f".{self.bit}")

    @property
    def is_bit_device(self) -> bool:
        return DEVICES[self.device].bits

    def number(self, series: Series) -> int:
        """The wire number of this address on `series`; ValueError saying why not."""
        base = DEVICES[self.device].base(series)
        try:
            number = int(self.digits, base)
        except ValueError:
            noun = {8: "octal", 10: "decimal", 16: "hexadecimal"}[base]
            raise ValueError(
                f"{self}: {self.device} is numbered in {noun} on series {series.value!r}"
            ) from None
        if number > MAX_NUMBER[series]:
            raise ValueError(f"{self}: device number out of range on series {series.value!r}")
        return number


def parse_address(value: str) -> McAddress:
    """Check the form of an address; raises ValueError with a one-line message."""
    text = value.strip().upper()
    match = _FORM.fullmatch(text)
    # Two-letter names first: "SM1" is SM 1, not S M1; "ZR" likewise.
    if match is not None and text[:2] in DEVICES and text[:2] != match.group(1):
        match = re.fullmatch(r"([A-Z]{2})([0-9A-F]+)(?:\.([0-9]+))?", text)
    if match is None:
        raise ValueError(f"bad address {value!r}: {_HELP}")
    device, digits, bit_text = match.groups()
    if device not in DEVICES:
        known = ", ".join(DEVICES)
        raise ValueError(f"unknown device {device!r} in {value!r} (known: {known})")
    bit = None
    if bit_text is not None:
        if DEVICES[device].bits:
            raise ValueError(f"{value}: {device} is a bit device; a .bit is only for word devices")
        bit = int(bit_text)
        if bit > 15:
            raise ValueError(f"{value}: bit {bit} is out of range 0..15")
    return McAddress(device, digits, bit)


def word_width(data_type: str, length: int | None = None) -> int:
    if data_type == "string":
        return ((length or 0) + 1) // 2
    return WORD_WIDTH[data_type]


def check_tag(address: McAddress, data_type: str, length: int | None) -> tuple[str, str] | None:
    """The first problem with a tag's address, type and length as (key, message), or None."""
    if address.bit is not None and data_type != "bool":
        return ("type", f"{address} is a single bit: use type bool, not {data_type}")
    if data_type == "string":
        if length is None:
            return ("length", "type string needs a length (characters)")
    elif length is not None:
        return ("length", f"length is only for type string, not {data_type}")
    return None


def check_series(address: McAddress, data_type: str, series: Series) -> str | None:
    """What is wrong with this address on `series`, or None (a word value on a bit device
    must start on a multiple of 16)."""
    try:
        number = address.number(series)
    except ValueError as exc:
        return str(exc)
    if address.is_bit_device and data_type != "bool" and number % 16:
        return (
            f"{address}: a {data_type} on bit device {address.device} reads 16 points a word "
            "and must start on a multiple of 16"
        )
    return None
