"""The daemon: one pass of the loop is one method, and run() only repeats it (STYLE, "The daemon loop").

Signal handlers only record the signal; moves and logging happen in the loop. A bad job costs one
file, never the daemon: each job is handled inside its own guard.
"""

from __future__ import annotations

import logging
import queue
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from spoold.config import Config, load_config
from spoold.daemon.committer import RETRY_SECONDS, Committer, Finished
from spoold.daemon.recovery import Recovery
from spoold.daemon.runs import Runs
from spoold.daemon.watcher import Waker, Watcher
from spoold.errors import ConfigError
from spoold.execution.launchers import start_launcher
from spoold.execution.process import ChildProcess, Launcher
from spoold.job import JobStatus
from spoold.logs import EventLog
from spoold.outcomes import Settled, iso, make_ready, ready_folder
from spoold.paths import READY, Folder, SpoolPaths
from spoold.spool.blanks import Blanks
from spoold.spool.intake import Claim, Deferred, Intake
from spoold.spool.limits import Limits
from spoold.spool.moves import Mover
from spoold.spool.node import Node, cancel_marker, cancel_requests, is_cancel_marker, open_node, scratch_folder
from spoold.spool.ready_index import SCAN_STEP, ReadyIndex
from spoold.spool.reaper import Reaper
from spoold.spool.retention import apply_retention
from spoold.spool.scheduled import ScheduledIndex, due_time
from spoold.spool.slots import Scheduler
from spoold.spool.unique import PendingJobs

log = logging.getLogger(__name__)
RETENTION_INTERVAL_SECONDS = 3600.0
# Finished jobs per worker that may wait for the committer: larger batches share their folder fsyncs
# (a window of 2 per worker cost worker/fsync a third of its rate, 8 about a sixth, against none), and
# one kill re-runs at most workers + COMMIT_WINDOW × workers - 1 jobs (docs/design.md, C2), and in worker
# isolation one more per worker, the job waiting in its pipe (M14).
COMMIT_WINDOW = 8
SCAN_AHEAD = 8  # jobs known per worker before a scan under way is paced (ReadyIndex.rescan_paced)
REJOIN = -1  # run() after a lost lease: not an exit code, the caller opens a new daemon


@dataclass
class Running:
    claim: Claim
    child: ChildProcess


class Signals:
    """What the signal handlers record, and nothing more: the loop acts on it. Installed before the daemon
    joins the spool, so a signal sent as soon as its folder appears is not lost."""

    def __init__(self) -> None:
        self.stop_requests = 0
        self.reload_requested = False
        self.wake: Callable[[], None] = lambda: None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requests += 1
        self.wake()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True
        self.wake()


def open_daemon(config: Config, *, drain: bool = False, workers: int | None = None,
                signals: Signals | None = None) -> Daemon:
    """Join the spool (our own locked running/ folder) and start the fork server; then build the daemon.
    OSError if the spool cannot be used."""
    if workers is not None:
        config = replace(config, workers=workers)
    paths = SpoolPaths(config.spool_dir)
    paths.create()
    node = open_node(paths, workers=config.workers, heartbeat_seconds=config.heartbeat_seconds,
                     lease_seconds=config.lease_seconds)
    scratch = scratch_folder(node.id)
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        launcher = start_launcher(config, inline=True)
    except BaseException:
        node.close()
        raise
    daemon = Daemon(config, node, launcher, drain=drain, workers_override=workers, signals=signals or Signals())
    node.heartbeat.on_fence = daemon.on_fenced
    return daemon


