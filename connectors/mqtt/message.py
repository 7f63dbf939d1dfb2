"""What every UNS payload function gives: `Message` (one MQTT publish) and `PayloadError` (a
record that cannot be sent), and the message's time unit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish: `index` is the position, in the batch sent, of the record it carries."""

    topic: str
    payload: bytes
    index: int
    retain: bool = False


class PayloadError(ValueError):
    """A record that cannot be put in the topic tree or encoded (the record at `index`)."""

    def __init__(self, message: str, index: int) -> None:
        self.index = index
        super().__init__(message)


def ms(ts_ns: int) -> int:
    """A time as messages carry it: UTC milliseconds since the epoch."""
    return ts_ns // 1_000_000
