"""A job's last move after a run: its commit, group commit, and the retry of a commit the spool refused.

A durable commit waits on two fsyncs; done in the loop, the next job could not start meanwhile. So,
with `durability = "fsync"`, a run that ends in done/ or failed/ (and hands no chain on) is committed
by the committer thread, which takes every job that finished while it was busy and commits them
together: they share one folder fsync (Mover.commit_many). With "fast" a commit is a few renames,
cheaper than the hand-off to a thread, so it is written at once. A move that leads to another event
of the same job (a retry, a chain's next step) is written at once in the caller's thread, in order,
so its log line always comes first.
What is promised does not change: a claimed copy is removed only after its new state is durable, and
a crash before that leaves the job to recovery (docs/design.md, P7).

A spool that cannot be written (disk full, I/O error) is never the job's failure: the job waits in
memory, its claimed file in running/, and is written again every RETRY_SECONDS; meanwhile the daemon
claims nothing new (`refused_until`). Every successful commit is reported to `on_written` in the
caller's thread, which logs it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spoold.config import Config
from spoold.errors import Fenced, LostClaim
from spoold.job import Job
from spoold.outcomes import Settled
from spoold.paths import Folder
from spoold.spool.chain import hand_on_chain
from spoold.spool.moves import Mover

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0


@dataclass
class Finished:
    """A job whose run has ended (or that moves on without one), settled in memory, waiting to be written."""

    job: Job
    claimed: Path
    settled: Settled
    duration_ms: int | None
    now: float
    retry_at: float = 0.0  # when a commit the spool refused is tried again


@dataclass
class Committed:
    finished: Finished
    target: Path | None
    error: Exception | None = None


class Committer:
    def __init__(self, mover: Mover, on_written: Callable[[Finished, Path], None], wake: Callable[[], None]) -> None:
        self.mover = mover  # the loop's Mover; the thread has its own (its stale list is its own)
        self.thread_mover = Mover(mover.paths, durable=mover.durable, may_act=mover.may_act, claims=mover.claims,
                                  reaper=mover.reaper, blanks=mover.blanks)
        self.on_written = on_written
        self.wake = wake
        self.inbox: queue.SimpleQueue[Finished | None] = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue[Committed] = queue.SimpleQueue()
        self.in_flight = 0  # handed to the thread and not yet taken back; only the caller's thread changes it
        self.pending: list[Finished] = []
        self.refused_until = 0.0
        self.thread: threading.Thread | None = None

    def set_durable(self, durable: bool) -> None:
        self.mover.durable = self.thread_mover.durable = durable

    @property
    def busy(self) -> bool:
        """Some job's last move is not written yet."""
        return bool(self.in_flight or self.pending)

    def finish(self, item: Finished, config: Config) -> None:
        """The last move of a run: to the thread when nothing follows it and it waits on fsyncs, else
        written now (with `durability = "fast"` a commit is a few renames: the hand-off would cost more)."""
        if (item.settled.folder in (Folder.DONE, Folder.FAILED) and not item.job.chain and self.thread is not None
                and self.mover.durable):
            self.in_flight += 1
            self.inbox.put(item)
        else:
            self.write(item, config)

    def write(self, item: Finished, config: Config) -> None:
        """Commit now (handing a chain on first: a crash then re-runs the parent, never loses the step)."""
        job = item.job
        try:
            if not self.mover.may_act():  # fenced: not even the chain's next step (docs/design.md, H4)
                raise Fenced(f"job={job.id}: our lease may have ended; not writing it back")
            if item.settled.folder == Folder.DONE and job.chain:
                hand_on_chain(self.mover, config, job, item.now)
            target = self.mover.commit(job, item.claimed, item.settled.folder)
        except LostClaim as e:
            log.warning("%s", e)
            return
        except OSError as e:
            self.retry_later(item, e)
            return
        self.on_written(item, target)

    def retry_later(self, item: Finished, error: Exception | None) -> None:
        log.error("job=%s cannot write the spool (%s); retrying in %gs", item.job.id, error, RETRY_SECONDS)
        item.retry_at = item.now + RETRY_SECONDS
        self.refused_until = item.retry_at  # no new work while results cannot be kept
        self.pending.append(item)

    def collect(self, now: float) -> None:
        """Take what the thread committed; a refused commit waits for `retry_due`."""
        for done in self._take_committed():
            if isinstance(done.error, LostClaim):
                log.warning("%s", done.error)
            elif done.error is not None or done.target is None:
                done.finished.now = now
                self.retry_later(done.finished, done.error)
            else:
                self.on_written(done.finished, done.target)

    def retry_due(self, now: float, config: Config) -> None:
        if self.mover.has_stale:
            self.mover.remove_stale()
        due = [item for item in self.pending if item.retry_at <= now]
        self.pending = [item for item in self.pending if item.retry_at > now]
        for item in due:
            item.now = now
            self.write(item, config)

    def next_retry(self) -> float | None:
        return min((item.retry_at for item in self.pending), default=None)

    # -- the thread --------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="committer", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """After the last finish(): let the thread write what it holds, then end it."""
        if self.thread is not None:
            self.inbox.put(None)
            self.thread.join()
            self.thread = None

    def _take_committed(self) -> list[Committed]:
        done: list[Committed] = []
        while True:
            try:
                done.append(self.outbox.get_nowait())
            except queue.Empty:
                self.in_flight -= len(done)
                return done

    def _run(self) -> None:
        while True:
            batch = [self.inbox.get()]
            while True:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            jobs = [item for item in batch if item is not None]
            if jobs:
                try:
                    committed = self._commit(jobs)
                except Exception as e:  # never leave the loop waiting on jobs that were handed over
                    log.exception("committer: unexpected error")
                    committed = [Committed(item, None, e) for item in jobs]
                for each in committed:
                    self.outbox.put(each)
                self.wake()
            if None in batch:
                return

    def _commit(self, batch: list[Finished]) -> list[Committed]:
        if self.thread_mover.has_stale:
            self.thread_mover.remove_stale()
        results = self.thread_mover.commit_many([(item.job, item.claimed, item.settled.folder) for item in batch])
        return [Committed(item, None, result) if isinstance(result, Exception) else Committed(item, result)
                for item, result in zip(batch, results, strict=True)]
