"""The HTTP sink against a real HTTP server: exact requests, every failure mode, TLS, throughput."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import registry
from agent.clock import FakeClock, SystemClock
from agent.errors import ConnectError, ConnectorError, RequestTimeout, SinkRejected
from agent.forward import Forwarder
from agent.lane import ForwardSettings
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.runtime import sink_tags
from agent.sink import EventRecord, Record, SinkContext, TelemetryRecord
from agent.store import Store, StoreWriter
from agent.tags import Tag
from connectors.http import payload
from connectors.http.config import HttpSinkConfig
from connectors.http.sink import RETRY_AFTER_MAX, HttpSink, retry_after
from tests.connectors.http.mes_server import (
    Close,
    CommitThenReset,
    Hang,
    MesServer,
    Reset,
    Status,
    records_of,
)
from tests.waiting import until

T0 = 1_714_550_400_000_000_000
TAGS_PER_RECORD = 10
TAGS = {
    i: Tag.from_path(f"suzhou/stamping/line-1/press1/t{i}", unit="bar")
    for i in range(TAGS_PER_RECORD)
}
CONTEXT = SinkContext(agent_id="edge-1", tags=TAGS)

MakeSink = Callable[..., HttpSink]


def records(first: int, count: int) -> list[Record]:
    ids = list(range(TAGS_PER_RECORD))
    return [
        TelemetryRecord(
            seq,
            ReadingBatch.from_columns("plc1", ids, [seq + i / 10 for i in ids], Quality.GOOD, T0),
        )
        for seq in range(first, first + count)
    ]


@pytest.fixture
def mes() -> Iterator[MesServer]:
    with MesServer().running() as server:
        yield server


@pytest.fixture
async def make_sink() -> AsyncIterator[MakeSink]:
    made: list[HttpSink] = []

    def make(url: str, **keys: Any) -> HttpSink:
        config = HttpSinkConfig.model_validate({"type": "http", "name": "mes", "url": url, **keys})
        sink = HttpSink(config, CONTEXT)
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.close()


def test_registry_names_the_runtime() -> None:
    assert registry.runtime_class("http") is HttpSink


async def test_body_and_headers_exact(
    mes: MesServer, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINESIDE_TEST_MES_TOKEN", "s3cret-token")
    sink = make_sink(mes.url, token_env="LINESIDE_TEST_MES_TOKEN", headers={"X-Plant": "suzhou"})
    await sink.connect()
    batch = records(41, 3)
    await sink.send(batch)

    [request] = mes.requests
    assert request.method == "POST" and request.path == "/api/lineside"
    assert request.headers["idempotency-key"] == "edge-1:telemetry:41-43"
    assert request.headers["authorization"] == "Bearer s3cret-token"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-plant"] == "suzhou"
    assert request.body == payload.body("edge-1", batch, TAGS)
    document = request.json()
    assert document["agent_id"] == "edge-1" and document["stream"] == "telemetry"
    assert document["seq"] == [41, 42, 43]
    assert records_of(document)[1]["readings"][3] == {
        "path": "suzhou/stamping/line-1/press1/t3",
        "value": 42.3,
        "quality": "good",
        "unit": "bar",
        "ts": "2024-05-01T08:00:00.000Z",
    }
    stats = sink.statistics()
    assert (
        stats.extras["requests"] == 1 and stats.records == 3 and stats.extras["last_status"] == 200
    )
    assert stats.extras["bytes_sent"] == len(request.body)


async def test_basic_auth_from_a_password_file(
    mes: MesServer, make_sink: MakeSink, tmp_path: Path
) -> None:
    secret = tmp_path / "mes.pw"
    secret.write_text("pässword\n", encoding="utf-8")
    sink = make_sink(mes.url, username="line1", password_file=str(secret))
    await sink.connect()
    await sink.send(records(1, 1))
    expected = base64.b64encode("line1:pässword".encode()).decode()
    assert mes.requests[0].headers["authorization"] == f"Basic {expected}"


async def test_header_env_sends_secret_headers_read_at_connect(
    mes: MesServer, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINESIDE_TEST_MES_KEY", "key-one")
    sink = make_sink(
        mes.url, header_env={"X-Api-Key": "LINESIDE_TEST_MES_KEY"}, headers={"X-Plant": "p"}
    )
    await sink.connect()
    await sink.send(records(1, 1))
    monkeypatch.setenv("LINESIDE_TEST_MES_KEY", "key-two")  # rotated: the next connect reads it
    await sink.connect()
    await sink.send(records(2, 1))
    assert [r.headers["x-api-key"] for r in mes.requests] == ["key-one", "key-two"]
    assert mes.requests[0].headers["x-plant"] == "p"
    monkeypatch.delenv("LINESIDE_TEST_MES_KEY")
    with pytest.raises(ConnectError) as caught:
        await sink.connect()
    assert str(caught.value) == (
        "header X-Api-Key: environment variable LINESIDE_TEST_MES_KEY is not set"
    )


async def test_missing_secrets_fail_connect_without_leaking(
    make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LINESIDE_TEST_UNSET", raising=False)
    sink = make_sink("http://127.0.0.1:9/", token_env="LINESIDE_TEST_UNSET")
    with pytest.raises(ConnectError) as caught:
        await sink.connect()
    assert str(caught.value) == "bearer token: environment variable LINESIDE_TEST_UNSET is not set"
    sink = make_sink("http://127.0.0.1:9/", username="u", password_file=str(tmp_path / "none"))
    with pytest.raises(ConnectError, match=r"^basic auth: cannot read .*none: No such file"):
        await sink.connect()


async def test_server_errors_are_retryable_and_say_the_status(
    mes: MesServer, make_sink: MakeSink
) -> None:
    sink = make_sink(mes.url)
    await sink.connect()
    retryable = (500, 503, 429, 404, 302)
    mes.script(*(Status(status) for status in retryable))
    for status in retryable:
        with pytest.raises(ConnectorError) as caught:
            await sink.send(records(1, 2))
        # Plain ConnectorError: retried by the forwarder, never quarantined.
        assert type(caught.value) is ConnectorError
        assert f"HTTP {status}" in str(caught.value)
    await sink.send(records(1, 2))  # the MES is back: the same batch goes through
    assert mes.totals().records == 2 and sink.statistics().extras["server_errors"] == 2


async def test_error_message_quotes_the_answer(mes: MesServer, make_sink: MakeSink) -> None:
    sink = make_sink(mes.url)
    mes.script(Status(500, b"database locked"))
    with pytest.raises(ConnectorError, match=r"HTTP 500: database locked$"):
        await sink.send(records(1, 1))


async def test_auth_failure_is_a_connect_error(
    mes: MesServer, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials, not data, are wrong: hold the data and retry, never quarantine."""
    monkeypatch.setenv("LINESIDE_TEST_MES_TOKEN", "s3cret-token")
    sink = make_sink(mes.url, token_env="LINESIDE_TEST_MES_TOKEN")
    mes.script(Status(401, b"bad token"), Status(403))
    for status in (401, 403):
        with pytest.raises(ConnectError, match=f"HTTP {status}.*check token_env") as caught:
            await sink.send(records(1, 1))
        assert "s3cret" not in str(caught.value)


