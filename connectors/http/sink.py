"""The HTTP sink: one JSON POST per batch to an MES, with an idempotency key.

The forwarder owns retries and back-off; `send` makes exactly one attempt per batch (one POST,
or one per `batch_size` slice when handed more) and says how it went in the project's error
vocabulary. httpx exceptions and HTTP statuses are translated here and nowhere else:

    2xx                          delivered
    timeout (read, write, pool)  RequestTimeout    (retried)
    refused, reset, TLS failure  ConnectError      (retried)
    401, 403                     ConnectError      (credentials: retried, never quarantined)
    404, 405, 408, 425, 429, 5xx ConnectorError    (retried: the endpoint, not the data, is wrong)
    other 4xx                    SinkRejected      (quarantined; 422 {"rejected": [i]} names one)

A retryable status may carry `Retry-After` (delta-seconds or an HTTP-date): it travels on the
error as `retry_after` (at most `RETRY_AFTER_MAX`), and the forwarder waits at least that long.

Retries are idempotent. A batch that failed without an answer the MES stands by (a timeout, a
dropped connection, a retryable status) is kept, body and key, per stream; when the forwarder
hands the same records again, possibly with more behind them, exactly that batch goes first,
byte for byte under the same `Idempotency-Key`, and the new records follow in batches of their
own. So an MES that committed the first attempt recognises the retry.

Streams are independent (`independent_streams`): each has its own client (connection pool), so
a request hanging on the events stream holds back nothing of the telemetry stream's. After a
failure the stream's client is dropped: its next request opens a fresh connection.

Secrets (bearer token, basic-auth password, `header_env` headers) are read at `connect` and
again after any failure, so rotating them needs no restart, and are remembered by
`agent.secrets`: an MES that echoes one in its error text has it masked (`***`) in the log,
`last_error`, the quarantine table and status.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import os
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import orjson

from agent.errors import ConnectError, ConnectorError, RequestTimeout, SinkRejected
from agent.secrets import remember
from agent.sink import Record, SinkContext, TelemetryRecords
from agent.statistics import SinkStatistics
from connectors.http import payload
from connectors.http.config import HttpSinkConfig

# Statuses that say "not now" or "wrong place" rather than "bad data": retrying is right and
# quarantining every batch (a typo in the URL, a rate limit) would be wrong.
_RETRYABLE_4XX = frozenset({404, 405, 408, 425, 429})
_AUTH_4XX = frozenset({401, 403})
_EXCERPT = 200  # characters of an error response quoted in the error message
# A Retry-After longer than this (a typo, a date far ahead) is cut to it: the MES is asked again
# at least every five minutes.
RETRY_AFTER_MAX = 300.0


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a `Retry-After` header asks to wait (RFC 9110 §10.2.3): delta-seconds or an
    HTTP-date against `now` (Unix seconds), within 0..RETRY_AFTER_MAX; None when the header
    is absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9]+", text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": no zone given; HTTP-dates are GMT
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def rejected_index(status: int, content: bytes, batch_length: int) -> int | None:
    """The refused record's index from a 422 body `{"rejected": [i, ...]}`, else None.

    The smallest valid index wins: the forwarder quarantines it, counts the ones before it as
    delivered, and sends the rest again (the MES drops those it already has by seq).
    """
    if status != 422:
        return None
    try:
        document = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    rejected = document.get("rejected")
    if not isinstance(rejected, list):
        return None
    indexes = [i for i in rejected if isinstance(i, int) and not isinstance(i, bool) and i >= 0]
    indexes = [i for i in indexes if i < batch_length]
    return min(indexes) if indexes else None


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def _read_secret(
    env: str | None, file: os.PathLike[str] | None, what: str, user: str | None = None
) -> str:
    """A secret from its environment variable or file, remembered so lineside never writes it
    (nor, with `user`, its basic-auth pair) even when the MES echoes it back."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ConnectError(f"{what}: environment variable {env} is not set")
    elif file is not None:
        try:
            with open(file, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            raise ConnectError(f"{what}: cannot read {file}: {exc.strerror}") from None
    else:
        raise ConnectError(f"{what}: no password_env or password_file")
    remember(value, user)
    return value


def _tls_verify(config: HttpSinkConfig) -> ssl.SSLContext | bool:
    if not config.verify:
        return False
    if config.ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(config.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"cannot load ca_file {config.ca_file}: {exc}") from None


def _network_error(config: HttpSinkConfig, exc: httpx.HTTPError) -> ConnectorError:
    """Translate one httpx failure; the URL is named, no header or secret is."""
    where = f"POST {config.url}"
    if isinstance(exc, httpx.ConnectTimeout):
        return ConnectError(f"{where}: connect timed out after {config.timeout:g} s")
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(f"{where}: no answer within {config.timeout:g} s")
    detail = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        return ConnectError(f"{where}: TLS certificate verification failed: {detail}")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        # RemoteProtocolError is what a connection dropped before the response looks like.
        return ConnectError(f"{where}: connection failed: {detail}")
    return ConnectorError(f"{where}: {detail}")


def status_error(response: httpx.Response, batch_length: int) -> ConnectorError | None:
    """None for a 2xx answer, else the error the forwarder should act on."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    where = f"POST {response.request.url}: HTTP {status}"
    excerpt = _excerpt(response)
    detail = f"{where}: {excerpt}" if excerpt else where
    if status in _AUTH_4XX:
        return ConnectError(f"{detail} (check token_env or username/password)")
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return SinkRejected(detail, rejected_index(status, response.content, batch_length))
    error = ConnectorError(detail)
    error.retry_after = retry_after(response.headers.get("Retry-After"), time.time())
    return error


@dataclass(frozen=True, slots=True)
class _Unanswered:
    """A batch sent without an answer to stand by: resent as it was when its records return."""

    seqs: list[int]
    key: str
    content: bytes


def _seqs(records: Sequence[Record]) -> list[int]:
    if isinstance(records, TelemetryRecords):
        return [int(seq) for seq in records.seqs.tolist()]
    return [r.seq for r in records]


class HttpSink:
    """Batched JSON POSTs to an MES; implements `agent.sink.Sink`."""

    # Each stream has its own client: the forwarder may send on two streams at once, and a
    # failure of one does not close the other's connection.
    independent_streams = True

    def __init__(self, config: HttpSinkConfig, context: SinkContext) -> None:
        self.name = config.name
        self.config = config
        self.context = context
        self._clients: dict[str, httpx.AsyncClient] = {}  # by stream
        # Headers with the secrets and the TLS setting; None: read them before the next client.
        self._settings: tuple[dict[str, str], ssl.SSLContext | bool] | None = None
        self._unanswered: dict[str, _Unanswered] = {}  # by stream
        self._stats: dict[str, float] = {
            "requests": 0,
            "records": 0,
            "bytes_sent": 0,
            "timeouts": 0,
            "connect_errors": 0,
            "server_errors": 0,
            "rejected": 0,
            "resent": 0,  # batches sent again as they were (same records, same key)
            "retry_after": 0,  # answers that asked for a pause (Retry-After)
            "last_status": 0,
            "last_latency_s": 0.0,
        }

    def _auth_headers(self) -> dict[str, str]:
        config = self.config
        headers = {
            header: _read_secret(env, None, f"header {header}")
            for header, env in config.header_env.items()
        }
        if config.token_env is not None:
            token = _read_secret(config.token_env, None, "bearer token")
            headers["Authorization"] = f"Bearer {token}"
        elif config.username is not None:
            password = _read_secret(
                config.password_env, config.password_file, "basic auth", config.username
            )
            # RFC 7617 basic auth; UTF-8 is the charset it names for user and password.
            pair = base64.b64encode(f"{config.username}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {pair}"
        return headers

    def _load_settings(self) -> tuple[dict[str, str], ssl.SSLContext | bool]:
        headers = {**self.config.headers, **self._auth_headers()}
        headers["Content-Type"] = "application/json"
        return headers, _tls_verify(self.config)

    async def connect(self) -> None:
        """Read the secrets and the CA file (no request is made); fails on a missing one."""
        await self.close()
        self._settings = self._load_settings()

    def _client(self, stream: str) -> httpx.AsyncClient:
        client = self._clients.get(stream)
        if client is None:
            if self._settings is None:
                self._settings = self._load_settings()
            headers, verify = self._settings
            client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.config.timeout),
                verify=verify,
                follow_redirects=False,  # a redirect would resend the body somewhere unconfigured
            )
            self._clients[stream] = client
        return client

    async def _drop(self, stream: str) -> None:
        """After a failure: the stream's next request opens a fresh connection, with the
        secrets read again (a rotated token takes effect without a restart)."""
        self._settings = None
        client = self._clients.pop(stream, None)
        if client is not None:
            await client.aclose()

    async def send(self, records: Sequence[Record]) -> None:
        if not len(records):
            return
        stream = records[0].stream
        seqs = _seqs(records)
        start = 0
        while start < len(records):
            end = self._resend_end(stream, seqs, start)
            if end is None:
                end = min(start + self.config.batch_size, len(records))
            try:
                await self._post(stream, records[start:end], seqs[start:end])
            except SinkRejected as exc:
                if start == 0:
                    raise
                # Earlier slices were delivered: point at the first refused record so the
                # forwarder counts those as acknowledged.
                index = start + (exc.index or 0)
                raise SinkRejected(str(exc), index) from None
            start = end

    def _resend_end(self, stream: str, seqs: list[int], start: int) -> int | None:
        """Where the unanswered batch of `stream` ends when `seqs[start:]` begins with it."""
        unanswered = self._unanswered.get(stream)
        if unanswered is None:
            return None
        end = start + len(unanswered.seqs)
        return end if seqs[start:end] == unanswered.seqs else None

    async def _post(self, stream: str, records: Sequence[Record], seqs: list[int]) -> None:
        unanswered = self._unanswered.get(stream)
        if unanswered is not None and unanswered.seqs == seqs:
            key, content = unanswered.key, unanswered.content  # the very same request
            self._stats["resent"] += 1
        else:
            content = payload.body(self.context.agent_id, records, self.context.tags)
            key = payload.idempotency_key(self.context.agent_id, records)
        client = self._client(stream)
        started = time.perf_counter()
        self._stats["requests"] += 1
        try:
            # httpx's timeouts bound each phase; this bounds the whole exchange, so an MES that
            # trickles bytes cannot hold the lane longer than `timeout` either.
            async with asyncio.timeout(self.config.timeout):
                response = await client.post(
                    self.config.url, content=content, headers={"Idempotency-Key": key}
                )
        except TimeoutError:
            self._stats["timeouts"] += 1
            await self._unanswered_batch(stream, _Unanswered(seqs, key, content))
            raise RequestTimeout(
                f"POST {self.config.url}: no answer within {self.config.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            failure = _network_error(self.config, exc)
            key_name = "timeouts" if isinstance(failure, RequestTimeout) else "connect_errors"
            self._stats[key_name] += 1
            await self._unanswered_batch(stream, _Unanswered(seqs, key, content))
            raise failure from None
        self._stats["last_latency_s"] = time.perf_counter() - started
        self._stats["last_status"] = response.status_code
        error = status_error(response, len(records))
        if error is None:
            self._unanswered.pop(stream, None)
            self._stats["records"] += len(records)
            self._stats["bytes_sent"] += len(content)
            return
        if isinstance(error, SinkRejected):
            self._unanswered.pop(stream, None)  # answered: the forwarder quarantines
            self._stats["rejected"] += 1
            raise error
        if response.status_code >= 500:
            self._stats["server_errors"] += 1
        if error.retry_after is not None:
            self._stats["retry_after"] += 1
        await self._unanswered_batch(stream, _Unanswered(seqs, key, content))
        raise error

    async def _unanswered_batch(self, stream: str, batch: _Unanswered) -> None:
        self._unanswered[stream] = batch
        await self._drop(stream)

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    def statistics(self) -> SinkStatistics:
        s = self._stats
        return SinkStatistics(
            connected=bool(self._clients),
            records=int(s["records"]),
            extras={k: v for k, v in s.items() if k != "records"},
        )
