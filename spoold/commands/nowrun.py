"""`--now`: run one job here, in a child, with the daemon's allowlist, time limit, retries and logs.

The job's file goes through the spool like any other: it waits in this run's own locked
running/ folder and ends in done/ or failed/. Interrupted, it is put back for a daemon to run.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from spoold.config import Config
from spoold.execution.process import ChildProcess, start_child
from spoold.execution.spawn import SpawnLauncher
from spoold.job import Job
from spoold.logs import EventLog
from spoold.outcomes import Outcome, begin_run, ready_folder, settle_run
from spoold.paths import JOB_SUFFIX, SpoolPaths
from spoold.spool.chain import hand_on_chain
from spoold.spool.moves import Mover
from spoold.spool.node import NOW_KIND, cancel_marker, cancel_requests, open_node, scratch_folder
from spoold.spool.scheduled import due_time

CANCEL_POLL_SECONDS = 0.2


def _run_once(job: Job, config: Config, scratch_root: Path, folder: Path) -> tuple[Outcome, ChildProcess]:
    """One run in a child, killed past its limit or when `spoold cancel` leaves a marker in `folder`."""
    done = threading.Event()
    limit = config.max_execution_time
    timeout = min(float(job.doc.get("timeout_seconds", limit)), limit)
    # One job: a fresh interpreter is quicker than starting a fork server for it.
    child = start_child(job, config, scratch_root / f"{job.id}-{job.attempts}", lambda _id: done.set(),
                        allowed_methods=config.allowed_jobs[job.class_name], timeout=timeout,
                        launcher=SpawnLauncher(config))
    try:
        while not done.wait(max(0.0, min(CANCEL_POLL_SECONDS, child.deadline - time.monotonic()))):
            if time.monotonic() >= child.deadline:
                child.kill("Timeout")
            elif job.id in cancel_requests(folder):
                child.kill("Cancelled")
        cancel_marker(folder, job.id).unlink(missing_ok=True)
    except BaseException:
        child.kill("Interrupted")
        done.wait()
        raise
    outcome = child.outcome()
    child.cleanup()
    return outcome, child


def run_now(config: Config, job: Job) -> tuple[int, Job]:
    """Run `job` to its end; returns (0 done | 1 failed, the final document)."""
    paths = SpoolPaths(config.spool_dir)
    paths.create()
    mover, events = Mover(paths, durable=config.durability == "fsync"), EventLog(config.log_dir)
    node = open_node(paths, workers=1, kind=NOW_KIND)
    claimed = node.folder / (job.id + JOB_SUFFIX)
    mover.write(job, f"running/{node.id}")
    scratch = scratch_folder(node.id)
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        while True:
            wait = due_time(job.doc, time.time()) - time.time()
            if wait > 0:
                time.sleep(wait)
            job.doc.pop("run_at", None)
            job.doc.pop("delay_seconds", None)
            begin_run(job, time.time())
            events.event("started", job=job.id, class_=job.class_name, method=job.method, attempt=job.attempts)
            outcome, child = _run_once(job, config, scratch, node.folder)
            now = time.time()
            settled = settle_run(job, outcome, config, node=node.id, pid=child.pid, now=now)
            events.event(settled.log_status, job=job.id, class_=job.class_name, method=job.method,
                         attempt=job.attempts, duration_ms=outcome.duration_ms, error=settled.error_type,
                         detail=settled.detail)
            if settled.folder in ("done", "failed"):
                if settled.folder == "done" and job.chain:
                    hand_on_chain(mover, config, job, now)
                mover.commit(job, claimed, settled.folder)
                return (0 if settled.folder == "done" else 1), job
    except BaseException:
        if claimed.exists():  # interrupted: leave it ready for a daemon, never lost
            job.doc["status"] = "ready"
            mover.commit(job, claimed, ready_folder(job, config))
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        node.close()
