"""Prometheus metrics of one server (prometheus_client, on a registry of the app's own so
that two apps in one process, as in tests, do not share counters)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from tuneforge.server.models import ServedModels

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    """Requests, tokens, queue depth and latencies."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneforge_requests", "HTTP requests answered.", ["route", "status"],
            registry=self.registry)
        self.prompt_tokens = Counter(
            "tuneforge_prompt_tokens", "Prompt tokens processed.", ["model"],
            registry=self.registry)
        self.generation_tokens = Counter(
            "tuneforge_generation_tokens", "Tokens generated.", ["model"], registry=self.registry)
        self.queue_depth = Gauge(
            "tuneforge_queue_depth", "Requests waiting for a batch slot.", ["model"],
            registry=self.registry)
        self.running = Gauge(
            "tuneforge_running_requests", "Sequences in the running batch.", ["model"],
            registry=self.registry)
        self.latency = Histogram(
            "tuneforge_request_latency_seconds", "Time from request to its last byte.",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.first_token = Histogram(
            "tuneforge_time_to_first_token_seconds", "Time from request to the first token.",
            buckets=LATENCY_BUCKETS, registry=self.registry)

    def exposition(self, models: ServedModels) -> bytes:
        """The Prometheus text format, with the queue gauges read now."""
        for served in models.engines():
            stats = getattr(served.engine, "stats", None)
            if stats is not None:
                waiting, running = stats()
                self.queue_depth.labels(served.name).set(waiting)
                self.running.labels(served.name).set(running)
        return generate_latest(self.registry)