async def test_400_rejects_the_whole_batch(mes: MesServer, make_sink: MakeSink) -> None:
    sink = make_sink(mes.url)
    mes.script(Status(400, b'{"error": "schema"}'))
    with pytest.raises(SinkRejected, match="HTTP 400") as caught:
        await sink.send(records(1, 4))
    assert caught.value.index is None
    assert mes.totals().records == 0


async def test_422_names_the_refused_record(mes: MesServer, make_sink: MakeSink) -> None:
    """The contract: the MES stores the good records and names the bad ones by index."""
    sink = make_sink(mes.url)
    mes.refuse(lambda record: record["seq"] in (13, 15))
    batch = records(10, 8)  # seqs 10..17
    with pytest.raises(SinkRejected, match="HTTP 422") as caught:
        await sink.send(batch)
    assert caught.value.index == 3
    # As the forwarder does: quarantine [3], send the rest again.
    with pytest.raises(SinkRejected) as caught:
        await sink.send(batch[4:])
    assert caught.value.index == 1  # seq 15
    await sink.send(batch[6:])
    assert sorted(seq for _, _, seq in mes.stored()) == [10, 11, 12, 14, 16, 17]
    assert mes.requests[1].headers["idempotency-key"] == "edge-1:telemetry:14-17"


async def test_422_without_indexes_rejects_the_batch(mes: MesServer, make_sink: MakeSink) -> None:
    sink = make_sink(mes.url)
    mes.script(Status(422, b"unprocessable"))
    with pytest.raises(SinkRejected) as caught:
        await sink.send(records(1, 3))
    assert caught.value.index is None


