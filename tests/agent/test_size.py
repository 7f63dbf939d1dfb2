import pytest
from pydantic import BaseModel, ValidationError

from agent.size import Size, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("500MB", 500_000_000), ("2GiB", 2 * 1024**3), ("1.5kB", 1500), ("64 KiB", 65536), ("7B", 7)],
)
def test_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("500", "bad size '500': write a number and a unit"),
        ("5 gallons", "unknown size unit 'gallons'"),
        ("MB", "bad size 'MB'"),
        ("-1MB", "bad size '-1MB'"),
    ],
)
def test_parse_bad(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


@pytest.mark.parametrize(("size", "text"), [(1024**3, "1GiB"), (500_000_000, "500MB"), (3, "3B")])
def test_format(size: int, text: str) -> None:
    assert format_size(size) == text


class _M(BaseModel):
    size: Size


def test_field_refuses_bare_numbers_and_zero() -> None:
    assert _M(size="1MB").size == 1_000_000
    with pytest.raises(ValidationError, match="sizes need a unit"):
        _M(size=500)
    with pytest.raises(ValidationError, match="must be more than zero"):
        _M(size="0MB")
