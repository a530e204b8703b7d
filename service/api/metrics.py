"""Prometheus metrics. Job counts, durations and cache hits are kept in the job store (Redis in Celery mode), so
the numbers cover every worker process, not just this API process; HTTP metrics are this process's own."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request

from jobs.model import BUCKETS, STATUSES, JobKind
from jobs.store import JobStore

HISTOGRAMS = {
    "job_duration_seconds": ("learngene_job_duration_seconds", "time from a job's start to its end", "kind"),
    "queue_wait_seconds": ("learngene_queue_wait_seconds", "time from acceptance to start", "kind"),
    "fit_steps_per_second": ("learngene_fit_steps_per_second", "scaler-fitting speed per job", None),
}


class JobStoreCollector(Collector):
    def __init__(self, jobs: JobStore):
        self.jobs = jobs

    def collect(self) -> Iterator:
        states = GaugeMetricFamily("learngene_jobs", "jobs by kind and status", labels=["kind", "status"])
        for kind in JobKind:
            counts = self.jobs.counts(kind)
            for status in STATUSES:
                states.add_metric([kind.value, status], counts.get(status, 0))
        yield states

        families: dict[str, HistogramMetricFamily] = {}
        for key, values in sorted(self.jobs.histograms().items()):
            base, _, label = key.partition(":")
            if base not in HISTOGRAMS:
                continue
            name, doc, label_name = HISTOGRAMS[base]
            family = families.setdefault(
                base, HistogramMetricFamily(name, doc, labels=[label_name] if label_name else [])
            )
            buckets = [(f"{b:g}", values.get(f"le_{b:g}", 0.0)) for b in BUCKETS] + [
                ("+Inf", values.get("le_+Inf", 0.0))
            ]
            family.add_metric([label] if label_name else [], buckets, values.get("sum", 0.0))
        yield from families.values()

        counters = self.jobs.counters()
        for name, doc in (
            ("checkpoint_cache_hits", "initializations answered from an identical earlier request"),
            ("template_cache_hits", "template-set loads served from a worker's in-memory cache"),
        ):
            family = CounterMetricFamily(f"learngene_{name}", doc)
            family.add_metric([], counters.get(name, 0))
            yield family


def build_registry(jobs: JobStore) -> tuple[CollectorRegistry, BaseHTTPMiddleware]:
    registry = CollectorRegistry()
    registry.register(JobStoreCollector(jobs))
    requests = Counter("learngene_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("learngene_http_request_seconds", "HTTP latency", ["method", "route"], registry=registry)

    class HttpMetrics(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next):
            start = time.perf_counter()
            response = await call_next(request)
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            requests.labels(request.method, path, str(response.status_code)).inc()
            latency.labels(request.method, path).observe(time.perf_counter() - start)
            return response

    return registry, HttpMetrics
