"""The three renderers of one `AgentSnapshot`: status.json, `/api/state` and `/metrics`.

A snapshot built by hand (every figure chosen, so every line is known) rendered by each, pure
functions, compared with their whole output; and a figure followed from its dataclass to all
three. The running agent's outputs are tested in tests/agent/web/ and tests/integration/.
"""

# The expected /metrics text keeps its long HELP lines as they are.
# ruff: noqa: E501
from __future__ import annotations

import dataclasses
import math
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent.histogram import HistogramSnapshot
from agent.lane import ForwardStatistics
from agent.pipeline import FilterStatistics
from agent.poller import LinkStatistics
from agent.reasons import Seen
from agent.scheduler import TickerStatistics
from agent.snapshot import (
    AgentSnapshot,
    AlarmSnapshot,
    SinkSnapshot,
    SourceSnapshot,
    StoreFigures,
)
from agent.statistics import SinkStatistics, SourceStatistics
from agent.status_file import status_figures
from agent.store.figures import LATENCY_BUCKETS_S, WriterStats
from agent.web.metrics import render_metrics
from agent.web.state import state_figures

NS = 1_000_000_000
NOW_NS = 1_700_000_010 * NS


def writer_stats() -> WriterStats:
    return WriterStats(
        batches_written=4,
        readings_written=40,
        events_written=2,
        gaps_written=0,
        commits=3,
        commit_latency_last_s=0.002,
        commit_latency_max_s=0.004,
        commit_latency_histogram=(1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        pending_batches=0,
        pending_readings=5,
        pending_events=0,
        dropped_batches=0,
        dropped_readings=0,
        deleted_records=0,
        errors=0,
        last_error=None,
        store_full=False,
        last_seq={"telemetry": 4, "events": 2},
        commit_latency_sum_s=0.005,
        dropped_by_sink={"mes": 7},
    )


def built(**source_statistics: Any) -> AgentSnapshot:
    """One Modbus source, one HTTP sink, one active alarm, the store's figures."""
    statistics = SourceStatistics(
        polls=10,
        requests=20,
        responses=18,
        timeouts=1,
        exceptions=1,
        connects=2,
        bytes_in=300,
        bytes_out=240,
        latency_last_s=0.002,
        latency_p50_s=0.002,
        latency_p99_s=math.nan,
        latency=HistogramSnapshot((0.001, 0.01), (3, 15, 0), 0.03),
        extras={"string_tags": 1},
    )
    source = SourceSnapshot(
        name="plc",
        type="modbus",
        endpoint="10.0.0.5:502",
        statistics=dataclasses.replace(statistics, **source_statistics),
        link=LinkStatistics(
            state="connected",
            polls=9,
            connects=2,
            connect_failures=1,
            disconnects=1,
            last_error="",
            last_good_ns=NOW_NS - 2 * NS,
            non_finite=3,
        ),
        groups={"1s": TickerStatistics(10, 1, 0.001, 0.004, 0.005)},
        tags=12,
        bad_reasons={"Modbus exception 2 (illegal data address)": 2},
        seen=(
            Seen("Modbus exception 2 (illegal data address)", 1_700_000_001.0, 1_700_000_009.0, 4),
        ),
    )
    sink = SinkSnapshot(
        name="mes",
        type="http",
        endpoint="https://mes.example/ingest",
        statistics=SinkStatistics(connected=True, records=30, extras={"requests": 3.0}),
        forward=ForwardStatistics(
            state="connected", sent={"telemetry": 30, "events": 2}, failures=1
        ),
        dropped=7,
    )
    alarm = AlarmSnapshot(
        name="die_cold",
        machine="press1",
        tag="die_temp",
        severity="warning",
        active=True,
        reason="die below working temperature",
        since_ns=NOW_NS - 5 * NS,
        acknowledged=True,
        acknowledged_by="op",
        raised=2,
    )
    return AgentSnapshot(
        agent_id="edge-1",
        wall_ns=NOW_NS,
        monotonic=100.0,
        tags=12,
        samples=120,
        machines=("press1",),
        sources=(source,),
        sinks=(sink,),
        pipeline=FilterStatistics(rows_in=120, rows_out=40),
        writer=writer_stats(),
        store_path="/data/lineside.db",
        alarms=(alarm,),
        inspections=(),
        store=StoreFigures(
            depth={"telemetry": 4, "events": 2},
            bytes=8192,
            backlog={"mes": {"telemetry": 1, "events": 0}},
            oldest_unsent_age_s={"mes": {"telemetry": 3.5, "events": None}},
            quarantined={"mes": 0},
        ),
    )


def test_status_json_renders_the_snapshot() -> None:
    figures = status_figures(built())
    source = figures["sources"]["plc"]
    latency = {k: v for k, v in source.items() if k.startswith("latency_") and "bucket" in k}
    assert latency == {"latency_bucket_0": 3, "latency_bucket_1": 15, "latency_bucket_2": 0}
    assert {k: v for k, v in source.items() if k not in latency and k != "latency_p99_s"} == {
        "polls": 10,
        "requests": 20,
        "responses": 18,
        "timeouts": 1,
        "exceptions": 1,
        "malformed": 0,
        "aborted": 0,
        "bytes_in": 300,
        "bytes_out": 240,
        "latency_last_s": 0.002,
        "latency_p50_s": 0.002,
        "connects": 2,
        "reconnects": 1,
        "string_tags": 1,
        "latency_sum_s": 0.03,
        "latency_count": 18,
        "link": {
            "state": "connected",
            "polls": 9,
            "connects": 2,
            "connect_failures": 1,
            "disconnects": 1,
            "last_error": "",
            "last_good_ns": NOW_NS - 2 * NS,
            "non_finite": 3,
        },
        "groups": {
            "1s": {
                "ticks": 10,
                "overruns": 1,
                "lateness_p50": 0.001,
                "lateness_p99": 0.004,
                "lateness_max": 0.005,
            }
        },
        "tags": 12,
        "bad_reasons": {"Modbus exception 2 (illegal data address)": 2},
    }
    assert math.isnan(source["latency_p99_s"])
    assert figures["sinks"] == {
        "mes": {
            "connected": 1.0,
            "connects": 0,
            "records": 30,
            "requests": 3.0,
            "forward": {
                "state": "connected",
                "sent": {"telemetry": 30, "events": 2},
                "historical": 0,
                "quarantined": 0,
                "failures": 1,
                "last_error": "",
            },
        }
    }
    assert figures["agent_id"] == "edge-1" and figures["written_ns"] == NOW_NS
    assert (figures["tags"], figures["samples"]) == (12, 120)
    assert figures["pipeline"] == {"rows_in": 120, "rows_out": 40}
    assert figures["store"] == dataclasses.asdict(writer_stats())
    assert figures["inspections"] == {}
    assert figures["alarms"] == [
        {"alarm": "die_cold", "machine": "press1", "active": True, "acknowledged": True,
         "raised": 2}
    ]  # fmt: skip


def test_a_source_whose_statistics_failed_shows_why_in_status_json() -> None:
    snapshot = built()
    broken = dataclasses.replace(snapshot.sources[0], statistics_error="unexpected KeyError")
    figures = status_figures(dataclasses.replace(snapshot, sources=(broken,)))
    source = figures["sources"]["plc"]
    assert source["statistics_error"] == "unexpected KeyError"
    assert "requests" not in source and source["link"]["state"] == "connected"


def test_api_state_renders_the_snapshot() -> None:
    figures = state_figures(built(), {"plc": 4.5})
    assert figures["sources"] == [
        {
            "name": "plc",
            "type": "modbus",
            "endpoint": "10.0.0.5:502",
            "state": "connected",
            "polls": 9,
            "poll_rate_hz": 4.5,
            "requests": 20,
            "reconnects": 1,
            "errors": {
                "timeouts": 1,
                "exceptions": 1,
                "malformed": 0,
                "aborted": 0,
                "connect_failures": 1,
                "disconnects": 1,
                "non_finite": 3,
            },
            "errors_total": 7,
            "overruns": 1,
            "latency_p50_s": 0.002,
            "latency_p99_s": None,
            "last_good_ns": NOW_NS - 2 * NS,
            "last_good_age_s": 2.0,
            "last_error": None,
            "tags": 12,
            "bad_tags": 2,
            "bad_reasons": {"Modbus exception 2 (illegal data address)": 2},
            "problem": "2 of 12 tags bad: Modbus exception 2 (illegal data address)",
            "error_list": [
                {
                    "reason": "Modbus exception 2 (illegal data address)",
                    "first_s": 1_700_000_001.0,
                    "last_s": 1_700_000_009.0,
                    "count": 4,
                    "active": True,
                }
            ],
        }
    ]
    assert figures["sinks"] == [
        {
            "name": "mes",
            "type": "http",
            "endpoint": "https://mes.example/ingest",
            "state": "connected",
            "backlog": 1,
            "backlog_by_stream": {"telemetry": 1, "events": 0},
            "oldest_unsent_age_s": 3.5,
            "sent": 32,
            "failures": 1,
            "dropped": 7,
            "quarantined": 0,
            "last_error": None,
        }
    ]
    assert figures["store"] == {
        "path": "/data/lineside.db",
        "depth": {"telemetry": 4, "events": 2},
        "bytes": 8192,
        "readings_written": 40,
        "pending_readings": 5,
        "dropped_readings": 0,
        "store_full": False,
        "full_reason": None,
        "last_error": None,
    }
    assert figures["alarms"] == [
        {
            "alarm": "die_cold",
            "machine": "press1",
            "tag": "die_temp",
            "severity": "warning",
            "reason": "die below working temperature",
            "since_ns": NOW_NS - 5 * NS,
            "active_s": 5.0,
            "acknowledged": True,
            "acknowledged_by": "op",
        }
    ]
    assert figures["inspections"] == {"available": False, "rows": [], "rejects": []}
    rest = {k: figures[k] for k in ("agent_id", "now_ns", "tags", "samples", "machines")}
    assert rest == {
        "agent_id": "edge-1",
        "now_ns": NOW_NS,
        "tags": 12,
        "samples": 120,
        "machines": ["press1"],
    }


METRICS = """\
# HELP lineside_info The agent and its version.
# TYPE lineside_info gauge
lineside_info{agent_id="edge-1",version="9.9.9"} 1.0
# HELP lineside_tags Tags in the config.
# TYPE lineside_tags gauge
lineside_tags 12.0
# HELP lineside_readings_total Readings polled (every sample, stored or not).
# TYPE lineside_readings_total counter
lineside_readings_total 120.0
# HELP lineside_source_up 1 when the link is connected.
# TYPE lineside_source_up gauge
lineside_source_up{source="plc"} 1.0
# HELP lineside_source_polls_total Polls that worked.
# TYPE lineside_source_polls_total counter
lineside_source_polls_total{source="plc"} 9.0
# HELP lineside_source_requests_total Requests sent to the device.
# TYPE lineside_source_requests_total counter
lineside_source_requests_total{source="plc"} 20.0
# HELP lineside_source_reconnects_total Connections made again after the first.
# TYPE lineside_source_reconnects_total counter
lineside_source_reconnects_total{source="plc"} 1.0
# HELP lineside_source_errors_total Failed requests and links, by kind.
# TYPE lineside_source_errors_total counter
lineside_source_errors_total{kind="timeouts",source="plc"} 1.0
lineside_source_errors_total{kind="exceptions",source="plc"} 1.0
lineside_source_errors_total{kind="malformed",source="plc"} 0.0
lineside_source_errors_total{kind="aborted",source="plc"} 0.0
lineside_source_errors_total{kind="connect_failures",source="plc"} 1.0
lineside_source_errors_total{kind="disconnects",source="plc"} 1.0
lineside_source_errors_total{kind="non_finite",source="plc"} 3.0
# HELP lineside_source_overruns_total Poll ticks skipped because the previous poll was still running.
# TYPE lineside_source_overruns_total counter
lineside_source_overruns_total{group="1s",source="plc"} 1.0
# HELP lineside_source_last_good_timestamp_seconds Wall-clock time of the last poll with a good reading (Unix seconds).
# TYPE lineside_source_last_good_timestamp_seconds gauge
lineside_source_last_good_timestamp_seconds{source="plc"} 1.700000008e+09
# HELP lineside_source_bad_tags Tags reading bad now, by reason (Modbus exception, timeout, link error...).
# TYPE lineside_source_bad_tags gauge
lineside_source_bad_tags{reason="Modbus exception 2 (illegal data address)",source="plc"} 2.0
# HELP lineside_source_request_latency_seconds Request round trip of the requests that were answered, since start.
# TYPE lineside_source_request_latency_seconds histogram
lineside_source_request_latency_seconds_bucket{le="0.001",source="plc"} 3.0
lineside_source_request_latency_seconds_bucket{le="0.01",source="plc"} 18.0
lineside_source_request_latency_seconds_bucket{le="+Inf",source="plc"} 18.0
lineside_source_request_latency_seconds_count{source="plc"} 18.0
lineside_source_request_latency_seconds_sum{source="plc"} 0.03
# HELP lineside_source_request_latency_recent_seconds Request round trip, quantile of the recent requests (Modbus).
# TYPE lineside_source_request_latency_recent_seconds gauge
lineside_source_request_latency_recent_seconds{quantile="0.5",source="plc"} 0.002
# HELP lineside_poll_lateness_seconds How late poll ticks start against their grid, quantile since start.
# TYPE lineside_poll_lateness_seconds gauge
lineside_poll_lateness_seconds{group="1s",quantile="0.5",source="plc"} 0.001
lineside_poll_lateness_seconds{group="1s",quantile="0.99",source="plc"} 0.004
# HELP lineside_source_figure A figure only this kind of source keeps, by name (see its connector's README).
# TYPE lineside_source_figure gauge
lineside_source_figure{figure="string_tags",source="plc"} 1.0
# HELP lineside_store_depth_records Records in the store.
# TYPE lineside_store_depth_records gauge
lineside_store_depth_records{stream="telemetry"} 4.0
lineside_store_depth_records{stream="events"} 2.0
# HELP lineside_store_bytes Store size on disk (database and WAL).
# TYPE lineside_store_bytes gauge
lineside_store_bytes 8192.0
# HELP lineside_store_readings_written_total Readings committed.
# TYPE lineside_store_readings_written_total counter
lineside_store_readings_written_total 40.0
# HELP lineside_store_dropped_readings_total Telemetry readings dropped by the store's bounds before every sink had them.
# TYPE lineside_store_dropped_readings_total counter
lineside_store_dropped_readings_total 0.0
# HELP lineside_store_commit_errors_total Commits that failed (retried).
# TYPE lineside_store_commit_errors_total counter
lineside_store_commit_errors_total 0.0
# HELP lineside_store_full 1 while the store is full and events wait.
# TYPE lineside_store_full gauge
lineside_store_full 0.0
# HELP lineside_store_pending_readings Readings handed to the writer, not committed yet.
# TYPE lineside_store_pending_readings gauge
lineside_store_pending_readings 5.0
# HELP lineside_store_commit_latency_seconds Time one store transaction took.
# TYPE lineside_store_commit_latency_seconds histogram
{commit}
# HELP lineside_sink_up 1 when the sink is connected.
# TYPE lineside_sink_up gauge
lineside_sink_up{sink="mes"} 1.0
# HELP lineside_sink_sent_records_total Records acknowledged.
# TYPE lineside_sink_sent_records_total counter
lineside_sink_sent_records_total{sink="mes",stream="telemetry"} 30.0
lineside_sink_sent_records_total{sink="mes",stream="events"} 2.0
# HELP lineside_sink_failures_total Sends that failed.
# TYPE lineside_sink_failures_total counter
lineside_sink_failures_total{sink="mes"} 1.0
# HELP lineside_sink_dropped_records_total Telemetry records the store's bounds dropped before this sink acknowledged them.
# TYPE lineside_sink_dropped_records_total counter
lineside_sink_dropped_records_total{sink="mes"} 7.0
# HELP lineside_sink_quarantined_records Records set aside as poisoned.
# TYPE lineside_sink_quarantined_records gauge
lineside_sink_quarantined_records{sink="mes"} 0.0
# HELP lineside_sink_backlog_records Records not acknowledged yet.
# TYPE lineside_sink_backlog_records gauge
lineside_sink_backlog_records{sink="mes",stream="telemetry"} 1.0
lineside_sink_backlog_records{sink="mes",stream="events"} 0.0
# HELP lineside_sink_oldest_unsent_age_seconds Age of the oldest record the sink has not acknowledged.
# TYPE lineside_sink_oldest_unsent_age_seconds gauge
lineside_sink_oldest_unsent_age_seconds{sink="mes",stream="telemetry"} 3.5
# HELP lineside_alarm_active 1 while the alarm is raised, 0 while clear.
# TYPE lineside_alarm_active gauge
lineside_alarm_active{alarm="die_cold",machine="press1",severity="warning"} 1.0
# HELP lineside_alarm_acknowledged 1 while the raised alarm is acknowledged by an operator.
# TYPE lineside_alarm_acknowledged gauge
lineside_alarm_acknowledged{alarm="die_cold",machine="press1",severity="warning"} 1.0
# HELP lineside_alarm_raised_total Times the alarm was raised since start.
# TYPE lineside_alarm_raised_total counter
lineside_alarm_raised_total{alarm="die_cold",machine="press1",severity="warning"} 2.0
"""


def commit_lines() -> str:
    """The store's commit histogram: one `_bucket` line per bound of the writer's buckets."""
    cumulative = [1, 3, *([3] * (len(LATENCY_BUCKETS_S) - 2))]
    lines = [
        f'lineside_store_commit_latency_seconds_bucket{{le="{b:g}"}} {float(n)}'
        for b, n in zip(LATENCY_BUCKETS_S, cumulative, strict=True)
    ]
    lines.append('lineside_store_commit_latency_seconds_bucket{le="+Inf"} 3.0')
    lines.append("lineside_store_commit_latency_seconds_count 3.0")
    lines.append("lineside_store_commit_latency_seconds_sum 0.005")
    return "\n".join(lines)


def test_metrics_render_the_snapshot() -> None:
    text = render_metrics(built(), version="9.9.9").decode()
    assert text == METRICS.replace("{commit}", commit_lines())


def test_a_new_figure_flows_from_its_dataclass_to_all_three_outputs() -> None:
    """`reconnects`, a figure of `SourceStatistics`: set once, shown by every renderer."""
    snapshot = built(connects=8)
    assert status_figures(snapshot)["sources"]["plc"]["reconnects"] == 7
    assert state_figures(snapshot)["sources"][0]["reconnects"] == 7
    families = text_string_to_metric_families(render_metrics(snapshot).decode())
    (sample,) = next(f for f in families if f.name == "lineside_source_reconnects").samples
    assert (sample.labels, sample.value) == ({"source": "plc"}, 7.0)


def test_a_figure_a_connector_adds_reaches_status_json_and_metrics_untouched() -> None:
    """A protocol's own figure, set in `extras` by the source alone, needs no renderer change."""
    snapshot = built()
    assert status_figures(snapshot)["sources"]["plc"]["string_tags"] == 1
    families = text_string_to_metric_families(render_metrics(snapshot).decode())
    (sample,) = next(f for f in families if f.name == "lineside_source_figure").samples
    assert (sample.labels, sample.value) == ({"source": "plc", "figure": "string_tags"}, 1.0)
