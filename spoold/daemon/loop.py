"""The daemon: one pass of the loop is one method, and run() only repeats it (STYLE, "The daemon loop").

Signal handlers only record the signal; moves and logging happen in the loop. A bad job costs one
file, never the daemon: each job is handled inside its own guard.
"""

from __future__ import annotations

import logging
import queue
import shutil
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from spoold.config import Config, load_config
from spoold.daemon.committer import Committer, Finished
from spoold.daemon.recovery import recover_dead
from spoold.daemon.watcher import Waker, Watcher
from spoold.errors import ConfigError
from spoold.execution.launchers import make_launcher
from spoold.execution.process import ChildProcess, Launcher, start_child
from spoold.job import Job, JobStatus
from spoold.logs import EventLog
from spoold.outcomes import Outcome, Settled, begin_run, iso, ready_folder, settle_run
from spoold.paths import READY, SpoolPaths
from spoold.spool.chain import hand_on_chain
from spoold.spool.intake import Claim, Deferred, Intake
from spoold.spool.moves import LostClaim, Mover
from spoold.spool.node import Node, cancel_marker, cancel_requests, is_cancel_marker, open_node, scratch_folder
from spoold.spool.ready_index import ReadyIndex
from spoold.spool.retention import apply_retention
from spoold.spool.scheduled import ScheduledIndex, due_time

log = logging.getLogger(__name__)
SPOOL_RETRY_SECONDS = 1.0
RETENTION_INTERVAL_SECONDS = 3600.0


@dataclass
class Running:
    claim: Claim
    child: ChildProcess


@dataclass
class PendingCommit:
    """A finished job whose new state could not be written yet (disk full, I/O error): retried."""

    job: Job
    path: Path
    settled: Settled
    duration_ms: int | None
    retry_at: float


