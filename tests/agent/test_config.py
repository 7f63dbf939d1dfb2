"""load_config: one exact line per problem for bad configs, and a usable `Config` for good ones.

Each bad case is a small file (plus any CSV it names) and the exact problem lines expected,
written without the leading `FILE: ` which every line carries.
"""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import Config, Deadband, load_config
from agent.errors import ConfigError
from connectors.modbus.address import ModbusAddress, Table
from connectors.modbus.config import ModbusTag, ModbusTcpSourceConfig
from connectors.mqtt.config import MqttSinkConfig

HEAD = 'config_version = 1\n[agent]\nid = "edge-1"\n[plant]\nsite = "suzhou"\n'
MACHINE = '[[machines]]\nname = "press1"\narea = "stamping"\nline = "line-1"\n'
SOURCE = (
    '[[sources]]\nname = "plc1"\ntype = "modbus_tcp"\nhost = "127.0.0.1"\n'
    '[[sources.units]]\nunit_id = 1\nmachine = "press1"\n'
)
TAG = '[[sources.units.tags]]\nname = "state"\naddress = "hr:0"\n'
BASE = HEAD + MACHINE + SOURCE + TAG
CSV_SOURCE = SOURCE + 'tags_file = "tags.csv"\n'
CSV_HEAD = "name,address,type,scale,unit\n"
OPCUA = (
    '[[sources]]\nname = "ua"\ntype = "opcua"\nendpoint = "opc.tcp://10.0.0.1:4840"\n'
    'machine = "press1"\ntags = [{ name = "speed", node_id = "ns=2;s=press1.speed" }]\n'
)
SHIFT = '[calendar]\ntimezone = "Asia/Shanghai"\n[[calendar.shifts]]\nname = "A"\n'

