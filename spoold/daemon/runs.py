"""One run's life cycle, the same for the daemon and for `--now`: begin, launch, settle, commit, log.

Both callers go through these steps in this order, so they cannot drift apart: the run is counted and
stamped in memory (the running file is not rewritten at start), its child is launched and `started`
logged, its outcome is settled into the document, the committer writes the last move, and only once
that move is durable is the run's outcome logged (docs/design.md, L1-L5).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from spoold.config import Config
from spoold.daemon.committer import Finished
from spoold.execution.process import ChildProcess, Launcher, start_child
from spoold.job import Job
from spoold.logs import EventLog
from spoold.outcomes import Settled, begin_run, iso, settle_run
from spoold.spool.node import cancel_marker, cancelled_by


def run_timeout(job: Job, config: Config) -> float:
    """The job's own `timeout_seconds`, never above `max_execution_time`."""
    limit = config.max_execution_time
    return min(float(job.doc.get("timeout_seconds", limit)), limit)


class Runs:
    """The runs of one node (a daemon or a `--now` run): its id, its children's scratch and launcher, its log."""

    def __init__(self, node_id: str, scratch: Path, launcher: Launcher, events: EventLog) -> None:
        self.node_id = node_id
        self.scratch = scratch
        self.launcher = launcher
        self.events = events

    def launch(self, job: Job, config: Config, now: float, on_exit: Callable[[str], None]) -> ChildProcess:
        """Count the run and start its child; OSError if no child would start (the claim is then undone)."""
        begin_run(job, now)
        child = start_child(job, config, self.scratch / job.id, on_exit, launcher=self.launcher,
                            allowed_methods=config.allowed_jobs[job.class_name], timeout=run_timeout(job, config))
        if child.queued:  # it waits for a busy worker: it starts, and is stamped and logged, when taken
            child.on_start = lambda: self.taken(job)
        else:
            self.events.job_event("started", job)
        return child

    def taken(self, job: Job) -> None:
        """A queued job's worker took it: its run starts now."""
        job.doc["started_at"] = iso(time.time())
        self.events.job_event("started", job)

    def settle(self, job: Job, claimed: Path, child: ChildProcess, config: Config, now: float) -> Finished:
        """Once the child has exited: record the run in the document and decide where the job goes. A cancel
        is logged with who asked for it, from its marker in our folder (which then goes)."""
        outcome = child.outcome()
        child.cleanup()
        settled = settle_run(job, outcome, config, node=self.node_id, pid=child.pid, now=now)
        if child.killed_for == "Cancelled":
            settled = replace(settled, by=cancelled_by(claimed.parent, job.id))
            cancel_marker(claimed.parent, job.id).unlink(missing_ok=True)
        return Finished(job, claimed, settled, outcome.duration_ms, now)

    def log(self, job: Job, settled: Settled, duration_ms: int | None) -> None:
        """After the commit: the run's outcome line (a move without a run, such as a promotion, has none)."""
        if settled.log_status:
            self.events.job_event(settled.log_status, job, duration_ms=duration_ms, error=settled.error_type,
                                  detail=settled.detail, by=settled.by)
