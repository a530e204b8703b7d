"""Prometheus metrics. Job counts, durations and cache hits are kept in the job store (Redis in Celery mode), so
the numbers cover every worker process, not just this API process; HTTP and process metrics (`process_*`,
`python_*`) are this process's own."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator, Sequence

import fastapi.routing
from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.model import BUCKETS, STATUSES, JobKind
from jobs.store import JobStore

HISTOGRAMS = {
    "job_duration_seconds": ("learngene_job_duration_seconds", "time from a job's start to its end", "kind"),
    "queue_wait_seconds": ("learngene_queue_wait_seconds", "time from acceptance to start", "kind"),
    "fit_steps_per_second": ("learngene_fit_steps_per_second", "scaler-fitting speed per job", None),
    "phase_seconds": ("learngene_phase_seconds", "time a job spent in one phase (kind.phase)", "job_phase"),
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
        for key, values in sorted(self.jobs.metrics.histograms().items()):
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

        counters = self.jobs.metrics.counters()
        for name, doc in (
            ("checkpoint_cache_hits", "initializations answered from an identical earlier request"),
            ("template_cache_hits", "template-set loads served from a worker's in-memory cache"),
        ):
            family = CounterMetricFamily(f"learngene_{name}", doc)
            family.add_metric([], counters.get(name, 0))
            yield family


UNMATCHED = "unmatched"  # the one route label of every path no route serves: no label per scanned URL
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other is "other"


def route_templates(routes: Sequence[BaseRoute]) -> list[tuple[re.Pattern, str]]:
    """Each route's full path template (its routers' prefixes included) with the pattern it serves. FastAPI includes
    routers lazily: the route a request matched (`scope["route"]`) is the router's own, whose path lacks the prefixes
    it was included under (`/{job_id}` for both `/v1/initializations/{job_id}` and `/v1/admin/cards/{job_id}`), so
    the templates are read from the application's effective routes instead."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI before lazy inclusion: routes are flat
    table = []
    for route in iterate(routes) if iterate is not None else routes:
        path = getattr(route, "path", None)
        if path is None:
            continue
        mount = isinstance(getattr(route, "original_route", route), Mount)
        regex, template, _ = compile_path(path.rstrip("/") + "/{path:path}" if mount else path)
        table.append((regex, template))
    return table


class HttpMetrics:
    """Counts and times every answer (pure ASGI, wrapped around the whole application: Starlette's 500s and the
    body limit's 413s included), labelled by method, route template and status."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram):
        self.app, self.requests, self.latency = app, requests, latency
        self._routes: list[tuple[re.Pattern, str]] | None = None

    def route(self, scope: Scope) -> str:
        if self._routes is None:  # built on the first request: every route exists by then
            self._routes = route_templates(scope["app"].routes)
        path, root = scope["path"], scope.get("root_path", "")
        path = path[len(root) :] if root and path.startswith(root) else path
        return next((template for regex, template in self._routes if regex.match(path)), UNMATCHED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500  # an exception before any answer is a 500 to the client

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = self.route(scope)
            self.requests.labels(method, route, str(status)).inc()
            self.latency.labels(method, route).observe(time.perf_counter() - start)


def build_registry(jobs: JobStore) -> tuple[CollectorRegistry, functools.partial[HttpMetrics]]:
    """The registry /metrics serves, and the HTTP middleware that feeds it (wrap the application with it)."""
    registry = CollectorRegistry()
    registry.register(JobStoreCollector(jobs))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds, ...
    PlatformCollector(registry=registry)  # python_info
    GCCollector(registry=registry)  # python_gc_*
    requests = Counter("learngene_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("learngene_http_request_seconds", "HTTP latency", ["method", "route"], registry=registry)
    return registry, functools.partial(HttpMetrics, requests=requests, latency=latency)