# (id, config text, {csv name: text}, expected lines without "FILE: ")
BAD: list[tuple[str, str | bytes, dict[str, str | bytes], list[str]]] = [
    ("empty", "", {}, ["empty file; `lineside init --profile press` writes a starter"]),
    ("blank", "\n  \n", {}, ["empty file; `lineside init --profile press` writes a starter"]),
    (
        "not-utf8",
        b"config_version = 1\n# caf\xe9\n",
        {},
        ["not UTF-8 text: byte 0xe9 on line 2; save as UTF-8"],
    ),
    (
        "bad-toml",
        "config_version = 1\n[agent\n",
        {},
        ["not valid TOML: Expected ']' at the end of a table declaration (at line 2, column 7)"],
    ),
    (
        "version-missing",
        BASE.removeprefix("config_version = 1\n"),
        {},
        ["missing key 'config_version': add config_version = 1 at the top"],
    ),
    (
        "version-2",
        BASE.replace("config_version = 1", "config_version = 2"),
        {},
        ["config_version: must be 1 (the format this lineside reads), got 2"],
    ),
    (
        "version-string",
        BASE.replace("config_version = 1", 'config_version = "1"'),
        {},
        ["config_version: must be 1 (the format this lineside reads), got '1'"],
    ),
    ("unknown-top-key", BASE + "[extra]\n", {}, ["unknown key 'extra'"]),
    (
        "unknown-tag-key",
        BASE + 'colour = "red"\n',
        {},
        ["sources[0].units[0].tags[0]: unknown key 'colour'"],
    ),
    (
        "unknown-agent-key",
        BASE.replace('id = "edge-1"', 'id = "edge-1"\nname = "x"'),
        {},
        ["agent: unknown key 'name'"],
    ),
    (
        "missing-section",
        BASE.replace('[plant]\nsite = "suzhou"\n', ""),
        {},
        ["missing section [plant]"],
    ),
    (
        "missing-key",
        BASE.replace('area = "stamping"\n', ""),
        {},
        ["machines[0]: missing key 'area'"],
    ),
    (
        "wrong-types",
        BASE.replace('host = "127.0.0.1"', 'host = 5\nport = "abc"\nretries = 1.5'),
        {},
        [
            "sources[0].retries: expected an integer, got 1.5",
            "sources[0].host: expected a string, got 5",
            "sources[0].port: expected an integer, got 'abc'",
        ],
    ),
    (
        "machines-not-a-list",
        HEAD.replace("\n", '\nmachines = "press1"\n', 1),
        {},
        ["machines: expected a list of tables ([[machines]]), got 'press1'"],
    ),
    (
        "bad-name",
        BASE.replace('name = "press1"', 'name = "press 1"'),
        {},
        [
            "machines[0].name: names may use only letters, digits, '_' and '-', got 'press 1'",
            "sources[0].units[0].machine: unknown machine 'press1' (declared in [[machines]]: "
            "press 1)",
        ],
    ),
    (
        "unknown-source-type",
        BASE.replace('type = "modbus_tcp"', 'type = "modbus_tpc"'),
        {},
        [
            "sources[0].type: unknown source type 'modbus_tpc' "
            "(known: mc, modbus_rtu, modbus_tcp, opcua, s7)"
        ],
    ),
    (
        "missing-source-type",
        BASE.replace('type = "modbus_tcp"\n', ""),
        {},
        ["sources[0]: missing key 'type' (known: mc, modbus_rtu, modbus_tcp, opcua, s7)"],
    ),
    (
        "unknown-sink-type",
        BASE + '[[sinks]]\nname = "up"\ntype = "kafka"\n',
        {},
        ["sinks[0].type: unknown sink type 'kafka' (known: http, mqtt, sparkplug)"],
    ),
    (
        "address-out-of-range",
        BASE.replace('address = "hr:0"', 'address = "hr:70000"'),
        {},
        [
            "sources[0].units[0].tags[0].address: "
            "address hr:70000 is out of range: offsets run 0..65535"
        ],
    ),
    (
        "address-ambiguous",
        BASE.replace('address = "hr:0"', "address = 5"),
        {},
        [
            'sources[0].units[0].tags[0].address: address 5 is ambiguous: write "co:4" '
            '(0-based coil offset) or "00005" (datasheet form, as a string)'
        ],
    ),
    (
        "straddles-table-end",
        BASE.replace('address = "hr:0"', 'address = "hr:65535"\ntype = "float32"'),
        {},
        [
            "sources[0].units[0].tags[0].address: float32 at hr:65535 needs 2 registers, "
            "up to hr:65536, past the last one (hr:65535)"
        ],
    ),
    (
        "type-in-coil",
        BASE.replace('address = "hr:0"', 'address = "co:3"\ntype = "int32"'),
        {},
        [
            "sources[0].units[0].tags[0].type: co:3 is a coil, a single bit: use type bool, "
            "not int32"
        ],
    ),
    (
        "unknown-data-type",
        BASE + 'type = "int17"\n',
        {},
        [
            "sources[0].units[0].tags[0].type: unknown data type 'int17' (known: bool, int16, "
            "uint16, int32, uint32, int64, uint64, float32, float64, string)"
        ],
    ),
    (
        "string-without-length",
        BASE + 'type = "string"\n',
        {},
        ["sources[0].units[0].tags[0].length: type string needs a length (characters)"],
    ),
    (
        "scale-zero",
        BASE + "scale = 0\n",
        {},
        ["sources[0].units[0].tags[0].scale: must not be 0 (every value would read 0)"],
    ),
    (
        "bad-order",
        BASE + 'type = "float32"\norder = "BACD"\n',
        {},
        [
            "sources[0].units[0].tags[0].order: unknown word order 'BACD' "
            "(known: ABCD, CDAB, BADC, DCBA)"
        ],
    ),
    (
        "bad-deadband",
        BASE + 'deadband = "lots"\n',
        {},
        [
            "sources[0].units[0].tags[0].deadband: expected a number (absolute) or a percentage "
            "like \"2%\", got 'lots'"
        ],
    ),
    (
        "duplicate-tag",
        BASE + TAG.replace('"hr:0"', '"hr:1"'),
        {},
        [
            "sources[0].units[0].tags[1]: duplicate tag name 'state' for machine 'press1' "
            "(also at sources[0].units[0].tags[0])"
        ],
    ),
    (
        "duplicate-tag-across-sources",
        BASE + SOURCE.replace('"plc1"', '"plc2"') + TAG,
        {},
        [
            "sources[1].units[0].tags[0]: duplicate tag name 'state' for machine 'press1' "
            "(also at sources[0].units[0].tags[0])"
        ],
    ),
    (
        "duplicate-tag-csv",
        HEAD + MACHINE + CSV_SOURCE,
        {"tags.csv": CSV_HEAD + "state,hr:0\nspeed,hr:1\nstate,hr:2\n"},
        ["tags.csv:4: duplicate tag name 'state' for machine 'press1' (also at tags.csv:2)"],
    ),
    (
        "duplicate-names",
        HEAD
        + MACHINE * 2
        + (SOURCE + TAG) * 2
        + '[[sinks]]\nname = "up"\ntype = "http"\nurl = "http://mes"\n' * 2,
        {},
        [
            "machines[1].name: duplicate machine name 'press1' (also machines[0])",
            "sources[1].name: duplicate source name 'plc1' (also sources[0])",
            "sinks[1].name: duplicate sink name 'up' (also sinks[0])",
            "sources[1].units[0].tags[0]: duplicate tag name 'state' for machine 'press1' "
            "(also at sources[0].units[0].tags[0])",
        ],
    ),
    (
        "duplicate-unit-id",
        BASE + '[[sources.units]]\nunit_id = 1\nmachine = "press1"\n'
        '[[sources.units.tags]]\nname = "x"\naddress = "hr:1"\n',
        {},
        ["sources[0].units[1].unit_id: duplicate unit_id 1"],
    ),
    (
        "unknown-machine",
        BASE.replace('machine = "press1"', 'machine = "press9"'),
        {},
        [
            "sources[0].units[0].machine: unknown machine 'press9' "
            "(declared in [[machines]]: press1)"
        ],
    ),
    (
        "no-tags",
        HEAD + MACHINE + SOURCE,
        {},
        ["sources[0].units[0].tags: no tags: add [[sources.units.tags]] entries or a tags_file"],
    ),
    (
        "csv-missing",
        HEAD + MACHINE + CSV_SOURCE,
        {},
        ["sources[0].units[0].tags_file: file not found: tags.csv (looked for {dir}/tags.csv)"],
    ),
    (
        "csv-unknown-column",
        HEAD + MACHINE + CSV_SOURCE,
        {"tags.csv": "name,address,colour\nstate,hr:0,red\nspeed,hr:1,blue\n"},
        ["tags.csv:1: unknown column 'colour'"],
    ),
    (
        "csv-bad-values",
        HEAD + MACHINE + CSV_SOURCE,
        {
            "tags.csv": CSV_HEAD
            + "state,hr:0,uint16,,\n"
            + "temp,hr:1,int16,abc,°C\n"
            + "bad,hr:65535,float32,,\n"
            + ",hr:3,,,\n"
            + "big,hr:4,int17,,\n"
        },
        [
            "tags.csv:3: scale: expected a number, got 'abc'",
            "tags.csv:4: address: float32 at hr:65535 needs 2 registers, up to hr:65536, "
            "past the last one (hr:65535)",
            "tags.csv:5: no value in column 'name'",
            "tags.csv:6: type: unknown data type 'int17' (known: bool, int16, uint16, int32, "
            "uint32, int64, uint64, float32, float64, string)",
        ],
    ),
    (
        "csv-too-many-cells",
        HEAD + MACHINE + CSV_SOURCE,
        {"tags.csv": "name,address\nstate,hr:0,extra\n"},
        [
            "tags.csv:2: 3 cells but the header names 2 columns",
            "tags.csv:1: no tag rows after the header",
        ],
    ),
    (
        "csv-not-utf8",
        HEAD + MACHINE + CSV_SOURCE,
        {"tags.csv": b"name,address,unit\ntemp,hr:0,\xb0C\n"},
        ["tags.csv: not UTF-8 text: byte 0xb0 on line 2; save as UTF-8"],
    ),
    (
        "csv-empty",
        HEAD + MACHINE + CSV_SOURCE,
        {"tags.csv": ""},
        ["tags.csv:1: no header row (the first line names the columns)"],
    ),
    (
        "csv-unterminated-quote",
        HEAD + MACHINE + CSV_SOURCE,
        {"tags.csv": CSV_HEAD + 'state,hr:0\nspeed,"hr:1\nrate,hr:2\n'},
        ["tags.csv:3: unterminated quote: a quoted cell in this row never closes"],
    ),
    (
        "csv-unterminated-quote-past-the-cell-limit",
        HEAD + MACHINE + CSV_SOURCE,
        {"tags.csv": CSV_HEAD + 'state,hr:0,,,"' + "x\n" * 70_000},
        ["tags.csv:2: unterminated quote: a quoted cell in this row never closes"],
    ),
    (
        "csv-cell-too-long",
        HEAD + MACHINE + CSV_SOURCE,
        {"tags.csv": CSV_HEAD + 'state,hr:0\nspeed,hr:1,,,"' + "x" * 140_000 + '"\n'},
        ["tags.csv:3: cell longer than 131,072 characters"],
    ),
    (
        "toml-nested-arrays",
        BASE + "deep = " + "[" * 1000 + "]" * 1000 + "\n",
        {},
        ["nested too deeply: more than 64 levels of tables and arrays"],
    ),
    (
        "toml-nested-tables",
        BASE + "[" + ".".join(["t"] * 3000) + "]\n",
        {},
        ["nested too deeply: more than 64 levels of tables and arrays"],
    ),
    (
        "bom-only",
        "\ufeff\n",
        {},
        ["empty file; `lineside init --profile press` writes a starter"],
    ),
    (
        "tags-and-tags-file",
        BASE.replace('machine = "press1"\n', 'machine = "press1"\ntags_file = "tags.csv"\n'),
        {"tags.csv": CSV_HEAD + "speed,hr:1\n"},
        ["sources[0].units[0].tags_file: use either tags or tags_file, not both"],
    ),
    (
        "bad-durations",
        BASE.replace('host = "127.0.0.1"', 'host = "h"\ntimeout = 5\ninter_request_delay = "-1s"')
        + 'interval = "soon"\n',
        {},
        [
            'sources[0].timeout: durations need a unit, e.g. "500ms" or "5s", got 5',
            "sources[0].units[0].tags[0].interval: bad duration 'soon': write a number and a "
            'unit (us, ms, s, m, h, d), e.g. "500ms"',
            "sources[0].inter_request_delay: must not be negative, got '-1s'",
        ],
    ),
    (
        # "0s" is back to back (docs/configuration.md); below zero is no interval at all.
        "poll-interval-negative",
        BASE.replace('machine = "press1"\n', 'machine = "press1"\npoll_interval = "-1ms"\n'),
        {},
        ["sources[0].units[0].poll_interval: must not be negative, got '-1ms'"],
    ),
    (
        "bad-timezone",
        BASE + '[calendar]\ntimezone = "Asia/Shanghia"\n',
        {},
        [
            "calendar.timezone: unknown time zone 'Asia/Shanghia': "
            'use an IANA name like "Asia/Shanghai"'
        ],
    ),
    (
        "break-outside-shift",
        BASE
        + SHIFT
        + 'start = "06:00"\nend = "14:00"\nbreaks = [{ start = "13:45", end = "14:15" }]\n',
        {},
        ["calendar.shifts[0].breaks[0]: break 13:45-14:15 is not within the shift 06:00-14:00"],
    ),
    (
        "break-outside-night-shift",
        BASE
        + SHIFT
        + 'start = "22:00"\nend = "06:00"\nbreaks = [{ start = "07:00", end = "07:15" }]\n',
        {},
        ["calendar.shifts[0].breaks[0]: break 07:00-07:15 is not within the shift 22:00-06:00"],
    ),
    (
        "bad-shift-time-and-day",
        BASE + SHIFT + 'start = "25:00"\nend = "06:00"\ndays = ["mon", "fry"]\n',
        {},
        [
            "calendar.shifts[0].start: expected a time like \"06:00\", got '25:00'",
            "calendar.shifts[0].days[1]: expected 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or "
            "'sun', got 'fry'",
        ],
    ),
    (
        "opcua-literal-password",
        HEAD + MACHINE + OPCUA + 'username = "u"\npassword = "hunter2"\n',
        {},
        [
            "sources[0].password: a password in the config file is refused: use password_env "
            "(an environment variable) or password_file"
        ],
    ),
    (
        "opcua-policy-without-mode",
        HEAD + MACHINE + OPCUA + 'security_policy = "Basic256Sha256"\n',
        {},
        [
            "sources[0].security_mode: security_policy Basic256Sha256 needs security_mode "
            "Sign or SignAndEncrypt"
        ],
    ),
    (
        "opcua-mode-without-policy",
        HEAD + MACHINE + OPCUA + 'security_mode = "Sign"\n',
        {},
        ["sources[0].security_policy: security_mode Sign needs a security_policy other than None"],
    ),
    (
        "opcua-endpoint-with-credentials",
        HEAD + MACHINE + OPCUA.replace("opc.tcp://", "opc.tcp://operator:s3cret-pw@"),
        {},
        [
            "sources[0].endpoint: an endpoint must not hold a user name or password: set "
            "username and password_env (or password_file)"
        ],
    ),
    (
        "opcua-bad-endpoint-and-policy",
        HEAD + MACHINE + OPCUA.replace("opc.tcp://", "http://") + 'security_policy = "Basic128"\n',
        {},
        [
            'sources[0].endpoint: expected an endpoint like "opc.tcp://host:4840", '
            "got 'http://10.0.0.1:4840'",
            "sources[0].security_policy: expected 'None', 'Basic256Sha256', "
            "'Aes128_Sha256_RsaOaep' or 'Aes256_Sha256_RsaPss', got 'Basic128'",
        ],
    ),
    (
        "rtu-bad-parity",
        HEAD + MACHINE + '[[sources]]\nname = "bus"\ntype = "modbus_rtu"\nport = "/dev/ttyUSB0"\n'
        'parity = "X"\n[[sources.units]]\nunit_id = 0\nmachine = "press1"\n' + TAG,
        {},
        ["sources[0].parity: expected 'N', 'E' or 'O', got 'X'"],
    ),
    (
        "rtu-broadcast-unit",
        HEAD + MACHINE + '[[sources]]\nname = "bus"\ntype = "modbus_rtu"\nport = "/dev/ttyUSB0"\n'
        '[[sources.units]]\nunit_id = 0\nmachine = "press1"\n' + TAG,
        {},
        ["sources[0].units[0].unit_id: serial unit ids run 1..247 (0 is broadcast), got 0"],
    ),
    (
        "limits",
        BASE.replace('host = "127.0.0.1"', 'host = "h"\nmax_registers_per_read = 126\nport = 0'),
        {},
        [
            "sources[0].max_registers_per_read: must be at most 125, got 126",
            "sources[0].port: must be at least 1, got 0",
        ],
    ),
    (
        "sinks",
        BASE
        + '[[sinks]]\nname = "mes"\ntype = "http"\nurl = "ftp://mes"\n'
        + 'headers = { Authorization = "Bearer x" }\n'
        + '[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "b"\nqos = 2\npassword_env = "P"\n'
        + '[[sinks]]\nname = "sp"\ntype = "sparkplug"\nhost = "b"\ngroup_id = "a/b"\n',
        {},
        [
            "sinks[0].url: expected an http:// or https:// URL, got 'ftp://mes'",
            "sinks[0].headers.Authorization: the header Authorization looks like a secret and is "
            "refused in the config file: use token_env (bearer token), username with password_env "
            "(basic auth), or header_env",
            "sinks[1].qos: expected 0 or 1, got 2",
            "sinks[2].group_id: may not be empty or contain '/', '+', '#' or spaces, got 'a/b'",
            "sinks[2]: missing key 'edge_node_id'",
        ],
    ),
    (
        "http-secrets-in-url-and-headers",
        BASE
        + '[[sinks]]\nname = "a"\ntype = "http"\nurl = "https://op:hunter2@mes/api"\n'
        + 'headers = { X-Api-Key = "k1", Cookie = "c", X-Auth-Token = "t", X-Plant = "p" }\n'
        + '[[sinks]]\nname = "b"\ntype = "http"\nurl = "https://mes/api?line=1&api_key=k2"\n'
        + 'headers = { "Api-Key" = "k3" }\n'
        + '[[sinks]]\nname = "c"\ntype = "http"\nurl = "https://mes/api?Access-Token=k4"\n'
        + '[[sinks]]\nname = "d"\ntype = "http"\nurl = "http://user@mes/api"\n',
        {},
        [
            "sinks[0].url: a user name or password in the url is refused: set username with "
            "password_env or password_file (basic auth), or token_env (bearer token)",
            "sinks[0].headers.X-Api-Key: the header X-Api-Key looks like a secret and is refused "
            "in the config file: read it from an environment variable: header_env = { X-Api-Key "
            '= "ENV_VAR" }',
            "sinks[1].url: the query parameter 'api_key' looks like a secret and is refused: send "
            "it as a header from an environment variable, header_env = { X-Api-Key = "
            '"MES_API_KEY" }, or use token_env (bearer token)',
            "sinks[1].headers.Api-Key: the header Api-Key looks like a secret and is refused in "
            "the config file: read it from an environment variable: header_env = { Api-Key = "
            '"ENV_VAR" }',
            "sinks[2].url: the query parameter 'Access-Token' looks like a secret and is refused: "
            "send it as a header from an environment variable, header_env = { X-Api-Key = "
            '"MES_API_KEY" }, or use token_env (bearer token)',
            "sinks[3].url: a user name or password in the url is refused: set username with "
            "password_env or password_file (basic auth), or token_env (bearer token)",
        ],
    ),
    (
        "http-header-env",
        BASE
        + '[[sinks]]\nname = "a"\ntype = "http"\nurl = "https://mes/api"\n'
        + 'headers = { X-Plant = "p" }\nheader_env = { x-plant = "PLANT" }\n'
        + '[[sinks]]\nname = "b"\ntype = "http"\nurl = "https://mes/api"\ntoken_env = "T"\n'
        + 'header_env = { Authorization = "AUTH" }\n'
        + '[[sinks]]\nname = "c"\ntype = "http"\nurl = "https://mes/api"\n'
        + 'header_env = { "X Key" = "K" }\n'
        + '[[sinks]]\nname = "d"\ntype = "http"\nurl = "https://mes/api"\n'
        + 'header_env = { X-Api-Key = " " }\n',
        {},
        [
            "sinks[0].header_env.x-plant: x-plant is also in headers: set it in one place",
            "sinks[1].header_env.Authorization: Authorization comes from token_env or username "
            "already: set it in one place",
            "sinks[2].header_env: 'X Key' is not an HTTP header name",
            "sinks[3].header_env.X-Api-Key: expected the name of an environment variable",
        ],
    ),
    (
        "mqtt-password-without-user",
        BASE + '[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "b"\npassword_env = "P"\n',
        {},
        ["sinks[0].username: a password is set but no username"],
    ),
    (
        "store",
        BASE
        + '[store]\nsynchronous = "OFF"\nmax_size = 500\nmax_age = "0s"\nflush_rows = 0\n'
        + "colour = 1\n",
        {},
        [
            "store.synchronous: expected 'FULL' or 'NORMAL', got 'OFF'",
            'store.max_size: sizes need a unit, e.g. "500MB", got 500',
            "store.max_age: must be more than zero, got '0s'",
            "store.flush_rows: must be at least 1, got 0",
            "store: unknown key 'colour'",
        ],
    ),
    (
        "store-retention",
        BASE + '[store]\nretention = "1d"\n',
        {},
        [
            "store.retention: retention is no longer a key: records stay for max_age whether "
            "sent or not, and only max_size drops them earlier; remove it (set max_age to keep "
            "less)"
        ],
    ),
    (
        "heartbeat",
        BASE.replace('id = "edge-1"', 'id = "edge-1"\nheartbeat = 60'),
        {},
        ['agent.heartbeat: durations need a unit, e.g. "500ms" or "5s", got 60'],
    ),
]


