"""``GET /metrics``: the numbers of ``referralnet status`` in Prometheus text format.

A collector built from one ``SystemStatus`` snapshot, so a scrape and the CLI always
agree; nothing is counted inside the API process itself.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from referralnet.ops.status import SystemStatus


class StatusCollector(Collector):
    """Gauges for one status snapshot."""

    def __init__(self, status: SystemStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.status
        up = GaugeMetricFamily(
            "referralnet_up", "Whether a dependency answers", labels=["component"]
        )
        up.add_metric(["database"], 0 if s.database_error else 1)
        up.add_metric(["broker"], 0 if s.broker_error else 1)
        yield up
        healthy = GaugeMetricFamily("referralnet_healthy", "1 when status finds no problem")
        healthy.add_metric([], 1 if s.healthy else 0)
        yield healthy
        events = GaugeMetricFamily(
            "referralnet_store_events", "Events in a service's store", labels=["service"]
        )
        backlog = GaugeMetricFamily(
            "referralnet_outbox_backlog", "Stored events not yet on the bus", labels=["service"]
        )
        oldest = GaugeMetricFamily(
            "referralnet_outbox_oldest_seconds",
            "Age of the oldest unpublished event (0 when none)",
            labels=["service"],
        )
        last = GaugeMetricFamily(
            "referralnet_store_last_event_timestamp_seconds",
            "When the store last recorded an event",
            labels=["service"],
        )
        for store in s.stores:
            events.add_metric([store.service], store.events)
            backlog.add_metric([store.service], store.outbox_backlog)
            oldest.add_metric([store.service], store.oldest_unpublished_seconds or 0.0)
            if store.last_event_at is not None:
                last.add_metric([store.service], store.last_event_at.timestamp())
        yield from (events, backlog, oldest, last)
        labels = ["consumer", "kind", "topic"]
        lag = GaugeMetricFamily(
            "referralnet_consumer_lag", "High watermark minus position", labels=labels
        )
        applied = GaugeMetricFamily(
            "referralnet_consumer_last_applied_timestamp_seconds",
            "When the consumer last stored a position",
            labels=labels,
        )
        dead = GaugeMetricFamily(
            "referralnet_consumer_dead_letters", "Events the consumer dead-lettered", labels=labels
        )
        for c in s.consumers:
            key = [c.consumer, c.kind, c.topic]
            lag.add_metric(key, c.lag)
            dead.add_metric(key, c.dead_letters)
            if c.last_applied_at is not None:
                applied.add_metric(key, c.last_applied_at.timestamp())
        yield from (lag, applied, dead)
        total = GaugeMetricFamily(
            "referralnet_dead_letters", "Dead letters not yet re-driven or discarded"
        )
        total.add_metric([], s.dead_letters)
        yield total
        restarts = GaugeMetricFamily(
            "referralnet_worker_restarts",
            "Restarts of a worker by the supervisor in the status window",
            labels=["worker"],
        )
        for worker, n in sorted(s.restarts.items()):
            restarts.add_metric([worker], n)
        yield restarts


def exposition(status: SystemStatus) -> bytes:
    """The Prometheus text exposition of ``status``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    return generate_latest(registry)
