"""Fixtures shared across the test tree."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import BrokerFactory, Certificates, make_certificates, mosquitto_binary


@pytest.fixture(autouse=True)
def _agent_log_handlers_end_with_the_test() -> Iterator[None]:
    """A test that runs the CLI in-process installs the agent's log handlers on the stderr
    pytest gave it, which pytest closes; left behind, a later test would log into a closed
    stream ("Logging error ... I/O operation on closed file")."""
    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if getattr(handler, "lineside", False):
            root.removeHandler(handler)
            handler.close()


@pytest.fixture(scope="session")
def shift_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config of a store the real agent filled over a 2 h shift of a simulated plant
    (tests/agent/kpi/test_replay.py's `fill_store`, 6 s): made once for the replay, the OEE
    commands and the printed report. Read it, never change it: a test that needs another
    config writes a file of its own (the config's `data_dir` is absolute)."""
    from tests.agent.kpi.test_replay import fill_store

    return asyncio.run(fill_store(tmp_path_factory.mktemp("shift")))


@pytest.fixture(scope="session")
def test_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA, server and client certificates and an unrelated CA (made once per run)."""
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def mosquitto(tmp_path: Path, test_certificates: Certificates) -> Iterator[BrokerFactory]:
    """Start private mosquitto brokers: `mosquitto(users=..., tls=..., acl=...)`.

    Every broker started is killed when the test ends. A missing mosquitto fails the test.
    """
    mosquitto_binary()
    factory = BrokerFactory(tmp_path / "mosquitto", test_certificates)
    try:
        yield factory
    finally:
        factory.close()
