"""Writing finished jobs' last moves (to done/, failed/) off the daemon's loop, with group commit (issue 5).

A durable commit waits on two fsyncs; done in the loop, the next job could not start meanwhile. The
committer thread takes every job that finished while it was busy and commits them together, so they
share one folder fsync (Mover.commit_many). What is promised does not change: a claimed copy is
removed only after its new state is durable, and a crash before that leaves the job to recovery.

The loop hands over a Settled job and gets back a Committed (with the target, or the error) through
two queues, and is woken for it; logging and bookkeeping stay in the loop's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spoold.job import Job
from spoold.outcomes import Settled
from spoold.spool.moves import Mover

log = logging.getLogger(__name__)


@dataclass
class Finished:
    """A job whose run has ended, settled in memory, waiting to be written."""

    job: Job
    claimed: Path
    settled: Settled
    duration_ms: int | None
    now: float


@dataclass
class Committed:
    finished: Finished
    target: Path | None
    error: Exception | None = None


class Committer:
    def __init__(self, mover: Mover, on_committed: Callable[[], None]) -> None:
        self.mover = mover
        self.on_committed = on_committed
        self.inbox: queue.SimpleQueue[Finished | None] = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue[Committed] = queue.SimpleQueue()
        self.in_flight = 0  # handed over and not yet taken back; only the loop's thread changes it
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="committer", daemon=True)
        self.thread.start()

    def submit(self, finished: Finished) -> None:
        self.in_flight += 1
        self.inbox.put(finished)

    def take_committed(self) -> list[Committed]:
        done: list[Committed] = []
        while True:
            try:
                done.append(self.outbox.get_nowait())
            except queue.Empty:
                self.in_flight -= len(done)
                return done

    def stop(self) -> None:
        """After the last submit: let the thread finish what it holds, then end it."""
        if self.thread is not None:
            self.inbox.put(None)
            self.thread.join()
            self.thread = None

    def _run(self) -> None:
        while True:
            batch = [self.inbox.get()]
            while True:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            stopping = None in batch
            jobs = [item for item in batch if item is not None]
            if jobs:
                try:
                    committed = self._commit(jobs)
                except Exception as e:  # never leave the loop waiting on jobs that were handed over
                    log.exception("committer: unexpected error")
                    committed = [Committed(item, None, e) for item in jobs]
                for each in committed:
                    self.outbox.put(each)
                self.on_committed()
            if stopping:
                return

    def _commit(self, batch: list[Finished]) -> list[Committed]:
        if self.mover.stale:
            self.mover.remove_stale()
        results = self.mover.commit_many([(item.job, item.claimed, item.settled.folder) for item in batch])
        return [Committed(item, None, result) if isinstance(result, Exception) else Committed(item, result)
                for item, result in zip(batch, results, strict=True)]
