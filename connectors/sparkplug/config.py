"""Config model of the Sparkplug B sink: the broker keys of MQTT plus the Sparkplug identity.

No MQTT client library is imported here: `lineside validate` must stay light.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from connectors.mqtt.config import Broker


class SparkplugSinkConfig(Broker):
    type: Literal["sparkplug"]
    group_id: str
    edge_node_id: str
    primary_host_id: str | None = None  # wait for this host application's STATE before sending

    @field_validator("group_id", "edge_node_id", "primary_host_id")
    @classmethod
    def _topic_element(cls, value: str | None) -> str | None:
        # Sparkplug 3.0: these become topic levels, so no '/', '+' or '#'.
        if value is not None and not re.fullmatch(r"[^/+#\s]+", value):
            raise ValueError(f"may not be empty or contain '/', '+', '#' or spaces, got {value!r}")
        return value