class Daemon:
    def __init__(self, config: Config, *, drain: bool = False, workers: int | None = None) -> None:
        self.config = config if workers is None else replace(config, workers=workers)
        self.workers_override = workers
        self.drain = drain
        self.paths = SpoolPaths(config.spool_dir)
        self.events = EventLog(config.log_dir)
        self.mover = Mover(self.paths, durable=self.config.durability == "fsync")
        self.waker = Waker()
        # Finished runs are committed by their own thread, with its own Mover (its stale list is its own).
        self.committer = Committer(Mover(self.paths, durable=self.mover.durable), self.waker.wake)
        self.index = ReadyIndex(self.paths)
        self.scheduled = ScheduledIndex(self.paths.scheduled, config.max_job_bytes)
        self.watcher = Watcher([], self.waker)
        self.children: dict[str, Running] = {}
        self.exited: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.pending: list[PendingCommit] = []
        self.stop_requests = 0
        self.reload_requested = False
        self.grace_deadline: float | None = None
        self.next_rescan = 0.0
        self.next_retention = 0.0
        self.hold_claims_until = 0.0
        self.node: Node | None = None
        self.intake: Intake | None = None
        self.launcher: Launcher | None = None
        self.scratch = Path()  # set by open(), named after our node

    # -- life cycle --------------------------------------------------------------------------------

    def open(self) -> None:
        self.paths.create()
        self.node = open_node(self.paths, workers=self.config.workers)
        self.scratch = scratch_folder(self.node.id)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.intake = Intake(self.node, self.mover, self.events)
        self.launcher = make_launcher(self.config)
        self.launcher.warm_up()
        self.committer.start()
        # Our own folder is watched for `.ID.cancel` markers written by `spoold cancel`.
        self.watcher = Watcher([*(self.paths.ready(p) for p in READY), self.paths.scheduled], self.waker,
                               root=self.paths.root, markers=self.node.folder)
        if self.config.file_events:
            self.watcher.start()
        log.info("spoold started: node=%s spool=%s workers=%d", self.node.id, self.paths.root, self.config.workers)

    def close(self) -> None:
        self.watcher.stop()
        for running in self.children.values():
            running.child.kill("Interrupted")
        self.committer.stop()  # what it holds is written (or left claimed, for recovery) before we go
        if self.launcher is not None:
            self.launcher.close()
        self.waker.close()
        self.events.close()
        if self.node is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.node.close()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requests += 1
        self.waker.wake()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True
        self.waker.wake()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or, with --drain, until nothing is ready or running)."""
        self.open()
        try:
            while True:
                now = time.time()
                self.loop_once(now)
                if self.should_exit(now):
                    break
                self.waker.sleep(self.sleep_seconds(time.time()))
        finally:
            self.close()
        log.info("spoold stopped")
        return 0

    # -- one pass ----------------------------------------------------------------------------------

    def loop_once(self, now: float) -> None:
        self.act_on_signals(now)
        self.collect_finished(now)
        self.collect_committed(now)
        self.retry_pending(now)
        self.enforce_deadlines()
        if self.watcher.rearm_needed:  # renew the watch, and find by a rescan what arrived before it
            self.watcher.rearm()
            self.index.rescan(now)
        if now >= self.next_rescan:
            self.rescan(now)
        elif self.index.scanning:
            self.index.rescan_step()  # a large folder is read a chunk per pass, jobs starting meanwhile
        for path in self.watcher.take_hints():
            self.index.hint(path)
            self.scheduled.hint(path)
            if is_cancel_marker(path.name):
                self.cancel_marked()
        if now >= self.next_retention:
            self.apply_retention(now)
        if self.grace_deadline is None:
            self.promote_due(now)
            self.start_ready(now)

    def act_on_signals(self, now: float) -> None:
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        if self.stop_requests and self.grace_deadline is None:
            self.grace_deadline = now + self.config.shutdown_grace_seconds
            log.info("stopping: %d running job(s) get %gs to finish", len(self.children),
                     self.config.shutdown_grace_seconds)
        if self.stop_requests > 1 and self.grace_deadline is not None:
            self.grace_deadline = min(self.grace_deadline, now)
        if self.grace_deadline is not None and now >= self.grace_deadline:
            for running in self.children.values():
                running.child.kill("Interrupted")

    def reload(self) -> None:
        """SIGHUP: build the new Config first; a bad one is refused and the old one stays."""
        try:
            new = load_config(self.config.path)
        except ConfigError as e:
            log.error("reload refused, keeping the old configuration: %s", e)
            return
        old = self.config
        fixed = ("spool_dir", "log_dir", "namespace", "start_method", "isolation", "max_jobs_per_worker")
        changed = [key for key in fixed if getattr(new, key) != getattr(old, key)]
        if changed:
            log.warning("%s: changes need a restart; keeping the running values", ", ".join(changed))
            new = replace(new, **{key: getattr(old, key) for key in changed})
        if self.workers_override is not None:
            new = replace(new, workers=self.workers_override)  # --workers wins over the file, as at start
        self.config = new
        self.mover.durable = self.committer.mover.durable = new.durability == "fsync"
        log.info("configuration reloaded from %s", new.path)

    def rescan(self, now: float) -> None:
        try:
            # A state folder removed by hand is made again, at the periodic rescan only: made at once, it
            # would beat the person's own `rm -r low && mkdir low` (notes case 28).
            self.paths.create()
            self.scratch.mkdir(parents=True, exist_ok=True)  # a tmp cleaner may have taken it
        except OSError as e:
            log.error("cannot create the spool folders: %s", e)
        self.watcher.rearm()
        if not self.index.scanning:  # one still reading a large backlog goes on rather than start over
            self.index.rescan(now)
        self.scheduled.rescan()
        self.cancel_marked()
        self.next_rescan = now + self.config.rescan_seconds
        if self.grace_deadline is None:
            self.recover(now)

    def recover(self, now: float) -> None:
        assert self.intake is not None and self.node is not None
        try:
            recover_dead(self, now)
        except OSError as e:
            log.error("recovery of dead daemons failed, will retry: %s", e)

    def cancel_marked(self) -> None:
        """`spoold cancel` of a running job leaves `.ID.cancel` in our folder: stop that child."""
        if self.node is None:
            return
        for job_id in cancel_requests(self.node.folder):
            running = self.children.get(job_id)
            if running is not None:
                log.info("job=%s cancelled: killing its process group", job_id)
                running.child.kill("Cancelled")
            else:
                cancel_marker(self.node.folder, job_id).unlink(missing_ok=True)  # stale: not running here

    def apply_retention(self, now: float) -> None:
        self.next_retention = now + RETENTION_INTERVAL_SECONDS
        apply_retention(self.paths, self.config, now=now)

    def has_free_slot(self, now: float) -> bool:
        """A slot frees when its child exits (its last move may still be in the committer's hands); a
        result the spool could not take keeps its slot until it is written."""
        return now >= self.hold_claims_until and len(self.children) + len(self.pending) < self.config.workers

    def start_ready(self, now: float) -> None:
        assert self.intake is not None
        aging = self.config.priority_aging_seconds
        while self.has_free_slot(now) and (item := self.index.pop(now, aging_seconds=aging)) is not None:
            priority, name = item
            try:
                taken = self.intake.take(self.config, self.paths.ready(priority), name, now)
                if isinstance(taken, Deferred):
                    self.index.defer(priority, name, taken.until)
                elif taken is not None:
                    self.start(taken, now)
            except OSError as e:
                log.error("cannot claim %s/%s: %s", priority, name, e)
                self.hold_claims_until = now + SPOOL_RETRY_SECONDS
            except Exception:
                log.exception("unexpected error with %s/%s; the daemon goes on", priority, name)

    def promote_due(self, now: float) -> None:
        """scheduled/ -> its ready folder, for every job now due."""
        assert self.intake is not None
        while (name := self.scheduled.pop_due(now)) is not None:
            try:
                taken = self.intake.take(self.config, self.paths.scheduled, name, now)
                if isinstance(taken, Deferred):
                    self.scheduled.note(name, taken.until)
                elif taken is not None:
                    self.promote(taken, now)
            except OSError as e:
                log.error("cannot promote scheduled/%s: %s", name, e)
                self.scheduled.note(name, now + SPOOL_RETRY_SECONDS)
            except Exception:
                log.exception("unexpected error with scheduled/%s; the daemon goes on", name)

    def promote(self, claim: Claim, now: float) -> None:
        job = claim.job
        due = due_time(job.doc, now)
        if due > now:  # changed by hand meanwhile: back to waiting
            self.write(job, claim.path, Settled("scheduled", ""), None, now)
            return
        job.doc.pop("run_at", None)
        job.doc.pop("delay_seconds", None)
        if job.doc.get("status") == JobStatus.SCHEDULED:
            job.doc["status"] = JobStatus.READY.value
        self.write(job, claim.path, Settled(ready_folder(job, self.config), ""), None, now)

    def start(self, claim: Claim, now: float) -> None:
        """Run a claimed job in a child, unless it is not due yet (then it waits in scheduled/)."""
        job = claim.job
        due = due_time(job.doc, now)
        if due > now:
            job.doc["run_at"] = iso(due)
            job.doc["status"] = JobStatus.SCHEDULED.value
            self.write(job, claim.path, Settled("scheduled", ""), None, now)
            return
        begin_run(job, now)
        limit = self.config.max_execution_time
        timeout = min(float(job.doc.get("timeout_seconds", limit)), limit)
        try:
            assert self.launcher is not None
            child = start_child(job, self.config, self.scratch / job.id, self.on_exit, launcher=self.launcher,
                                allowed_methods=self.config.allowed_jobs[job.class_name], timeout=timeout)
        except OSError as e:
            log.error("job=%s cannot start a child (%s); putting it back", job.id, e)
            self.mover.write_back(claim.path, self.paths.ready(claim.source) / claim.path.name)
            self.hold_claims_until = now + SPOOL_RETRY_SECONDS
            return
        self.children[job.id] = Running(claim, child)
        self.events.event("started", job=job.id, class_=job.class_name, method=job.method, attempt=job.attempts)

    def on_exit(self, job_id: str) -> None:
        """Called from a waiter thread: hand the id to the loop and wake it."""
        self.exited.put(job_id)
        self.waker.wake()

    def enforce_deadlines(self) -> None:
        mono = time.monotonic()
        for running in self.children.values():
            if running.child.killed_for is None and mono >= running.child.deadline:
                log.info("job=%s past its time limit of %gs: killing its process group",
                         running.claim.job.id, running.child.timeout)
                running.child.kill("Timeout")

    def collect_finished(self, now: float) -> None:
        while True:
            try:
                job_id = self.exited.get_nowait()
            except queue.Empty:
                return
            running = self.children.pop(job_id, None)
            if running is None:
                continue
            try:
                outcome = running.child.outcome()
                running.child.cleanup()
                self.finish(running.claim, outcome, running.child.pid, now)
                if self.node is not None and running.child.killed_for == "Cancelled":
                    cancel_marker(self.node.folder, job_id).unlink(missing_ok=True)
            except Exception:
                log.exception("job=%s unexpected error while finishing; the daemon goes on", job_id)

    def finish(self, claim: Claim, outcome: Outcome, pid: int, now: float) -> None:
        """Settle the run in memory; a job's last move is handed to the committer, freeing its slot now.

        A move that leads to another event of the same job (a retry, a chain's next step) is written
        here, in order, so that its log line always comes before what follows it.
        """
        assert self.node is not None and self.intake is not None
        job = claim.job
        settled = settle_run(job, outcome, self.config, node=self.node.id, pid=pid, now=now)
        if settled.folder in ("done", "failed") and not job.chain:
            self.committer.submit(Finished(job, claim.path, settled, outcome.duration_ms, now))
        else:
            self.write(job, claim.path, settled, outcome.duration_ms, now)

    def collect_committed(self, now: float) -> None:
        for done in self.committer.take_committed():
            item = done.finished
            if isinstance(done.error, LostClaim):
                log.warning("%s", done.error)
            elif done.error is not None or done.target is None:
                self.hold_claims_until = now + SPOOL_RETRY_SECONDS  # no new work while results cannot be kept
                self.retry_later(item.job, item.claimed, item.settled, item.duration_ms, now, done.error)
            else:
                self.written(item.job, done.target, item.settled, item.duration_ms, now)

    def write(self, job: Job, path: Path, settled: Settled, duration_ms: int | None, now: float) -> None:
        """Commit the job's new state (handing its chain on first) and log it.

        A spool that cannot be written is retried every second, never counted as the job's failure.
        """
        try:
            if settled.folder == "done" and job.chain:
                hand_on_chain(self.mover, self.config, job, now)  # before the commit: a crash re-runs, not loses
            target = self.mover.commit(job, path, settled.folder)
        except LostClaim as e:
            log.warning("%s", e)
            return
        except OSError as e:
            self.retry_later(job, path, settled, duration_ms, now, e)
            return
        self.written(job, target, settled, duration_ms, now)

    def retry_later(self, job: Job, path: Path, settled: Settled, duration_ms: int | None, now: float,
                    error: Exception | None) -> None:
        log.error("job=%s cannot write the spool (%s); retrying in %gs", job.id, error, SPOOL_RETRY_SECONDS)
        self.pending.append(PendingCommit(job, path, settled, duration_ms, now + SPOOL_RETRY_SECONDS))

    def written(self, job: Job, target: Path, settled: Settled, duration_ms: int | None, now: float) -> None:
        """After a commit: note a scheduled job's due time, and log the outcome."""
        if settled.folder == "scheduled":
            self.scheduled.note(target.name, due_time(job.doc, now))
        if settled.log_status:
            self.events.event(settled.log_status, job=job.id, class_=job.class_name, method=job.method,
                              attempt=job.attempts, duration_ms=duration_ms, error=settled.error_type,
                              detail=settled.detail)

    def retry_pending(self, now: float) -> None:
        if self.mover.stale:
            self.mover.remove_stale()
        due = [p for p in self.pending if p.retry_at <= now]
        self.pending = [p for p in self.pending if p.retry_at > now]
        for item in due:
            self.write(item.job, item.path, item.settled, item.duration_ms, now)

    # -- when to stop, how long to sleep -----------------------------------------------------------

    def is_idle(self, now: float) -> bool:
        due = self.scheduled.next_due()
        return (not self.children and not self.pending and not self.committer.in_flight and len(self.index) == 0
                and not self.index.scanning and (due is None or due > now))

    def should_exit(self, now: float) -> bool:
        if self.grace_deadline is not None:
            # A second signal does not wait for a spool that cannot be written: those jobs stay in
            # running/ and are recovered by the next daemon.
            return not self.children and not self.committer.in_flight and (not self.pending or self.stop_requests > 1)
        if self.drain and self.is_idle(now):
            self.rescan(now)  # events are hints: look once more before leaving
            for path in self.watcher.take_hints():
                self.index.hint(path)
            return self.is_idle(now)
        return False

    def sleep_seconds(self, now: float) -> float:
        if self.index.scanning:
            return 0.0
        wake_at = [self.next_rescan, self.next_retention]
        wake_at += [t for t in (self.scheduled.next_due(),) if t is not None]  # promotion needs no free slot
        if self.has_free_slot(now) or self.hold_claims_until > now:
            wake_at += [t for t in (self.index.next_due(), self.hold_claims_until) if t]
        wake_at += [p.retry_at for p in self.pending]
        if self.grace_deadline is not None:
            wake_at.append(self.grace_deadline)
        mono = time.monotonic()
        wake_at += [now + (r.child.deadline - mono) for r in self.children.values() if r.child.killed_for is None]
        return max(0.0, min(min(wake_at) - now, self.config.rescan_seconds))