async def test_hang_times_out_within_the_timeout(mes: MesServer, make_sink: MakeSink) -> None:
    sink = make_sink(mes.url, timeout="300ms")
    mes.script(Hang())
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"no answer within 0\.3 s$"):
        await sink.send(records(1, 1))
    elapsed = time.monotonic() - started
    assert len(mes.requests) == 1, "the request reached the server, which held it"
    assert elapsed < 5.0, elapsed  # gave up: a hang is not waited out
    await sink.send(records(1, 1))  # the next attempt works on a fresh connection
    assert mes.totals().records == 1


async def test_reset_is_a_connect_error(mes: MesServer, make_sink: MakeSink) -> None:
    sink = make_sink(mes.url)
    mes.script(Reset())
    with pytest.raises(ConnectError, match="connection failed"):
        await sink.send(records(1, 2))
    assert mes.totals().records == 0
    assert sink.statistics().extras["connect_errors"] == 1


async def test_close_without_answer_is_a_connect_error(mes: MesServer, make_sink: MakeSink) -> None:
    sink = make_sink(mes.url)
    mes.script(Close())
    with pytest.raises(ConnectError, match="connection failed"):
        await sink.send(records(1, 2))
    await sink.send(records(1, 2))
    assert mes.totals().records == 2


async def test_refused_connection_is_a_connect_error(make_sink: MakeSink) -> None:
    with MesServer().running() as gone:
        url = gone.url
    sink = make_sink(url)
    with pytest.raises(ConnectError, match=f"POST {url}: connection failed"):
        await sink.send(records(1, 1))


async def test_commit_then_reset_is_delivered_once_after_a_resend(
    mes: MesServer, make_sink: MakeSink
) -> None:
    sink = make_sink(mes.url)
    batch = records(100, 50)
    mes.script(CommitThenReset())
    with pytest.raises(ConnectError):
        await sink.send(batch)  # stored, but the answer never came
    await sink.send(batch)  # as the forwarder does: the same batch again

    first, second = mes.requests
    assert first.body == second.body
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    totals = mes.totals()
    assert (totals.requests, totals.deliveries) == (2, 100)  # it really arrived twice
    assert (totals.batches, totals.records) == (1, 50)  # de-duplicated: the truth
    assert totals.readings == 50 * TAGS_PER_RECORD


async def test_a_retried_batch_that_grew_goes_again_as_it_was(
    mes: MesServer, make_sink: MakeSink
) -> None:
    """10-12 failed without an answer; by the retry 13-15 arrived too: 10-12 goes again, the
    same bytes under the same key, and 13-15 follows as a batch of its own."""
    sink = make_sink(mes.url)
    mes.script(CommitThenReset())
    with pytest.raises(ConnectError):
        await sink.send(records(10, 3))
    await sink.send(records(10, 6))

    first, again, rest = mes.requests
    assert again.headers["idempotency-key"] == first.headers["idempotency-key"]
    assert first.headers["idempotency-key"] == "edge-1:telemetry:10-12"
    assert again.body == first.body
    assert rest.headers["idempotency-key"] == "edge-1:telemetry:13-15"
    assert rest.json()["seq"] == [13, 14, 15]
    totals = mes.totals()
    assert (totals.batches, totals.records) == (2, 6)
    assert sink.statistics().extras["resent"] == 1

    # answered (here: accepted), the batch is forgotten: 10-15 again is one new batch
    await sink.send(records(10, 6))
    assert mes.requests[-1].headers["idempotency-key"] == "edge-1:telemetry:10-15"