def write(tmp_path: Path, text: str | bytes, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        target = tmp_path / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    path = tmp_path / "lineside.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = [str(p) for p in caught.value.problems]
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return [line.removeprefix(f"{path}: ") for line in lines]


@pytest.mark.parametrize(
    ("text", "files", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_config(
    tmp_path: Path, text: str | bytes, files: dict[str, str | bytes], expected: list[str]
) -> None:
    path = write(tmp_path, text, files)
    assert problems(path) == [e.replace("{dir}", str(tmp_path.resolve())) for e in expected]


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "none.toml") == ["file not found"]


def test_directory(tmp_path: Path) -> None:
    assert problems(tmp_path) == ["is a directory, not a regular file"]


def test_base_is_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE, {}))
    assert isinstance(config, Config)
    assert config.file == tmp_path / "lineside.toml"
    assert config.agent.data_dir == tmp_path.resolve() / "data"
    assert list(config.machines_by_name) == ["press1"]
    source = config.sources_by_name["plc1"]
    assert isinstance(source, ModbusTcpSourceConfig)
    # defaults
    assert (source.port, source.timeout, source.retries) == (502, 1.0, 1)
    assert (source.max_registers_per_read, source.max_bits_per_read, source.max_gap) == (
        125,
        2000,
        124,  # TCP bridges every gap one read spans (connectors/modbus/config.py)
    )
    assert (source.inter_request_delay, source.max_in_flight) == (0.0, 1)
    tag = source.units[0].tags[0]
    assert tag.address == ModbusAddress(Table.HOLDING_REGISTERS, 0)
    assert (tag.type, tag.order, tag.scale, tag.offset) == ("uint16", "ABCD", 1.0, 0.0)
    assert config.tag_path("press1", "state") == "suzhou/stamping/line-1/press1/state"
    assert config.calendar is None and config.sinks == ()


