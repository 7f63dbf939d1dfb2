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

Secrets (bearer token, basic-auth password, `header_env` headers) are read at `connect`, so
rotating them needs no restart, and are remembered by `agent.secrets`: an MES that echoes one in
its error text has it masked (`***`) in the log, `last_error`, the quarantine table and status.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time
from collections.abc import Mapping, Sequence

import httpx
import orjson

from agent.errors import ConnectError, ConnectorError, RequestTimeout, SinkRejected
from agent.secrets import remember
from agent.sink import Record, SinkContext
from connectors.http import payload
from connectors.http.config import HttpSinkConfig

# Statuses that say "not now" or "wrong place" rather than "bad data": retrying is right and
# quarantining every batch (a typo in the URL, a rate limit) would be wrong.
_RETRYABLE_4XX = frozenset({404, 405, 408, 425, 429})
_AUTH_4XX = frozenset({401, 403})
_EXCERPT = 200  # characters of an error response quoted in the error message


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
    return ConnectorError(detail)


class HttpSink:
    """Batched JSON POSTs to an MES; implements `agent.sink.Sink`."""

    def __init__(self, config: HttpSinkConfig, context: SinkContext) -> None:
        self.name = config.name
        self.config = config
        self.context = context
        self._client: httpx.AsyncClient | None = None
        self._stats: dict[str, float] = {
            "requests": 0,
            "records": 0,
            "bytes_sent": 0,
            "timeouts": 0,
            "connect_errors": 0,
            "server_errors": 0,
            "rejected": 0,
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

    async def connect(self) -> None:
        """Build the client (no request is made); fails on a missing secret or CA file."""
        await self.close()
        headers = {**self.config.headers, **self._auth_headers()}
        headers["Content-Type"] = "application/json"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(self.config.timeout),
            verify=_tls_verify(self.config),
            follow_redirects=False,  # a redirect would resend the body somewhere unconfigured
        )

    async def send(self, records: Sequence[Record]) -> None:
        size = self.config.batch_size
        for start in range(0, len(records), size):
            try:
                await self._post(records[start : start + size])
            except SinkRejected as exc:
                if start == 0:
                    raise
                # Earlier slices were delivered: point at the first refused record so the
                # forwarder counts those as acknowledged.
                index = start + (exc.index or 0)
                raise SinkRejected(str(exc), index) from None

    async def _post(self, records: Sequence[Record]) -> None:
        if self._client is None:
            await self.connect()
        assert self._client is not None
        content = payload.body(self.context.agent_id, records, self.context.tags)
        key = payload.idempotency_key(self.context.agent_id, records)
        started = time.perf_counter()
        self._stats["requests"] += 1
        try:
            # httpx's timeouts bound each phase; this bounds the whole exchange, so an MES that
            # trickles bytes cannot hold the lane longer than `timeout` either.
            async with asyncio.timeout(self.config.timeout):
                response = await self._client.post(
                    self.config.url, content=content, headers={"Idempotency-Key": key}
                )
        except TimeoutError:
            self._stats["timeouts"] += 1
            raise RequestTimeout(
                f"POST {self.config.url}: no answer within {self.config.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            failure = _network_error(self.config, exc)
            key_name = "timeouts" if isinstance(failure, RequestTimeout) else "connect_errors"
            self._stats[key_name] += 1
            raise failure from None
        self._stats["last_latency_s"] = time.perf_counter() - started
        self._stats["last_status"] = response.status_code
        error = status_error(response, len(records))
        if error is None:
            self._stats["records"] += len(records)
            self._stats["bytes_sent"] += len(content)
            return
        if isinstance(error, SinkRejected):
            self._stats["rejected"] += 1
        elif response.status_code >= 500:
            self._stats["server_errors"] += 1
        raise error

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def statistics(self) -> Mapping[str, float]:
        return dict(self._stats)
