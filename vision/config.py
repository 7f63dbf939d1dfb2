"""The `[[inspections]]` entries of a config: what to look at, with which model, and what to do.

This module imports neither onnxruntime nor OpenCV, so `lineside validate` checks a config with
inspections on a machine without the vision wheels.

```toml
[[inspections]]
name = "panel-surface"
machine = "press1"
source = { type = "folder", path = "frames", watch = true }
trigger = { type = "tag", tag = "part_present", delay = "50ms" }
model = "models/surface.onnx"
write_back = { address = "co:5" }     # must also be on the top-level write_allow list
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, PlainSerializer, PlainValidator, model_validator

from agent.config import STRICT, ConfigPath, Name, key_error
from agent.duration import Duration, PositiveDuration
from agent.size import Size
from connectors.modbus.address import ModbusAddress, Table, parse_address

Adapter = Literal["auto", "classify", "detect", "anomaly"]


class FolderSource(BaseModel):
    """Image files in a folder, in name order; with `watch`, files added later are read too."""

    model_config = STRICT

    type: Literal["folder"]
    path: ConfigPath
    watch: bool = False
    pattern: str = "*"  # a glob on the file names, e.g. "*.jpg"


class VideoSource(BaseModel):
    model_config = STRICT

    type: Literal["video"]
    path: ConfigPath


class CameraSource(BaseModel):
    """A camera by OpenCV index (0, 1, ...) or by device path (/dev/video0)."""

    model_config = STRICT

    type: Literal["camera"]
    device: Annotated[int, Field(ge=0)] | str


class UrlSource(BaseModel):
    """A network stream OpenCV can open (rtsp://, http:// MJPEG)."""

    model_config = STRICT

    type: Literal["url"]
    url: Annotated[str, Field(pattern=r"^(rtsp|rtsps|http|https)://.+")]


class SimSource(BaseModel):
    """Generated part images (vision/synthetic.py): the simulated plant's camera."""

    model_config = STRICT

    type: Literal["sim"]
    seed: int = 0
    defect_rate: Annotated[float, Field(ge=0, le=1)] = 0.1
    surfaces: tuple[Literal["metal", "textile", "concrete"], ...] = ("metal",)
    width: Annotated[int, Field(ge=64, le=4096)] = 256
    height: Annotated[int, Field(ge=64, le=4096)] = 256


FrameSourceConfig = Annotated[
    FolderSource | VideoSource | CameraSource | UrlSource | SimSource,
    Field(discriminator="type"),
]


class FpsTrigger(BaseModel):
    """Free-running: one frame every 1/fps seconds; frames the model cannot take are dropped."""

    model_config = STRICT

    type: Literal["fps"]
    fps: Annotated[float, Field(gt=0, le=1000)]


class TagTrigger(BaseModel):
    """One frame per edge of a tag of the inspection's machine (part present), after `delay`."""

    model_config = STRICT

    type: Literal["tag"]
    tag: Name
    edge: Literal["rising", "falling"] = "rising"
    delay: Duration = 0.0
    poll: PositiveDuration = 0.01  # how often the tag's latest value is looked at


class ReplayTrigger(BaseModel):
    """Every frame of a folder or video, as fast as the model takes them (none is dropped)."""

    model_config = STRICT

    type: Literal["replay"]


TriggerConfig = Annotated[FpsTrigger | TagTrigger | ReplayTrigger, Field(discriminator="type")]


def _roi(value: Any) -> tuple[int, int, int, int]:
    whole = isinstance(value, tuple | list) and len(value) == 4
    if whole and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        x, y, w, h = value
        if x >= 0 and y >= 0 and w > 0 and h > 0:
            return (x, y, w, h)
    raise ValueError(f"expected [x, y, width, height] in pixels (width, height > 0), got {value!r}")


Roi = Annotated[tuple[int, int, int, int], PlainValidator(_roi), PlainSerializer(list)]


class SaveImages(BaseModel):
    """Where images of inspected parts go: every reject, a sample of the good ones."""

    model_config = STRICT

    dir: ConfigPath
    max_size: Size = 500 * 1000**2  # oldest images go first beyond this
    retention: PositiveDuration = 7 * 86400.0  # images older than this are deleted
    good_sample: Annotated[float, Field(ge=0, le=1)] = 0.01  # share of OK images kept


def _address(value: Any) -> ModbusAddress:
    address = parse_address(value)
    if address.table not in (Table.COILS, Table.HOLDING_REGISTERS) or address.bit is not None:
        raise ValueError(
            f"a verdict is written to a coil (co:N) or a holding register (hr:N), not {address}"
        )
    return address


WriteAddress = Annotated[ModbusAddress, PlainValidator(_address), PlainSerializer(str)]


class WriteBack(BaseModel):
    """Write each verdict to the machine's PLC (Modbus TCP) at `address`.

    A coil gets 1 for NotOK (reject) and 0 otherwise; a holding register gets the verdict code
    (1 OK, 2 NotOK, 3 NotDecidable). The address must be on the config's `write_allow` list.
    """

    model_config = STRICT

    address: WriteAddress


class InspectionConfig(BaseModel):
    model_config = STRICT

    name: Name
    machine: Name
    source: FrameSourceConfig
    trigger: TriggerConfig = ReplayTrigger(type="replay")
    model: ConfigPath
    adapter: Adapter = "auto"
    threads: Annotated[int, Field(ge=1, le=64)] = 1  # onnxruntime intra-op threads
    roi: Roi | None = None  # crop before inference: [x, y, width, height]
    threshold: Annotated[float, Field(ge=0, le=1)] | None = None  # the adapter's default if unset
    margin: Annotated[int, Field(ge=0, le=256)] = 16  # anomaly maps: border band ignored, px
    tile: bool = False  # cut large frames into model-sized tiles, merge the results
    tile_overlap: Annotated[float, Field(ge=0, lt=1)] = 0.2  # share of a tile shared with the next
    queue: Annotated[int, Field(ge=1, le=64)] = 2  # prepared frames waiting for the model
    save: SaveImages | None = None
    write_back: WriteBack | None = None

    @model_validator(mode="after")
    def _trigger_fits_source(self) -> Self:
        replayable = self.source.type in ("folder", "video", "sim")
        if self.trigger.type == "replay" and not replayable:
            raise key_error(
                "trigger",
                f"a {self.source.type} source is live: give a trigger (type fps or tag)",
            )
        return self

    @property
    def model_path(self) -> Path:
        return self.model


def allowed_write(entry: object) -> str:
    """One `write_allow` entry, `"machine:address"`, in its canonical spelling (`press1:co:5`).

    Raises ValueError with a message fit for a config problem line.
    """
    if not isinstance(entry, str) or ":" not in entry:
        raise ValueError(f'expected "machine:address" like "press1:co:5", got {entry!r}')
    machine, _, address = entry.partition(":")
    if not machine:
        raise ValueError(f'expected "machine:address" like "press1:co:5", got {entry!r}')
    return f"{machine}:{_address(address)}"