def test_toml_with_a_bom_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "\ufeff" + BASE, {}))
    assert list(config.machines_by_name) == ["press1"]


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        (63, "unknown key 'deep'"),  # the file's table and 63 arrays: 64 levels, the limit
        (64, "nested too deeply: more than 64 levels of tables and arrays"),
    ],
)
def test_nesting_limit(tmp_path: Path, arrays: int, expected: str) -> None:
    config = "deep = " + "[" * arrays + "]" * arrays + "\n" + BASE
    assert problems(write(tmp_path, config, {})) == [expected]


@pytest.mark.parametrize(
    ("cell", "description"),
    [
        ('"a ""quoted"" word"', 'a "quoted" word'),
        ('"two\nlines"', "two\nlines"),
        ('5" pipe', '5" pipe'),  # a quote inside a cell is a plain character
        ('"q"rest', "qrest"),  # after the closing quote the cell goes on as plain text
        ('""', ""),
    ],
)
def test_csv_quotes_that_close(tmp_path: Path, cell: str, description: str) -> None:
    csv_text = f"name,address,description\nstate,hr:0,{cell}\nspeed,hr:1\n"
    path = write(tmp_path, HEAD + MACHINE + CSV_SOURCE, {"tags.csv": csv_text})
    tags = load_config(path).tags_of("press1")
    assert [(t.name, t.description) for t in tags] == [("state", description), ("speed", "")]


