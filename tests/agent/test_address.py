"""Modbus addresses: both spellings resolve to one wire address; bad ones say why."""

import pytest

from connectors.modbus.address import ModbusAddress, Table, check_tag, parse_address

HELP = 'write a table and a 0-based offset like "hr:100", or a datasheet number like 40101'
TABLES = "0xxxx coils, 1xxxx discrete inputs, 3xxxx input registers, 4xxxx holding registers"
COIL = '(0-based coil offset) or "{}" (datasheet form{})'
PAST = "{} needs {} registers, up to {}, past the last one ({})"

HR, IR, CO, DI = (
    Table.HOLDING_REGISTERS,
    Table.INPUT_REGISTERS,
    Table.COILS,
    Table.DISCRETE_INPUTS,
)


@pytest.mark.parametrize(
    ("written", "table", "offset", "bit"),
    [
        ("hr:100", HR, 100, None),
        (40101, HR, 100, None),
        ("40101", HR, 100, None),
        ("400101", HR, 100, None),
        (400101, HR, 100, None),
        ("ir:7", IR, 7, None),
        ("30008", IR, 7, None),
        ("co:3", CO, 3, None),
        ("00004", CO, 3, None),
        ("000004", CO, 3, None),
        ("di:12", DI, 12, None),
        (10013, DI, 12, None),
        ("hr:5.3", HR, 5, 3),
        ("ir:0.15", IR, 0, 15),
        ("HR:0", HR, 0, None),
        (" hr:65535 ", HR, 65535, None),
        ("40001", HR, 0, None),
        ("49999", HR, 9998, None),
        ("400001", HR, 0, None),
        ("465536", HR, 65535, None),
        (10001, DI, 0, None),
    ],
)
def test_good(written: str | int, table: Table, offset: int, bit: int | None) -> None:
    assert parse_address(written) == ModbusAddress(table, offset, bit)


def test_both_spellings_are_one_wire_address() -> None:
    forms = {parse_address(x) for x in ("hr:100", 40101, "40101", "400101", 400101)}
    assert forms == {ModbusAddress(HR, 100)}
    assert str(forms.pop()) == "hr:100"


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (
            5,
            'address 5 is ambiguous: write "co:4" ' + COIL.format("00005", ", as a string"),
        ),
        (
            10000,
            'address 10000 is ambiguous: write "co:9999" ' + COIL.format("10000", ", as a string"),
        ),
        (
            "5",
            'address "5" is ambiguous: write "co:4" ' + COIL.format("00005", ""),
        ),
        ("40000", "address '40000' does not exist: datasheet numbers start at 1 (40001 is hr:0)"),
        (400000, "address 400000 does not exist: datasheet numbers start at 1 (400001 is hr:0)"),
        ("465537", "address '465537' is out of range: offsets run 0..65535"),
        ("hr:65536", "address hr:65536 is out of range: offsets run 0..65535"),
        (
            "20001",
            f"address '20001': the first digit names the table: {TABLES}",
        ),
        (
            "4000001",
            f"address '4000001': datasheet numbers have 5 or 6 digits; {HELP}",
        ),
        ("xx:5", "unknown table 'xx' in 'xx:5' (known: co, di, hr, ir)"),
        (
            "hr:abc",
            f"bad address 'hr:abc': {HELP}",
        ),
        (
            "hr:-1",
            f"bad address 'hr:-1': {HELP}",
        ),
        (
            "",
            f"bad address '': {HELP}",
        ),
        ("hr:5.16", "address hr:5.16: bit 16 is out of range 0..15"),
        ("co:3.1", "address co:3.1: a bit number is only for registers (hr, ir), not coils"),
        (
            -3,
            f"bad address -3: {HELP}",
        ),
        (True, 'expected an address like "hr:100" or 40101, got True'),
    ],
)
def test_bad(written: str | int, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_address(written)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("address", "data_type", "length", "problem"),
    [
        ("hr:0", "uint16", None, None),
        ("hr:65535", "uint16", None, None),
        ("hr:65534", "float32", None, None),
        ("hr:65532", "float64", None, None),
        ("hr:5", "bool", None, None),  # bool on a whole register: non-zero
        ("hr:5.3", "bool", None, None),
        ("co:3", "bool", None, None),
        ("ir:16", "string", 12, None),
        ("hr:65530", "string", 12, None),
        (
            "hr:65535",
            "float32",
            None,
            (
                "address",
                PAST.format("float32 at hr:65535", 2, "hr:65536", "hr:65535"),
            ),
        ),
        (
            "ir:65533",
            "uint64",
            None,
            (
                "address",
                PAST.format("uint64 at ir:65533", 4, "ir:65536", "ir:65535"),
            ),
        ),
        (
            "hr:65530",
            "string",
            13,
            (
                "address",
                PAST.format("string at hr:65530", 7, "hr:65536", "hr:65535"),
            ),
        ),
        ("co:3", "int32", None, ("type", "co:3 is a coil, a single bit: use type bool, not int32")),
        (
            "di:0",
            "uint16",
            None,
            ("type", "di:0 is a discrete input, a single bit: use type bool, not uint16"),
        ),
        ("hr:5.3", "int16", None, ("type", "hr:5.3 is a single bit: use type bool, not int16")),
        ("hr:0", "string", None, ("length", "type string needs a length (characters)")),
        ("hr:0", "uint16", 4, ("length", "length is only for type string, not uint16")),
    ],
)
def test_check_tag(
    address: str, data_type: str, length: int | None, problem: tuple[str, str] | None
) -> None:
    assert check_tag(parse_address(address), data_type, length) == problem