class Daemon:
    def __init__(self, config: Config, node: Node, launcher: Launcher, *, drain: bool = False,
                 workers_override: int | None = None, signals: Signals) -> None:
        self.config = config
        self.workers_override = workers_override
        self.drain = drain
        self.node = node
        self.launcher = launcher
        self.paths = SpoolPaths(config.spool_dir)
        self.scratch = scratch_folder(node.id)
        self.events = EventLog(config.log_dir, log_format=config.log_format)
        self.reaper = Reaper(node.folder)
        self.blanks = Blanks(self.paths.tmp, node.id)
        self.mover = Mover(self.paths, durable=config.durability == "fsync", may_act=node.heartbeat.ok,
                           reaper=self.reaper, blanks=self.blanks)
        self.waker = Waker()
        self.committer = Committer(self.mover, self.written, self.waker.wake)
        self.runs = Runs(node.id, self.scratch, launcher, self.events)
        self.intake = Intake(node, self.mover, self.events)
        self.recovery = Recovery(self.paths, node.id, self.intake, self.mover)
        self.index = ReadyIndex(self.paths)
        self.scheduled = ScheduledIndex(self.paths.scheduled, config.max_job_bytes)
        self.slots = Scheduler(self.paths, node, self.mover)
        self.limits = Limits(self.paths)
        self.pending = PendingJobs(self.paths)
        # Our own folder is watched for `.ID.cancel` markers written by `spoold cancel`.
        self.watcher = Watcher([*(self.paths.ready(p) for p in READY), self.paths.scheduled], self.waker,
                               root=self.paths.root, markers=node.folder, observer=config.observer)
        self.children: dict[str, Running] = {}
        self.exited: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.signals = signals
        signals.wake = self.waker.wake
        self.grace_deadline: float | None = None
        self.next_rescan = 0.0
        self.readable: set[int] | None = None  # the fds the loop's last sleep found readable (Waker.sleep)
        self.next_retention = 0.0
        self.hold_claims_until = 0.0  # a claim or a child start failed: claim nothing before then
        self.loop_thread = threading.get_ident()  # the daemon is built in the thread that runs it

    # -- life cycle --------------------------------------------------------------------------------

    def start_threads(self) -> None:
        self.committer.start()
        if self.config.file_events:
            self.watcher.start(inline=True)
        log.info("spoold started: node=%s spool=%s workers=%d", self.node.id, self.paths.root, self.config.workers)

    def close(self) -> None:
        self.watcher.stop()
        self.index.close()
        for running in self.children.values():
            running.child.kill("Interrupted")
        self.limits.release_all()
        self.committer.stop()  # what it holds is written (or left claimed, for recovery) before we go
        self.reaper.close()  # committed claims' copies gone, so the node's folder can go
        self.blanks.close()  # after the committer: it may take blanks until it stops
        self.launcher.close()
        self.waker.close()
        self.events.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.node.close()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or, with --drain, until nothing is ready or running). REJOIN if our
        lease was lost: the caller joins the spool again as a new daemon."""
        try:
            self.start_threads()
            while True:
                now = time.time()
                try:
                    self.loop_once(now)
                except OSError as e:  # the spool's filesystem failed under us (a cut-off mount): the next pass retries
                    log.error("a pass of the loop failed, trying again: %s", e)
                    if not self.node.heartbeat.fenced:
                        self.waker.sleep(min(1.0, self.config.rescan_seconds), self.wake_fds())
                        continue
                if self.should_exit(now) or self.node.heartbeat.fenced:
                    break
                timeout = self.sleep_seconds(time.time())
                if timeout > 0:
                    self.blanks.flush(idle=not self.children)  # committed files' second names in tmp/
                self.readable = self.waker.sleep(timeout, self.wake_fds())
        finally:
            self.close()
        if self.node.heartbeat.fenced:
            log.warning("node=%s left the spool after losing its lease; its jobs are the others' now", self.node.id)
            return REJOIN
        log.info("spoold stopped")
        return 0

    def wake_fds(self) -> list[int | None]:
        """What the loop sleeps on besides its waker: the fork server's messages, the workers' replies, the
        kernel's file events."""
        return [*self.launcher.filenos(), self.watcher.fileno()]

    def on_fenced(self) -> None:
        """From the lease's thread, even while the loop is stuck on a hung mount: stop every job now. Their
        claims are left as they are, for whoever takes them over (docs/design.md, H4)."""
        for running in list(self.children.values()):
            running.child.kill("Fenced")
        self.waker.wake()

    # -- one pass ----------------------------------------------------------------------------------

    def loop_once(self, now: float) -> None:
        self.act_on_signals(now)
        readable, self.readable = self.readable, None  # what the last sleep found readable; None: not known
        if readable is None or not readable.isdisjoint(self.launcher.filenos()):
            self.launcher.pump(readable)  # the fork server's news, the workers' replies: jobs started and ended
        if readable is None or self.watcher.fileno() in readable:
            self.watcher.pump(readable=readable is not None)  # the kernel's file events, when the loop reads them
        self.collect_finished(now)
        self.committer.collect(now)
        self.committer.retry_due(now, self.config)
        self.enforce_deadlines()
        if self.watcher.rearm_needed:  # renew the watch, and find by a rescan what arrived before it
            self.watcher.rearm()
            self.index.rescan(now)
        if now >= self.next_rescan:
            self.rescan(now)
        elif self.index.scanning:  # a large folder is read a chunk per pass, jobs starting meanwhile;
            if self.index_short:
                self.index.rescan_step(SCAN_STEP)
            else:  # once enough are known, for a tenth of the loop's time
                self.index.rescan_paced()
        for path in self.watcher.take_hints():
            self.index.hint(path)
            self.scheduled.hint(path)
            if is_cancel_marker(path.name):
                self.cancel_marked()
        if now >= self.next_retention:
            self.apply_retention(now)
        if self.grace_deadline is None:
            self.submit_slots(now)
            self.promote_due(now)
            self.start_ready(now)

    def act_on_signals(self, now: float) -> None:
        if self.signals.reload_requested:
            self.signals.reload_requested = False
            self.reload()
        if self.signals.stop_requests and self.grace_deadline is None:
            self.grace_deadline = now + self.config.shutdown_grace_seconds
            for running in self.children.values():
                if running.child.queued:  # not taken by its worker yet: it goes back, no run counted
                    running.child.kill("Interrupted")
            log.info("stopping: %d running job(s) get %gs to finish", len(self.children),
                     self.config.shutdown_grace_seconds)
        if self.signals.stop_requests > 1 and self.grace_deadline is not None:
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
        fixed = ("spool_dir", "log_dir", "namespace", "start_method", "isolation", "max_jobs_per_worker", "bootstrap",
                 "observer", "heartbeat_seconds", "lease_seconds")
        changed = [key for key in fixed if getattr(new, key) != getattr(old, key)]
        if changed:
            log.warning("%s: changes need a restart; keeping the running values", ", ".join(changed))
            new = replace(new, **{key: getattr(old, key) for key in changed})
        if self.workers_override is not None:
            new = replace(new, workers=self.workers_override)  # --workers wins over the file, as at start
        self.config = new
        self.launcher.resize(new.workers)
        self.slots.due_at = 0.0  # the schedule may have changed: look at it at the next pass
        self.committer.set_durable(new.durability == "fsync")
        self.events.log_format = new.log_format  # the next line is written the new way
        log.info("configuration reloaded from %s", new.path)

    def rescan(self, now: float) -> None:
        try:
            # A state folder removed by hand is made again, at the periodic rescan only: made at once, it
            # would beat the person's own `rm -r low && mkdir low` (docs/design.md, F28).
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
            try:  # unique_key jobs whose submitter died between taking the key and publishing the job
                self.pending.settle(self.config.lease_seconds, self.config.max_job_bytes,
                                    durable=self.mover.durable)
            except OSError as e:
                log.error("cannot look at the pending unique jobs: %s", e)

    def recover(self, now: float) -> None:
        try:
            orphans = self.recovery.recover_dead(self.config, now)
        except OSError as e:
            log.error("recovery of dead daemons failed, will retry: %s", e)
            return
        for orphan in orphans:
            self.events.job_event("recovered", orphan.job, error="Orphaned",
                                  detail=f"its daemon {orphan.dead_node} died while it ran")
            self.committer.write(Finished(orphan.job, orphan.claimed, orphan.settled, None, now), self.config)

    def cancel_marked(self) -> None:
        """`spoold cancel` of a running job leaves `.ID.cancel` in our folder: stop that child."""
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
        self.slots.prune(self.config, now)

    @property
    def claims_held_until(self) -> float:
        """Nothing is claimed before then: a claim or a child start failed, or the spool refused a result."""
        return max(self.hold_claims_until, self.committer.refused_until)

    def has_free_slot(self, now: float) -> bool:
        """A slot frees when its child exits (its last move may still be in the committer's hands); a
        result the spool could not take keeps its slot until it is written. And no job starts while
        COMMIT_WINDOW × workers finished ones wait for the committer: a kill re-runs every run not yet
        committed, so this bounds what one kill can re-run (docs/design.md, C2)."""
        workers = self.config.workers
        held = len(self.children) + len(self.committer.pending)
        return (now >= self.claims_held_until and self.committer.in_flight < COMMIT_WINDOW * workers
                and (held < workers or (held < 2 * workers and self.launcher.can_queue())))

    def start_ready(self, now: float) -> None:
        aging = self.config.priority_aging_seconds
        while self.has_free_slot(now) and (item := self.index.pop(now, aging_seconds=aging)) is not None:
            priority, name = item
            try:
                self.take_and_start(priority, name, now)
            except OSError as e:
                log.error("cannot claim %s/%s: %s", priority, name, e)
                self.hold_claims_until = now + RETRY_SECONDS
            except Exception:
                log.exception("unexpected error with %s/%s; the daemon goes on", priority, name)

    def take_and_start(self, priority: str, name: str, now: float) -> None:
        """Claim one ready file and start it. A job of a class at its [concurrency] limit is not claimed:
        it stays where it is, in its place, and is looked at again soon (limits.py)."""
        path = self.paths.ready(priority) / name
        peeked = self.limits.class_of(path, self.config.max_job_bytes) if self.config.concurrency else None
        slot = self.limits.reserve(self.config, peeked, now)
        if slot is False:
            self.index.defer(priority, name, self.limits.recheck_at(peeked, now))
            return
        try:
            taken = self.intake.take(self.config, self.paths.ready(priority), name, now)
        except BaseException:
            self.limits.give_back(slot)
            raise
        finally:
            self.limits.forget(path)
        if not isinstance(taken, Claim):
            self.limits.give_back(slot)
            if isinstance(taken, Deferred):
                self.index.defer(priority, name, taken.until)
            return
        if self.config.concurrency and taken.job.class_name != peeked:  # changed since the look, or unreadable then
            self.limits.give_back(slot)
            slot = self.limits.reserve(self.config, taken.job.class_name, now)
            if slot is False:
                self.mover.write_back(taken.path, path)
                self.index.defer(priority, name, self.limits.recheck_at(taken.job.class_name, now))
                return
        self.limits.hold(taken.job.id, slot)
        self.start(taken, now)

    def submit_slots(self, now: float) -> None:
        """[schedule]: the slots now due that no daemon took yet (not with --drain: SPEC §12)."""
        due_at = self.slots.due_at
        if self.drain or due_at is None or now < due_at:
            return
        for target in self.slots.submit_due(self.config, now):
            self.index.hint(target)

    def promote_due(self, now: float) -> None:
        """scheduled/ -> its ready folder, for every job now due."""
        while (name := self.scheduled.pop_due(now)) is not None:
            try:
                taken = self.intake.take(self.config, self.paths.scheduled, name, now)
                if isinstance(taken, Deferred):
                    self.scheduled.note(name, taken.until)
                elif taken is not None:
                    self.promote(taken, now)
            except OSError as e:
                log.error("cannot promote scheduled/%s: %s", name, e)
                self.scheduled.note(name, now + RETRY_SECONDS)
            except Exception:
                log.exception("unexpected error with scheduled/%s; the daemon goes on", name)

    def promote(self, claim: Claim, now: float) -> None:
        job = claim.job
        if due_time(job.doc, now) > now:  # changed by hand meanwhile: back to waiting
            self.move_on(claim, Folder.SCHEDULED, now)
            return
        make_ready(job)
        self.move_on(claim, ready_folder(job, self.config), now)

    def move_on(self, claim: Claim, folder: str, now: float) -> None:
        """A move of a claimed job without a run (a promotion, a job not due yet): no log line of its own."""
        self.committer.write(Finished(claim.job, claim.path, Settled(folder, ""), None, now), self.config)

    def start(self, claim: Claim, now: float) -> None:
        """Run a claimed job in a child, unless it is not due yet (then it waits in scheduled/)."""
        job = claim.job
        due = due_time(job.doc, now)
        if due > now:
            self.limits.release(job.id)
            job.doc["run_at"] = iso(due)
            job.doc["status"] = JobStatus.SCHEDULED.value
            self.move_on(claim, Folder.SCHEDULED, now)
            return
        try:
            child = self.runs.launch(job, self.config, now, self.on_exit)
        except OSError as e:
            self.limits.release(job.id)
            log.error("job=%s cannot start a child (%s); putting it back", job.id, e)
            self.mover.write_back(claim.path, self.paths.ready(claim.source) / claim.path.name)
            self.hold_claims_until = now + RETRY_SECONDS
            return
        self.children[job.id] = Running(claim, child)

    def on_exit(self, job_id: str) -> None:
        """From a waiter thread, or from the loop's own pump(): hand the id to the loop, waking it if need be."""
        self.exited.put(job_id)
        if threading.get_ident() != self.loop_thread:
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
            self.limits.release(job_id)  # its [concurrency] slot is free as soon as its child is gone
            if running is None:
                continue
            if running.child.not_started and running.child.killed_for != "Cancelled":
                self.put_back(running.claim)
                continue
            try:
                finished = self.runs.settle(running.claim.job, running.claim.path, running.child, self.config, now)
                self.committer.finish(finished, self.config)  # its slot is free now, whoever writes it
            except Exception:
                log.exception("job=%s unexpected error while finishing; the daemon goes on", job_id)

    def put_back(self, claim: Claim) -> None:
        """A job that waited for a busy worker and never started (a stop, or its worker died first): back
        to its ready folder as it was claimed, no run counted. A fenced daemon leaves it for the others."""
        if self.node.heartbeat.fenced:
            return
        try:
            self.mover.write_back(claim.path, self.paths.ready(claim.source) / claim.path.name)
        except Exception:
            log.exception("job=%s cannot be put back; its claim stays for recovery", claim.job.id)

    def written(self, item: Finished, target: Path) -> None:
        """After a job's move is durable (in this thread): note a scheduled job's due time, log the outcome."""
        if item.settled.folder == Folder.SCHEDULED:
            self.scheduled.note(target.name, due_time(item.job.doc, item.now))
        self.runs.log(item.job, item.settled, item.duration_ms)

    # -- when to stop, how long to sleep -----------------------------------------------------------

    @property
    def index_short(self) -> bool:
        """Fewer jobs known than SCAN_AHEAD per worker: a scan under way reads on at full speed. Beyond
        that it is paced to a tenth of the loop's time, so a large backlog's scan does not take the loop's
        time from the jobs it has already found (docs/design.md, T2)."""
        return len(self.index) < SCAN_AHEAD * self.config.workers

    def is_idle(self, now: float) -> bool:
        due = self.scheduled.next_due()
        return (not self.children and not self.committer.busy and len(self.index) == 0
                and not self.index.scanning and (due is None or due > now))

    def should_exit(self, now: float) -> bool:
        if self.grace_deadline is not None:
            # A second signal does not wait for a spool that cannot be written: those jobs stay in
            # running/ and are recovered by the next daemon.
            gave_up = self.signals.stop_requests > 1
            return not self.children and not self.committer.in_flight and (not self.committer.pending or gave_up)
        if self.drain and self.is_idle(now):
            self.rescan(now)  # events are hints: look once more before leaving
            self.watcher.pump()
            for path in self.watcher.take_hints():
                self.index.hint(path)
            return self.is_idle(now)
        return False

    def sleep_seconds(self, now: float) -> float:
        if self.index.scanning and self.index_short:
            return 0.0
        wake_at = [self.next_rescan, self.next_retention]
        if (paced := self.index.paced_due()) is not None:  # a paced scan reads on even while no job ends
            wake_at.append(now + (paced - time.monotonic()))
        if self.slots.due_at is not None and not self.drain:
            wake_at.append(self.slots.due_at)
        wake_at += [t for t in (self.scheduled.next_due(),) if t is not None]  # promotion needs no free slot
        if self.has_free_slot(now) or self.claims_held_until > now:
            wake_at += [t for t in (self.index.next_due(), self.claims_held_until) if t]
        wake_at += [t for t in (self.committer.next_retry(),) if t is not None]
        if self.grace_deadline is not None:
            wake_at.append(self.grace_deadline)
        mono = time.monotonic()
        wake_at += [now + (r.child.deadline - mono) for r in self.children.values() if r.child.killed_for is None]
        return max(0.0, min(min(wake_at) - now, self.config.rescan_seconds))
