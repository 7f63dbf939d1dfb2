"""`/metrics`: the agent's figures in the Prometheus text format, rendered from its snapshot.

No figure is copied into a prometheus-client Counter as it happens: the hot loop already counts
everything (agent/poller.py, the sources, the writer, the forwarders), the runtime gathers those
counts into an `AgentSnapshot` (agent/snapshot.py) and `render_metrics` writes one snapshot as
metric families, a pure function. The page's `StateBuilder` hands it the snapshot with the
store's own figures (depth, bytes, backlog) and the verdicts, at most a second old.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agent import __version__
from agent.histogram import HistogramSnapshot
from agent.snapshot import AgentSnapshot, StoreFigures
from agent.web.state import finite, inspections_view

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_histogram(
    family: HistogramMetricFamily, labels: list[str], histogram: HistogramSnapshot
) -> None:
    """One labelled histogram: cumulative `_bucket` lines, `_sum` and `_count`."""
    buckets = [(le, float(n)) for le, n in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.sum)


class SnapshotCollector(Collector):
    """Every counter and gauge of one agent snapshot, as metric families."""

    def __init__(self, snapshot: AgentSnapshot, version: str = __version__) -> None:
        self.snapshot = snapshot
        self.version = version

    def collect(self) -> Iterator[Metric]:
        yield from self._agent()
        yield from self._sources()
        yield from self._store(self.snapshot.store)
        yield from self._sinks(self.snapshot.store)
        yield from self._alarms()
        yield from self._inspections()

    def _agent(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        info = InfoMetricFamily("lineside", "The agent and its version.")
        info.add_metric([], {"agent_id": snapshot.agent_id, "version": self.version})
        yield info
        yield GaugeMetricFamily("lineside_tags", "Tags in the config.", value=snapshot.tags)
        yield CounterMetricFamily(
            "lineside_readings", "Readings polled (every sample, stored or not).", snapshot.samples
        )

    def _sources(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "lineside_source_up", "1 when the link is connected.", labels=["source"]
        )
        polls = CounterMetricFamily(
            "lineside_source_polls", "Polls that worked.", labels=["source"]
        )
        requests = CounterMetricFamily(
            "lineside_source_requests", "Requests sent to the device.", labels=["source"]
        )
        reconnects = CounterMetricFamily(
            "lineside_source_reconnects",
            "Connections made again after the first.",
            labels=["source"],
        )
        errors = CounterMetricFamily(
            "lineside_source_errors",
            "Failed requests and links, by kind.",
            labels=["source", "kind"],
        )
        overruns = CounterMetricFamily(
            "lineside_source_overruns",
            "Poll ticks skipped because the previous poll was still running.",
            labels=["source", "group"],
        )
        last_good = GaugeMetricFamily(
            "lineside_source_last_good_timestamp_seconds",
            "Wall-clock time of the last poll with a good reading (Unix seconds).",
            labels=["source"],
        )
        bad_tags = GaugeMetricFamily(
            "lineside_source_bad_tags",
            "Tags reading bad now, by reason (Modbus exception, timeout, link error...).",
            labels=["source", "reason"],
        )
        latency = HistogramMetricFamily(
            "lineside_source_request_latency_seconds",
            "Request round trip of the requests that were answered, since start.",
            labels=["source"],
        )
        recent = GaugeMetricFamily(
            "lineside_source_request_latency_recent_seconds",
            "Request round trip, quantile of the recent requests (Modbus).",
            labels=["source", "quantile"],
        )
        lateness = GaugeMetricFamily(
            "lineside_poll_lateness_seconds",
            "How late poll ticks start against their grid, quantile since start.",
            labels=["source", "group", "quantile"],
        )
        # A protocol's own figures (`SourceStatistics.extras`: isolated units, PDU size,
        # notifications...) by name, so a figure a connector adds reaches /metrics untouched.
        own = GaugeMetricFamily(
            "lineside_source_figure",
            "A figure only this kind of source keeps, by name (see its connector's README).",
            labels=["source", "figure"],
        )
        for source in self.snapshot.sources:
            name, link, stats = source.name, source.link, source.statistics
            for figure, value in sorted(stats.extras.items()):
                number = finite(float(value))
                if number is not None:
                    own.add_metric([name, figure], number)
            up.add_metric([name], 1.0 if link.state == "connected" else 0.0)
            polls.add_metric([name], link.polls)
            requests.add_metric([name], stats.requests)
            reconnects.add_metric([name], stats.reconnects)
            for kind, count in source.errors().items():
                errors.add_metric([name, kind], count)
            if link.last_good_ns:
                last_good.add_metric([name], link.last_good_ns / 1e9)
            for reason, tags in sorted(source.bad_reasons.items()):
                bad_tags.add_metric([name, reason], tags)
            if stats.latency is not None:
                add_histogram(latency, [name], stats.latency)
            for quantile, value in (("0.5", stats.latency_p50_s), ("0.99", stats.latency_p99_s)):
                seconds = finite(value)
                if seconds is not None:
                    recent.add_metric([name, quantile], seconds)
            for group, ticker in source.groups.items():
                overruns.add_metric([name, group], ticker.overruns)
                for quantile, late in (("0.5", ticker.lateness_p50), ("0.99", ticker.lateness_p99)):
                    if late is not None:
                        lateness.add_metric([name, group, quantile], late)
        yield from (up, polls, requests, reconnects, errors, overruns, last_good, bad_tags)
        yield from (latency, recent, lateness, own)

    def _store(self, store: StoreFigures | None) -> Iterator[Metric]:
        writer = self.snapshot.writer
        if store is not None:
            depth = GaugeMetricFamily(
                "lineside_store_depth_records", "Records in the store.", labels=["stream"]
            )
            for stream, records in store.depth.items():
                depth.add_metric([stream], records)
            yield depth
            yield GaugeMetricFamily(
                "lineside_store_bytes", "Store size on disk (database and WAL).", value=store.bytes
            )
        yield CounterMetricFamily(
            "lineside_store_readings_written", "Readings committed.", writer.readings_written
        )
        yield CounterMetricFamily(
            "lineside_store_dropped_readings",
            "Telemetry readings dropped by the store's bounds before every sink had them.",
            writer.dropped_readings,
        )
        yield CounterMetricFamily(
            "lineside_store_commit_errors", "Commits that failed (retried).", writer.errors
        )
        yield GaugeMetricFamily(
            "lineside_store_full", "1 while the store is full and events wait.", writer.store_full
        )
        yield GaugeMetricFamily(
            "lineside_store_pending_readings",
            "Readings handed to the writer, not committed yet.",
            writer.pending_readings,
        )
        commit = HistogramMetricFamily(
            "lineside_store_commit_latency_seconds", "Time one store transaction took."
        )
        add_histogram(commit, [], writer.commit_latency)
        yield commit

    def _sinks(self, store: StoreFigures | None) -> Iterator[Metric]:
        up = GaugeMetricFamily("lineside_sink_up", "1 when the sink is connected.", labels=["sink"])
        sent = CounterMetricFamily(
            "lineside_sink_sent_records", "Records acknowledged.", labels=["sink", "stream"]
        )
        failures = CounterMetricFamily(
            "lineside_sink_failures", "Sends that failed.", labels=["sink"]
        )
        dropped = CounterMetricFamily(
            "lineside_sink_dropped_records",
            "Telemetry records the store's bounds dropped before this sink acknowledged them.",
            labels=["sink"],
        )
        quarantined = GaugeMetricFamily(
            "lineside_sink_quarantined_records", "Records set aside as poisoned.", labels=["sink"]
        )
        backlog = GaugeMetricFamily(
            "lineside_sink_backlog_records",
            "Records not acknowledged yet.",
            labels=["sink", "stream"],
        )
        age = GaugeMetricFamily(
            "lineside_sink_oldest_unsent_age_seconds",
            "Age of the oldest record the sink has not acknowledged.",
            labels=["sink", "stream"],
        )
        for sink in self.snapshot.sinks:
            name, lanes = sink.name, sink.forward
            up.add_metric([name], 1.0 if lanes.state == "connected" else 0.0)
            for stream, count in lanes.sent.items():
                sent.add_metric([name, stream], count)
            failures.add_metric([name], lanes.failures)
            dropped.add_metric([name], sink.dropped)
            if store is None:
                continue
            quarantined.add_metric([name], store.quarantined.get(name, 0))
            for stream, records in store.backlog.get(name, {}).items():
                backlog.add_metric([name, stream], records)
            for stream, seconds in store.oldest_unsent_age_s.get(name, {}).items():
                if seconds is not None:
                    age.add_metric([name, stream], seconds)
        yield from (up, sent, failures, dropped, quarantined, backlog, age)

    def _alarms(self) -> Iterator[Metric]:
        alarms = self.snapshot.alarms
        if not alarms:
            return
        labels = ["alarm", "machine", "severity"]
        active = GaugeMetricFamily(
            "lineside_alarm_active", "1 while the alarm is raised, 0 while clear.", labels=labels
        )
        acknowledged = GaugeMetricFamily(
            "lineside_alarm_acknowledged",
            "1 while the raised alarm is acknowledged by an operator.",
            labels=labels,
        )
        raised = CounterMetricFamily(
            "lineside_alarm_raised", "Times the alarm was raised since start.", labels=labels
        )
        for alarm in alarms:
            values = [alarm.name, alarm.machine, alarm.severity]
            active.add_metric(values, 1.0 if alarm.active else 0.0)
            acknowledged.add_metric(values, 1.0 if alarm.active and alarm.acknowledged else 0.0)
            raised.add_metric(values, alarm.raised)
        yield from (active, acknowledged, raised)

    def _inspections(self) -> Iterator[Metric]:
        verdicts = self.snapshot.verdicts
        if verdicts is None or not self.snapshot.inspections:
            return
        latency = HistogramMetricFamily(
            "lineside_inspection_latency_seconds",
            "Frame read to verdict, every verdict since start.",
            labels=["inspection"],
        )
        for name, histogram in sorted(verdicts.latency.items()):
            add_histogram(latency, [name], histogram)
        counted = CounterMetricFamily(
            "lineside_inspection_verdicts",
            "Verdicts since start, by kind (OK, NotOK, NotDecidable).",
            labels=["inspection", "verdict"],
        )
        for (name, kind), n in sorted(verdicts.counts.items()):
            counted.add_metric([name, kind], n)
        latest = GaugeMetricFamily(
            "lineside_inspection_verdict",
            "1 for the latest verdict of each inspection.",
            labels=["inspection", "verdict"],
        )
        for row in inspections_view(self.snapshot.inspection_figures())["rows"]:
            if row.get("verdict") is not None:
                latest.add_metric([str(row.get("inspection") or "?"), str(row["verdict"])], 1.0)
        yield from (latency, counted, latest)


def render_metrics(snapshot: AgentSnapshot, version: str = __version__) -> bytes:
    """The snapshot in the Prometheus text format (pure): a registry of its own, never the
    process-wide default, holding one collector of this snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, version))
    return generate_latest(registry)