def test_csv_tags_and_datasheet_addresses(tmp_path: Path) -> None:
    csv_text = (
        "\ufeffname,address,type,order,scale,unit,deadband,description\n"
        "count,40005,uint32,CDAB,,,,\n"
        'temp,hr:10,int16,,0.1,°C,0.5,"Die temperature, top"\n'
        "\n"
        "guard,hr:20.3,,,,,,\n"
        "running,00001,,,,,2%,\n"
    )
    path = write(tmp_path, HEAD + MACHINE + CSV_SOURCE, {"tags.csv": csv_text})
    config = load_config(path)
    tags = config.tags_of("press1")
    assert all(isinstance(t, ModbusTag) for t in tags)
    assert [t.name for t in tags] == ["count", "temp", "guard", "running"]
    count, temp, guard, running = (t for t in tags if isinstance(t, ModbusTag))
    assert (str(count.address), count.type, count.order) == ("hr:4", "uint32", "CDAB")
    assert (temp.scale, temp.unit, temp.deadband) == (0.1, "°C", Deadband(0.5))
    assert temp.description == "Die temperature, top"
    assert (str(guard.address), guard.type) == ("hr:20.3", "bool")
    assert (str(running.address), running.type, running.deadband) == (
        "co:0",
        "bool",
        Deadband(2.0, True),
    )
    source = config.sources[0]
    assert isinstance(source, ModbusTcpSourceConfig)
    assert source.units[0].tags_file == tmp_path.resolve() / "tags.csv"


