"""One simulated S7 CPU: python-snap7's server in front of a machine's data blocks.

python-snap7's `snap7.server.Server` does the protocol (ISO-on-TCP, Setup Communication,
multi-item reads with per-item return codes: 0A for a DB that is not there, 05 past its end).
This subclass adds what a plant needs of it: the machine's DBs registered from its S7 map
(firmware_sim.s7_map), the CPU's mode served in SZL 0x0424 (`set_cpu_status(4)` puts it in
STOP, as snap7's own API has it; the server alone does not serve that list), and the unit's
`Faults` applied per request, as near the Modbus ones as the server allows:

| mode        | effect over S7                                                          |
|-------------|-------------------------------------------------------------------------|
| `refuse`    | the connection is closed when a request arrives (reboot's down time too) |
| `drop`      | the connection is closed when a request arrives                         |
| `slow`      | the answer is sent `delay` seconds late                                 |
| `exception` | the answer's header refuses the request: error 81xx, xx the `code`      |
|             | (04 by default: 8104, what a CPU without PUT/GET says)                  |
| `malformed` | the answer is not an S7 PDU (protocol id 0x33)                          |
| `truncated` | the answer is cut to half its length                                    |
| `freeze`    | the plant stops updating the DBs                                        |

It runs in snap7's own threads (a listening thread and one per client): the plant updates
the DB buffers from its tick with whole-slice copies, so a read sees one tick's values.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

from snap7.server import Server
from snap7.type import SrvArea

from firmware_sim.faults import FaultMode, Faults

_STOP = 4  # snap7's CPU status codes
_RUN = 8
_SZL_CPU_STATE = 0x0424
_JOB = 0x01
_READ_VAR = 0x04
_WRITE_VAR = 0x05


class SimS7Server(Server):
    """A snap7 server for one machine's DBs, with faults and the CPU mode."""

    def __init__(self, dbs: dict[int, bytearray], faults: Faults) -> None:
        super().__init__(log=False)
        self.faults = faults
        self.dbs = dbs
        self.reads = 0  # read jobs answered or faulted (the benchmark's requests per poll)
        self._count = threading.Lock()
        for number, buf in dbs.items():
            self.register_area(SrvArea.DB, number, buf)

    def start_on(self, host: str, port: int) -> int:
        """Listen on host:port (0: a free one); returns the bound port."""
        self.start_to(host, port)
        assert self.server_socket is not None
        bound: int = self.server_socket.getsockname()[1]
        return bound

    @property
    def stopped(self) -> bool:
        return self.get_status()[1] == "Stop"

    def _process_request(self, request_data: bytes, client_address: Any) -> bytes | None:
        # Faults act on reads and writes, as the Modbus ones act on requests: the connection
        # setup and the SZL reads go through, as a PLC with PUT/GET off still lets them.
        is_job = len(request_data) > 10 and request_data[1] == _JOB
        if not (is_job and request_data[10] in (_READ_VAR, _WRITE_VAR)):
            answer: bytes | None = super()._process_request(request_data, client_address)
            return answer
        if request_data[10] == _READ_VAR:
            with self._count:
                self.reads += 1
        action = self.faults.action()
        if action in (FaultMode.REFUSE, FaultMode.DROP):
            raise ConnectionResetError("fault: closed")
        if action is FaultMode.SLOW:
            time.sleep(self.faults.delay)
        answer = super()._process_request(request_data, client_address)
        if answer is None or len(answer) < 12:
            return answer
        if action is FaultMode.EXCEPTION:
            code = 0x8100 | (self.faults.code & 0xFF)
            return answer[:6] + struct.pack(">HHBB", 0, 0, code >> 8, code & 0xFF)
        if action is FaultMode.MALFORMED:
            return b"\x33" + answer[1:]
        if action is FaultMode.TRUNCATED:
            return answer[: len(answer) // 2]
        return answer

    def _get_szl_data(self, szl_id: int, szl_index: int) -> bytes | None:
        if szl_id == _SZL_CPU_STATE:
            mode = 0x04 if self.stopped else 0x08
            # one record of 20 bytes: event id 4412, then the mode in the record's 4th byte
            record = struct.pack(">HBB", 0x4412, 0xFF, mode) + bytes(16)
            return struct.pack(">HH", len(record), 1) + record
        found: bytes | None = super()._get_szl_data(szl_id, szl_index)
        return found

    def run(self) -> None:
        self.set_cpu_status(_RUN)

    def stop_cpu(self) -> None:
        self.set_cpu_status(_STOP)
