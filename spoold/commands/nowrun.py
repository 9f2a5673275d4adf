"""`--now`: run one job here, in a child, with the daemon's allowlist, time limit, retries and logs.

The job's file goes through the spool like any other: it waits in this run's own locked running/
folder and ends in done/ or failed/. It goes through the daemon's own run life cycle (daemon/runs.py)
and last move (daemon/committer.py), so `--now` logs, retries and commits exactly as a daemon does;
between attempts its copy in running/ is rewritten, so the history on disk is never behind. SIGTERM
or SIGINT stops the child and puts the job back in its ready folder (or scheduled/, while it waits out
a retry's delay) for a daemon, as a daemon's shutdown does.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from spoold.config import Config
from spoold.daemon.committer import RETRY_SECONDS, Committer, Finished
from spoold.daemon.runs import Runs
from spoold.errors import EXIT_JOB_FAILED, EXIT_OK
from spoold.execution.spawn import SpawnLauncher
from spoold.job import Job
from spoold.logs import EventLog
from spoold.outcomes import Settled, make_ready, ready_folder
from spoold.paths import Folder, SpoolPaths
from spoold.spool.moves import Mover
from spoold.spool.node import NOW_KIND, Node, cancel_marker, cancel_requests, open_node, scratch_folder
from spoold.spool.scheduled import due_time

CANCEL_POLL_SECONDS = 0.2


class Stop:
    """SIGTERM/SIGINT as a flag the run looks at (handlers only record the signal)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum
        self.count += 1
        self.event.set()

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a command ended by a signal


@contextlib.contextmanager
def _signals_to(stop: Stop) -> Iterator[None]:
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class NowRun:
    """One `--now` job, from its claim in our own node folder to its last move."""

    def __init__(self, config: Config, job: Job, node: Node, stop: Stop) -> None:
        self.config, self.job, self.node, self.stop = config, job, node, stop
        paths = SpoolPaths(config.spool_dir)
        self.mover = Mover(paths, durable=config.durability == "fsync", may_act=node.heartbeat.ok)
        self.events = EventLog(config.log_dir, log_format=config.log_format)
        self.scratch = scratch_folder(node.id)
        # One job: a fresh interpreter is quicker than starting a fork server for it.
        self.runs = Runs(node.id, self.scratch, SpawnLauncher(config), self.events)
        self.committer = Committer(self.mover, self._written, lambda: None)

    def _written(self, item: Finished, target: Path) -> None:
        self.runs.log(item.job, item.settled, item.duration_ms)

    def run(self) -> int:
        self.scratch.mkdir(parents=True, exist_ok=True)
        claimed = self.mover.write(self.job, f"{Folder.RUNNING}/{self.node.id}")
        try:
            return self._attempts(claimed)
        finally:
            self.events.close()
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _attempts(self, claimed: Path) -> int:
        job = self.job
        while True:
            if self.stop.event.wait(max(0.0, due_time(job.doc, time.time()) - time.time())):
                folder: str = Folder.SCHEDULED
                if due_time(job.doc, time.time()) <= time.time():
                    make_ready(job)  # its wait was over: ready, as a daemon's promotion leaves it
                    folder = ready_folder(job, self.config)
                return self._last_move(Finished(job, claimed, Settled(folder, ""), None, time.time()))
            make_ready(job)
            finished = self._run_once(claimed)
            if finished.settled.folder in (Folder.DONE, Folder.FAILED) or finished.settled.log_status == "interrupted":
                return self._last_move(finished)
            self.mover.rewrite_claim(job, claimed)  # a retry: it runs again here, after its delay
            self.runs.log(job, finished.settled, finished.duration_ms)

    def _run_once(self, claimed: Path) -> Finished:
        """One run in a child, killed past its limit, when `spoold cancel` leaves a marker, or on a signal."""
        done = threading.Event()
        child = self.runs.launch(self.job, self.config, time.time(), lambda _id: done.set())
        while not done.wait(max(0.0, min(CANCEL_POLL_SECONDS, child.deadline - time.monotonic()))):
            if self.stop.event.is_set():
                child.kill("Interrupted")
            elif time.monotonic() >= child.deadline:
                child.kill("Timeout")
            elif self.job.id in cancel_requests(self.node.folder):
                child.kill("Cancelled")
        finished = self.runs.settle(self.job, claimed, child, self.config, time.time())
        cancel_marker(self.node.folder, self.job.id).unlink(missing_ok=True)  # one that came too late
        return finished

    def _last_move(self, finished: Finished) -> int:
        """Commit as the daemon does; a spool that refuses it is tried every second (a second signal gives up:
        the job stays in our folder, which a daemon recovers once our lock is gone)."""
        self.committer.write(finished, self.config)
        while self.committer.pending and self.stop.count < 2:
            time.sleep(RETRY_SECONDS)
            self.committer.retry_due(time.time(), self.config)
        if self.stop.event.is_set():
            return self.stop.exit_code
        return EXIT_OK if finished.settled.folder == Folder.DONE else EXIT_JOB_FAILED


def run_now(config: Config, job: Job) -> tuple[int, Job]:
    """Run `job` to its end; returns (0 done, 1 failed, or 128 + the signal that stopped it; the final document)."""
    paths = SpoolPaths(config.spool_dir)
    paths.create()
    node = open_node(paths, workers=1, kind=NOW_KIND, heartbeat_seconds=config.heartbeat_seconds,
                     lease_seconds=config.lease_seconds)
    stop = Stop()
    try:
        with _signals_to(stop):
            code = NowRun(config, job, node, stop).run()
    finally:
        node.close()
    return code, job
