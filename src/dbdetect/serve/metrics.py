"""Prometheus metrics of one service instance, in its own registry (two apps in a process never mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    """Requests by status, latency, batch sizes, queue depth, rejections and requests in flight."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("dbdetect_requests", "HTTP requests answered, by status", ["status"], registry=r)
        self.latency = Histogram(
            "dbdetect_request_seconds", "time to answer a detection request", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "dbdetect_batch_size", "images per forward pass", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=r
        )
        self.queue_depth = Gauge("dbdetect_queue_depth", "images waiting for the network", registry=r)
        self.rejections = Counter("dbdetect_rejections", "requests refused, by reason", ["reason"], registry=r)
        self.in_flight = Gauge("dbdetect_in_flight", "detection requests being handled", registry=r)

    def text(self) -> bytes:
        return generate_latest(self.registry)