def test_paths_resolve_next_to_the_config(tmp_path: Path) -> None:
    sub = tmp_path / "site"
    sub.mkdir()
    text = (
        BASE.replace('id = "edge-1"', 'id = "edge-1"\ndata_dir = "store"')
        + '[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "b"\nusername = "u"\n'
        + 'password_file = "secret.txt"\n[sinks.tls]\nca = "/etc/ca.pem"\n'
    )
    config = load_config(write(sub, text, {}))
    assert config.agent.data_dir == sub.resolve() / "store"
    sink = config.sinks_by_name["uns"]
    assert isinstance(sink, MqttSinkConfig) and sink.tls is not None
    assert sink.password_file == sub.resolve() / "secret.txt"
    assert sink.tls.ca == Path("/etc/ca.pem")
    assert sink.endpoint == "mqtts://b:1883"


def test_night_shift_with_break_after_midnight(tmp_path: Path) -> None:
    text = (
        BASE
        + SHIFT
        + 'start = "22:00"\nend = "06:00"\nbreaks = [{ start = "02:00", end = "02:30" }]\n'
    )
    config = load_config(write(tmp_path, text, {}))
    assert config.calendar is not None
    shift = config.calendar.shifts[0]
    assert shift.minutes == 8 * 60
    assert shift.days == ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE, {}))
    with pytest.raises(Exception, match="frozen"):
        config.agent.id = "other"


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=200),
            st.sampled_from(["delete", "duplicate", "char"]),
            st.sampled_from([*'"[]=.,{}0 -\n\\%:', "hr:", "true", "ms", "\x00"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_mangled_config_gives_config_error_only(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[int, str, str]]
) -> None:
    """Whatever the damage, load_config returns a Config or raises ConfigError, nothing else."""
    text = BASE + SHIFT + 'start = "22:00"\nend = "06:00"\n' + OPCUA
    lines = text.splitlines(keepends=True)
    for position, action, char in edits:
        i = position % len(lines)
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        else:
            cut = position % max(len(lines[i]), 1)
            lines[i] = lines[i][:cut] + char + lines[i][cut + 1 :]
        if not lines:
            lines = ["\n"]
    path = write(tmp_path_factory.mktemp("fuzz"), "".join(lines), {})
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems
        assert all(str(p).startswith(f"{path}: ") for p in exc.problems)


def test_units_reading_one_tags_file_share_its_tag_models(tmp_path: Path) -> None:
    """Issue 17: 200 units reading one tags_file held 200 copies of every tag model (15 MB at
    20,000 tags); equal tags are now one tuple, and a unit whose tags differ keeps its own."""
    machines = "".join(MACHINE.replace("press1", m) for m in ("press2", "press3"))
    units = "".join(
        f'[[sources.units]]\nunit_id = {i}\nmachine = "{m}"\ntags_file = "{f}"\n'
        for i, (m, f) in enumerate([("press2", "tags.csv"), ("press3", "other.csv")], start=2)
    )
    csv_text = CSV_HEAD + "count,hr:4,uint32,,\ntemp,hr:10,int16,0.1,°C\n"
    files: dict[str, str | bytes] = {
        "tags.csv": csv_text,
        "other.csv": csv_text.replace("0.1", "0.2"),
    }
    path = write(tmp_path, HEAD + MACHINE + machines + CSV_SOURCE + units, files)
    source = load_config(path).sources[0]
    assert isinstance(source, ModbusTcpSourceConfig)
    first, second, third = source.units
    assert first.tags is second.tags
    assert third.tags != first.tags and third.tags[1].scale == 0.2
