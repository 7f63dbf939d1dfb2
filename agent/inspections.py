"""The agent's inspections, built from the config: vision imported only when there are some
(onnxruntime, OpenCV), each with the write-back its source declares (`WritesToPlc`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.clock import Clock
from agent.config.sections import Config
from agent.errors import LinesideError
from agent.extras import needs
from agent.model import Event
from agent.source import WritesToPlc, WriteTarget

if TYPE_CHECKING:
    from vision.inspector import Inspector

# machine -> (tag name -> a function reading that tag's latest value, NaN while unknown)
TagReaders = Callable[[str], Callable[[str], Callable[[], float]]]


def write_target(config: Config, machine: str) -> WriteTarget:
    """Where verdicts of `machine` are written: the source that declares it (`WritesToPlc`)."""
    for source in config.sources:
        if isinstance(source, WritesToPlc) and (target := source.write_target(machine)):
            return target
    raise LinesideError(f"machine {machine!r} has no Modbus TCP source to write to")


def build_inspectors(
    config: Config, *, clock: Clock, emit_event: Callable[[Event], None], read_tag: TagReaders
) -> list[Inspector]:
    """One inspector per `[[inspections]]` entry."""
    from vision.config import InspectionConfig

    with needs("Vision", "vision"):
        from vision.inspector import build_inspector
        from vision.writeback import ModbusWriteBack

    inspectors = []
    for spec in config.inspections:
        assert isinstance(spec, InspectionConfig)
        write_back = None
        if spec.write_back is not None:
            target = write_target(config, spec.machine)
            write_back = ModbusWriteBack(
                spec.machine,
                spec.write_back.address,
                host=target.host,
                port=target.port,
                unit_id=target.unit_id,
                allow=config.write_allow,
            )
        inspectors.append(
            build_inspector(
                spec,
                clock=clock,
                emit_event=emit_event,
                read_tag=read_tag(spec.machine),
                write_back=write_back,
            )
        )
    return inspectors