async def test_retry_after_travels_on_the_error(mes: MesServer, make_sink: MakeSink) -> None:
    sink = make_sink(mes.url)
    mes.script(Status(503, headers=(("Retry-After", "7"),)), Status(429), Status(400))
    with pytest.raises(ConnectorError) as caught:
        await sink.send(records(1, 1))
    assert caught.value.retry_after == 7.0
    with pytest.raises(ConnectorError) as caught:
        await sink.send(records(1, 1))
    assert caught.value.retry_after is None  # none given: the forwarder's own back-off
    assert sink.statistics().extras["retry_after"] == 1


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        (" 0 ", 0.0),
        ("86400", RETRY_AFTER_MAX),  # bounded
        ("Wed, 01 May 2024 08:00:30 GMT", 30.0),  # HTTP-date, against now
        ("Wednesday, 01-May-24 08:01:00 GMT", 60.0),  # the obsolete RFC 850 form
        ("Wed, 01 May 2024 08:00:20 -0000", 20.0),  # no zone: GMT, not local time
        ("Wed, 01 May 2024 07:59:00 GMT", 0.0),  # in the past: at once
        ("Fri, 01 May 2026 08:00:00 GMT", RETRY_AFTER_MAX),
        ("-5", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_is_delta_seconds_or_an_http_date(
    header: str | None, seconds: float | None
) -> None:
    assert retry_after(header, now=T0 / 1e9) == seconds


async def test_more_than_batch_size_is_split(mes: MesServer, make_sink: MakeSink) -> None:
    sink = make_sink(mes.url, batch_size=3)
    await sink.send(records(1, 7))
    keys = [r.headers["idempotency-key"] for r in mes.requests]
    assert keys == ["edge-1:telemetry:1-3", "edge-1:telemetry:4-6", "edge-1:telemetry:7-7"]
    assert mes.totals().records == 7


async def test_refusal_in_a_later_slice_points_past_the_delivered_ones(
    mes: MesServer, make_sink: MakeSink
) -> None:
    sink = make_sink(mes.url, batch_size=3)
    mes.refuse(lambda record: record["seq"] == 5)
    with pytest.raises(SinkRejected) as caught:
        await sink.send(records(1, 7))
    assert caught.value.index == 4  # seq 5: seqs 1-3 were acknowledged in the first slice
    mes.refuse(None)
    mes.script(Status(400))
    with pytest.raises(SinkRejected) as caught:
        await sink.send(records(11, 7))
    assert caught.value.index is None  # the first slice refused whole: the batch as a whole
    mes.script(Status(200), Status(400))
    with pytest.raises(SinkRejected) as caught:
        await sink.send(records(21, 7))
    assert caught.value.index == 3  # second slice refused whole: its first record


async def test_unsendable_record_is_refused_before_any_request(
    mes: MesServer, make_sink: MakeSink
) -> None:
    sink = make_sink(mes.url)
    bad = EventRecord(2, Event(EventKind.ALARM, T0, "press1", {"raw": b"\x00"}))
    good = EventRecord(1, Event(EventKind.ALARM, T0, "press1", {"code": 3}))
    with pytest.raises(SinkRejected) as caught:
        await sink.send([good, bad])
    assert caught.value.index == 1 and mes.requests == []


# --- TLS ------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mes.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "mes.pem", directory / "mes.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_is_verified_by_default(make_sink: MakeSink, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with MesServer(tls=tls).running() as mes:
        assert mes.url.startswith("https://")
        sink = make_sink(mes.url)
        with pytest.raises(ConnectError, match="TLS certificate verification failed"):
            await sink.send(records(1, 1))
        assert mes.requests == []  # nothing was sent to an unverified server

        trusted = make_sink(mes.url, ca_file=str(cert))
        await trusted.send(records(1, 1))
        assert mes.totals().records == 1

        unchecked = make_sink(mes.url, verify=False)
        await unchecked.send(records(2, 1))
        assert mes.totals().records == 2


async def test_unreadable_ca_file_fails_connect(make_sink: MakeSink, tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate", encoding="utf-8")
    sink = make_sink("https://127.0.0.1:9/", ca_file=str(tmp_path / "junk.pem"))
    with pytest.raises(ConnectError, match="cannot load ca_file"):
        await sink.connect()


# --- throughput (reported, not asserted) ----------------------------------------------------


async def test_throughput_10k_records_in_batches_of_500(
    mes: MesServer, make_sink: MakeSink, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = make_sink(mes.url, batch_size=500)
    await sink.connect()
    all_records = records(1, 10_000)
    started = time.perf_counter()
    for start in range(0, len(all_records), 500):
        await sink.send(all_records[start : start + 500])
    elapsed = time.perf_counter() - started
    build = time.perf_counter()
    for start in range(0, len(all_records), 500):
        payload.body("edge-1", all_records[start : start + 500], TAGS)
    build = time.perf_counter() - build
    totals = mes.totals()
    assert (totals.records, totals.requests) == (10_000, 20)
    assert totals.readings == 10_000 * TAGS_PER_RECORD
    with capsys.disabled():
        print(
            f"\nhttp sink: 10000 records x {TAGS_PER_RECORD} readings in 20 POSTs: "
            f"{elapsed:.3f} s, {10_000 / elapsed:,.0f} records/s "
            f"({10_000 * TAGS_PER_RECORD / elapsed:,.0f} readings/s); "
            f"body building alone {build / elapsed:.0%} of it; "
            f"{sink.statistics().extras['bytes_sent'] / 20 / 1024:.0f} KiB per POST"
        )


# --- with the real forwarder and store --------------------------------------------------------


async def test_forwarder_delivers_through_every_fault_effectively_once(
    mes: MesServer, tmp_path: Path
) -> None:
    """Store → forwarder → HttpSink → MES through a commit-then-reset, a 503, a reset, a hang
    and one invalid record: the MES ends with every valid record once, the bad one quarantined."""
    with Store(tmp_path) as store:
        ids = store.register_tags(
            [Tag.from_path(f"suzhou/stamping/line-1/press1/t{i}", unit="bar") for i in range(3)]
        )
        store.register_sinks(["mes"])
        context = SinkContext("edge-1", sink_tags(store.tags()))
    writer = StoreWriter(tmp_path)
    try:
        for n in range(40):
            values = [n, n + 0.5, n + 0.25]
            batch = ReadingBatch.from_columns(
                "plc1", list(ids.values()), values, Quality.GOOD, T0 + n
            )
            writer.submit_readings(batch)
        assert writer.flush_blocking(10)
    finally:
        writer.close()

    mes.script(CommitThenReset(), Status(503), Reset(), Hang())
    mes.refuse(lambda record: record["seq"] == 17)
    config = HttpSinkConfig.model_validate(
        {"type": "http", "name": "mes", "url": mes.url, "timeout": "300ms"}
    )
    store, writer = Store(tmp_path), StoreWriter(tmp_path)
    forwarder = Forwarder(
        HttpSink(config, context), store, writer, SystemClock(), ForwardSettings(batch_size=10)
    )
    forwarder._backoff.initial = 0.01  # back-off is the forwarder's own test; keep this short
    task = asyncio.create_task(forwarder.run())
    try:
        async with asyncio.timeout(20):
            while mes.totals().records < 39:  # noqa: ASYNC110 (the MES runs in its own thread)
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        stored = mes.stored()
        assert sorted(seq for _, _, seq in stored) == [s for s in range(1, 41) if s != 17]
        assert stored[("edge-1", "telemetry", 40)]["readings"][1]["value"] == 39.5
        [entry] = store.quarantined("mes")
        assert (entry.stream, entry.seq) == ("telemetry", 17)
        assert "HTTP 422" in entry.reason
        totals = mes.totals()
        assert totals.deliveries > totals.records  # the commit-then-reset batch came twice
        assert forwarder.stats.failures == 4
    finally:
        writer.close()
        store.close()


def filled_store(tmp_path: Path, telemetry: int, events: int = 0) -> SinkContext:
    """A store with `telemetry` batches of three readings and `events` alarms, sink "mes"."""
    with Store(tmp_path) as store:
        ids = store.register_tags(
            [Tag.from_path(f"suzhou/stamping/line-1/press1/t{i}", unit="bar") for i in range(3)]
        )
        store.register_sinks(["mes"])
        context = SinkContext("edge-1", sink_tags(store.tags()))
    writer = StoreWriter(tmp_path)
    try:
        for n in range(telemetry):
            values = [n, n + 0.5, n + 0.25]
            batch = ReadingBatch.from_columns(
                "plc1", list(ids.values()), values, Quality.GOOD, T0 + n
            )
            writer.submit_readings(batch)
        for n in range(events):
            writer.submit_event(Event(EventKind.ALARM, T0 + n, "press1", {"code": n}))
        assert writer.flush_blocking(10)
    finally:
        writer.close()
    return context


class RecordingClock(FakeClock):
    """The fake clock, remembering every deadline a task went to sleep until."""

    def __init__(self) -> None:
        super().__init__()
        self.deadlines: list[float] = []

    async def sleep_until(self, deadline: float) -> None:
        self.deadlines.append(deadline)
        await super().sleep_until(deadline)


async def test_forwarder_waits_as_long_as_retry_after_asks(mes: MesServer, tmp_path: Path) -> None:
    context = filled_store(tmp_path, telemetry=3)
    mes.script(Status(503, b"maintenance", (("Retry-After", "7"),)))
    config = HttpSinkConfig.model_validate({"type": "http", "name": "mes", "url": mes.url})
    clock = RecordingClock()
    store, writer = Store(tmp_path), StoreWriter(tmp_path)
    forwarder = Forwarder(HttpSink(config, context), store, writer, clock)
    task = asyncio.create_task(forwarder.run())
    try:
        await until(lambda: forwarder.stats.failures == 1)
        # the telemetry lane sleeps 7 s (its own back-off would be under a second)
        await until(lambda: clock.monotonic() + 7.0 in clock.deadlines)
        assert clock.monotonic() + 7.0 in clock.deadlines
        assert len(mes.requests) == 1
        await clock.run_until(clock.monotonic() + 7.0)

        def delivered() -> bool:
            clock.advance(0.05)  # the lanes' idle waits are on this clock too
            return mes.totals().records == 3

        await until(delivered)
        assert mes.totals().records == 3
        await until(lambda: forwarder.stats.state == "connected")
        assert forwarder.stats.state == "connected"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.close()
        store.close()


async def test_a_hung_events_request_holds_no_telemetry_back(
    mes: MesServer, tmp_path: Path
) -> None:
    context = filled_store(tmp_path, telemetry=0, events=1)
    mes.hang_stream("events")
    config = HttpSinkConfig.model_validate(
        {"type": "http", "name": "mes", "url": mes.url, "timeout": "60s"}
    )
    store, writer = Store(tmp_path), StoreWriter(tmp_path)
    forwarder = Forwarder(
        HttpSink(config, context), store, writer, SystemClock(), ForwardSettings(batch_size=10)
    )
    task = asyncio.create_task(forwarder.run())
    try:
        await until(lambda: any(r.json()["stream"] == "events" for r in mes.requests))
        assert mes.requests, "the events request reached the MES (and hangs there)"
        tag_ids = sorted(context.tags)
        for n in range(5):
            batch = ReadingBatch.from_columns("plc1", tag_ids, [n, n, n], Quality.GOOD, T0 + n)
            writer.submit_readings(batch)
        await writer.flush()
        # well inside the events request's 60 s timeout
        await until(lambda: mes.totals().records == 5)
        assert sorted(seq for _, stream, seq in mes.stored() if stream == "telemetry") == [
            1, 2, 3, 4, 5,
        ]  # fmt: skip
        assert forwarder.stats.failures == 0  # the events request is still hanging
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.close()
        store.close()


async def test_forwarder_retries_a_batch_that_grew_under_its_key(
    mes: MesServer, tmp_path: Path
) -> None:
    """Through the store and forwarder: seqs 1-3 fail without an answer; 4-6 are stored
    before the retry; the retry is 1-3 again (same key, same body), then 4-6."""
    context = filled_store(tmp_path, telemetry=3)
    mes.script(CommitThenReset())
    config = HttpSinkConfig.model_validate({"type": "http", "name": "mes", "url": mes.url})
    clock = FakeClock()
    store, writer = Store(tmp_path), StoreWriter(tmp_path)
    forwarder = Forwarder(HttpSink(config, context), store, writer, clock)
    task = asyncio.create_task(forwarder.run())
    try:
        await until(lambda: forwarder.stats.failures == 1)
        assert forwarder.stats.failures == 1
        tag_ids = sorted(context.tags)
        for n in range(3, 6):
            batch = ReadingBatch.from_columns("plc1", tag_ids, [n, n, n], Quality.GOOD, T0 + n)
            writer.submit_readings(batch)
        await writer.flush()

        def delivered() -> bool:
            clock.advance(0.05)  # the back-off and the idle waits are on this clock
            return mes.totals().records == 6

        await until(delivered)
        keys = [r.headers["idempotency-key"] for r in mes.requests]
        assert keys == ["edge-1:telemetry:1-3", "edge-1:telemetry:1-3", "edge-1:telemetry:4-6"]
        assert mes.requests[1].body == mes.requests[0].body
        assert mes.totals().batches == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.close()
        store.close()
