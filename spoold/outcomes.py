"""From a run's outcome to the job's next state: the document to write, the folder, the log line."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from spoold.config import Config
from spoold.job import Job, JobStatus
from spoold.paths import READY, Folder, Priority
from spoold.retry import Fail, next_step

OutcomeStatus = Literal["success", "failure", "interrupted", "cancelled"]


@dataclass
class Outcome:
    """How a run ended, as the daemon records it in the job's history."""

    status: OutcomeStatus
    result: Any = None
    error: dict[str, str] | None = None
    error_mro: tuple[str, ...] = ()
    output: str = ""
    returncode: int | None = None
    duration_ms: int = 0


@dataclass(frozen=True)
class Settled:
    """Where the job goes after a run, and the status of its log line."""

    folder: str
    log_status: str
    error_type: str | None = None
    detail: str | None = None
    by: str | None = None  # who caused it, when a person did (a cancel)


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def begin_run(job: Job, now: float) -> None:
    """Count the run in `attempts` and stamp it; done in memory, the file is not rewritten at start."""
    doc = job.doc
    if doc.get("status") in (JobStatus.FAILED, JobStatus.SCHEDULED) and doc.get("failed_runs"):
        doc["failed_runs"] = 0  # moved back by hand from failed/ or scheduled/: a fresh retry budget
    doc["attempts"] = job.attempts + 1
    doc["started_at"] = iso(now)
    doc["status"] = JobStatus.RUNNING.value


def _history(job: Job, outcome: str, *, node: str, pid: int | None, started: str, finished: float,
             duration_ms: int, error_type: str | None) -> None:
    entry: dict[str, Any] = {"attempt": job.attempts, "started_at": started, "finished_at": iso(finished),
                             "duration_ms": duration_ms, "outcome": outcome, "error_type": error_type,
                             "node": node, "pid": pid}
    job.doc.setdefault("history", []).append(entry)


def ready_folder(job: Job, config: Config) -> Priority:
    """The job's own `priority` if it has one, else its class's ([job_priority], default medium)."""
    priority = job.doc.get("priority")
    return Priority(priority if priority in READY else config.priority_of(job.class_name))


def make_ready(job: Job) -> None:
    """A due job leaves its wait: no `run_at` any more, and ready. Its retry budget is kept; only a job
    moved back by hand from scheduled/ or failed/ (its status still says so) gets a fresh one."""
    job.doc.pop("run_at", None)
    job.doc.pop("delay_seconds", None)
    if job.doc.get("status") == JobStatus.SCHEDULED:
        job.doc["status"] = JobStatus.READY.value


def settle_failure(job: Job, config: Config, error: dict[str, str], error_mro: tuple[str, ...], now: float,
                   rng: random.Random | None = None) -> Settled:
    """A failed run: retry now (ready folder), later (scheduled/ with run_at), or fail for good."""
    doc = job.doc
    doc["error"] = error
    failed_runs = int(doc.get("failed_runs", 0)) + 1
    doc["failed_runs"] = failed_runs
    override = doc.get("retry_attempts")
    step = next_step(config, error_mro or (error["type"],), failed_runs=failed_runs,
                     job_retry_attempts=override if isinstance(override, int) else None, rng=rng)
    detail = error.get("traceback") or f"{error['type']}: {error.get('message', '')}"
    if isinstance(step, Fail):
        doc["status"] = JobStatus.FAILED.value
        doc.pop("run_at", None)
        return Settled(Folder.FAILED, "failure", error["type"], detail)
    if step.delay_seconds > 0:
        doc["status"] = JobStatus.SCHEDULED.value
        doc["run_at"] = (datetime.fromtimestamp(now, UTC) + timedelta(seconds=step.delay_seconds)).isoformat()
        return Settled(Folder.SCHEDULED, "retrying", error["type"], detail)
    doc["status"] = JobStatus.READY.value
    return Settled(ready_folder(job, config), "retrying", error["type"], detail)


def settle_run(job: Job, outcome: Outcome, config: Config, *, node: str, pid: int | None, now: float) -> Settled:
    """Record one finished run in the document and decide where it goes next."""
    doc = job.doc
    started = str(doc.get("started_at", iso(now)))
    doc["finished_at"] = iso(now)
    if outcome.output:
        doc["output"] = outcome.output
    else:
        doc.pop("output", None)
    if outcome.status == "success":
        _history(job, "success", node=node, pid=pid, started=started, finished=now,
                 duration_ms=outcome.duration_ms, error_type=None)
        doc["result"] = outcome.result
        doc["status"] = JobStatus.DONE.value
        return Settled(Folder.DONE, "success")
    if outcome.status == "interrupted":
        _history(job, "interrupted", node=node, pid=pid, started=started, finished=now,
                 duration_ms=outcome.duration_ms, error_type=None)
        doc["status"] = JobStatus.READY.value
        return Settled(ready_folder(job, config), "interrupted")
    error = outcome.error or {"type": "Error", "message": "", "traceback": ""}
    if outcome.status == "cancelled":  # final: no retry (SPEC §3)
        _history(job, "failure", node=node, pid=pid, started=started, finished=now,
                 duration_ms=outcome.duration_ms, error_type="Cancelled")
        doc["error"] = error
        doc["status"] = JobStatus.FAILED.value
        return Settled(Folder.FAILED, "cancelled", "Cancelled")
    _history(job, "failure", node=node, pid=pid, started=started, finished=now,
             duration_ms=outcome.duration_ms, error_type=error["type"])
    return settle_failure(job, config, error, outcome.error_mro, now)


def settle_orphan(job: Job, config: Config, *, node: str, started: float, now: float) -> Settled:
    """A job whose daemon died while it ran: that run counts, as a failure of type Orphaned."""
    begin_run(job, started)
    doc = job.doc
    error = {"type": "Orphaned", "message": f"its daemon {node} died while it ran", "traceback": ""}
    _history(job, "failure", node=node, pid=None, started=str(doc["started_at"]), finished=now,
             duration_ms=int(max(0.0, now - started) * 1000), error_type="Orphaned")
    doc["finished_at"] = iso(now)
    return settle_failure(job, config, error, ("Orphaned",), now)
