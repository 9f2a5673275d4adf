"""Prometheus metrics of one daemon (SPEC §10): with `metrics_port` set, http://metrics_host:PORT/metrics.

One endpoint per daemon process, as Prometheus expects of a process with counters of its own: the job
counters and the duration histogram count this daemon's runs (sum them over the daemons of a spool); the
gauges of the spool's folders are the same from every daemon of that spool (take one, or max()). Several
daemons on one host each need their own port (`spoold start --metrics-port N`).

prometheus_client is imported only here, when metrics are on; nothing of it reaches a job child. Class
labels come from the allowlist only (anything else is "other"), never from a job file.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from spoold.config import Config
from spoold.errors import ConfigError
from spoold.paths import SpoolPaths
from spoold.spool.counts import FolderCounts

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from spoold.daemon.loop import Daemon

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'spoold[metrics]'"
# The statuses of SPEC §8 that end a run (or, for `recovered`, stand for one), each an `outcome` label.
OUTCOMES = ("success", "failure", "retrying", "interrupted", "recovered", "cancelled")
# The classic text format, which every Prometheus reads; the client's newer "1.0.0" differs only in allowing
# names that none of ours needs. Not OpenMetrics: there a counter's family is `spoold_jobs`, the gauge's name.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
OTHER_CLASS = "other"  # a run of a class no longer in the allowlist (a reload removed it)
# Jobs run from milliseconds to max_execution_time (an hour, say): the client's default buckets end at 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                    3600.0, float("inf"))


def open_metrics(config: Config, *, key: str = "metrics_port") -> Metrics:
    """Listen on metrics_host:metrics_port, before the daemon joins the spool. ConfigError (exit 2, one line)
    when prometheus-client is not installed or the address cannot be had; `key` names where the port came
    from (the file's key, or --metrics-port)."""
    try:
        import prometheus_client  # noqa: F401  (only to know it is there)
    except ImportError as e:
        raise ConfigError(config.path, key, f"serving metrics needs prometheus-client, which is not installed: "
                                            f"{INSTALL_HINT}") from e
    return Metrics(config, key=key)


class Metrics:
    """The registry, its HTTP endpoint and the event listener that moves the counters."""

    def __init__(self, config: Config, *, key: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside each counter: nothing here reads them
        self.config = config
        self.daemon: Daemon | None = None
        self.registry = CollectorRegistry()
        self.jobs_total = Counter("spoold_jobs", "Runs ended by this daemon, by class and outcome",
                                  ["class", "outcome"], registry=self.registry)
        self.rejected_total = Counter("spoold_jobs_rejected", "Files this daemon moved to rejected/",
                                      registry=self.registry)
        self.duration = Histogram("spoold_job_duration_seconds", "How long this daemon's runs took, by class",
                                  ["class"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.counts = FolderCounts(SpoolPaths(config.spool_dir))
        # Registered without describe(): its `spoold_jobs` gauge shares its stem with the counter above,
        # which the registry's name check would refuse although the text format keeps them apart.
        self.registry.register(_SpoolGauges(self))
        self._label_allowed(config)
        # Bound now, so a port in use stops the start before the spool is joined; served from attach() on, so
        # no scrape sees a daemon still starting (one that comes early waits in the listen queue).
        self.server = _listen(config, self.registry, key=key)
        self.thread: threading.Thread | None = None

    def _label_allowed(self, config: Config) -> None:
        """Every allowed class's series exist from the start, at 0, so a rate() sees the first run."""
        for name in config.allowed_jobs:
            for outcome in OUTCOMES:
                self.jobs_total.labels(name, outcome)
            self.duration.labels(name)

    def attach(self, daemon: Daemon) -> None:
        """Count the daemon's events from now on, and read its workers from it."""
        self.daemon = daemon
        daemon.events.listeners.append(self.on_event)
        self.thread = threading.Thread(target=self.server.serve_forever, name="spoold-metrics", daemon=True)
        self.thread.start()
        log.info("metrics at http://%s/metrics", _shown(self.config.metrics_host, self.server.server_address[1]))

    def class_label(self, name: Any) -> str:
        allowed = (self.daemon.config if self.daemon is not None else self.config).allowed_jobs
        return name if isinstance(name, str) and name in allowed else OTHER_CLASS

    def on_event(self, status: str, fields: dict[str, Any]) -> None:
        """An EventLog listener: called (in the loop's or the committer's thread) after each event line."""
        if status == "rejected":
            self.rejected_total.inc()
            return
        if status not in OUTCOMES:
            return
        label = self.class_label(fields.get("class"))
        self.jobs_total.labels(label, status).inc()
        duration = fields.get("duration_ms")
        if isinstance(duration, int) and not isinstance(duration, bool):
            self.duration.labels(label).observe(duration / 1000)

    def close(self) -> None:
        if self.thread is not None:  # shutdown() waits for serve_forever(), which never ran otherwise
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()


class _SpoolGauges:
    """The gauges, read at each scrape: the spool's folders (cached by mtime), and the daemon's workers."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        counts = self.metrics.counts
        jobs = GaugeMetricFamily("spoold_jobs", "Job files per state folder of the spool (running: every "
                                                "daemon's)", labels=["state"])
        for state, count in counts.counts().items():
            jobs.add_metric([state], count)
        yield jobs
        oldest = counts.oldest_ready()
        age = 0.0 if oldest is None else max(0.0, time.time() - oldest)
        yield GaugeMetricFamily("spoold_oldest_ready_age_seconds",
                                "Seconds the oldest ready job has waited in its folder (0: none is ready)", value=age)
        daemon = self.metrics.daemon
        if daemon is not None:  # always, once it serves
            yield GaugeMetricFamily("spoold_workers", "Jobs this daemon runs at once", value=daemon.config.workers)
            yield GaugeMetricFamily("spoold_workers_busy", "Jobs this daemon is running now",
                                    value=sum(1 for r in list(daemon.children.values()) if not r.child.queued))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: Any = None


class _Handler(BaseHTTPRequestHandler):
    """GET /metrics in the Prometheus text format 0.0.4, whatever the Accept header asks; anything else is
    a 404."""

    server: _Server

    def do_GET(self) -> None:  # noqa: N802  (the name http.server calls)
        from prometheus_client import generate_latest

        if self.path.partition("?")[0] != "/metrics":
            self._answer(404, b"not found: the metrics are at /metrics\n", "text/plain; charset=utf-8")
            return
        try:
            body = generate_latest(self.server.registry)
        except Exception:
            log.exception("metrics: a scrape failed")
            self._answer(500, b"the metrics could not be gathered; see the daemon's log\n", "text/plain")
            return
        self._answer(200, body, TEXT_FORMAT)

    def _answer(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # a scrape every few seconds is no news
        pass


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(config: Config, registry: Any, *, key: str) -> _Server:
    host, port = config.metrics_host, config.metrics_port
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsServer", (_Server,), {"address_family": family})
        server: _Server = server_class((host, port), _Handler)
    except OSError as e:
        raise ConfigError(config.path, key, f"cannot serve metrics on {_shown(host, port)}: "
                                            f"{e.strerror or e}") from e
    server.registry = registry
    return server
