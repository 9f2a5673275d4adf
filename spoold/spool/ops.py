"""State changes an operator asks for: `spoold retry`, `cancel`, `purge` and `stop` (SPEC §6).

A file is first taken by one atomic rename into a short-lived `cli.` node folder of our own, so no
daemon can claim it while we rewrite it; if we die holding it, recovery puts it back by its status.
Every id gets its own Acted, so one bad id never stops the others.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from spoold.config import Config
from spoold.errors import JobRejected, NotAJob
from spoold.job import Job, JobStatus, decode_document, validate_document
from spoold.logs import EventLog
from spoold.outcomes import iso, ready_folder
from spoold.paths import JOB_SUFFIX, READY, Folder, SpoolPaths, id_from_name, is_valid_id
from spoold.spool.fsio import read_bounded
from spoold.spool.intake import read_job
from spoold.spool.moves import Mover
from spoold.spool.node import OPERATOR_KIND, Node, is_alive, open_node, request_cancel
from spoold.spool.retention import purge_folder
from spoold.spool.unique import take_key
from spoold.spool.views import READ_LIMIT, DaemonView, job_entries, live_daemons, place_of, read_document

CANCEL_POLL_SECONDS = 0.05
CANCELLED_MESSAGE = "cancelled by spoold cancel"
WAITING = (*READY, Folder.SCHEDULED)
RETRYABLE = (Folder.FAILED, Folder.SCHEDULED, Folder.REJECTED)
TAKE_TRIES = 3


@dataclass(frozen=True)
class Acted:
    """What became of one id: `ok`, or why not; `spool_error` when the spool could not be written (exit 3)."""

    job_id: str
    ok: bool
    message: str
    spool_error: bool = False


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container), or no such variable on Windows
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


class Operator:
    """One operator command's session on a spool; its `cli.` node is opened on first use, closed at exit."""

    def __init__(self, config: Config, *, by: str | None = None) -> None:
        self.config = config
        self.by = by or f"cli:{_user()}"  # who acts, in each log line (SPEC §8)
        self.paths = SpoolPaths(config.spool_dir)
        self.mover = Mover(self.paths)
        self.events = EventLog(config.log_dir, log_format=config.log_format)
        self._node: Node | None = None

    def __enter__(self) -> Operator:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._node is not None:
            self._node.close()
            self._node = None

    def node(self) -> Node:
        if self._node is None:
            self.paths.create()
            self._node = open_node(self.paths, workers=0, kind=OPERATOR_KIND,
                                   heartbeat_seconds=self.config.heartbeat_seconds,
                                   lease_seconds=self.config.lease_seconds)
            self.mover.may_act = self._node.heartbeat.ok
        return self._node

    # -- taking and rewriting one file -------------------------------------------------------------

    def take(self, path: Path) -> Path | None:
        """Rename the file into our node folder; None if it moved meanwhile (a daemon claimed it, ...)."""
        taken = self.node().folder / path.name
        try:
            os.rename(path, taken)
        except FileNotFoundError:
            return None
        self.mover.claims.note()
        return taken

    def rewrite(self, taken: Path, original: Path, edit: Callable[[Job], str], *,
                as_dropped: bool = False) -> tuple[Job, Path]:
        """Decode the taken file, let `edit` change it and name its folder, commit it there.

        `as_dropped`: check it as the daemon checks a dropped file (size, allowlist; a file from rejected/).
        A file that is not a valid job goes back unchanged (NotAJob). If the commit fails, the file stays
        in our node folder, and recovery resolves it once we are gone: never a loss, never a duplicate.
        """
        job_id = taken.name[: -len(JOB_SUFFIX)]
        try:
            if as_dropped:
                doc = read_job(self.config, taken, job_id).job.doc
            else:
                doc = decode_document(read_bounded(taken, READ_LIMIT))
                validate_document(doc)
        except (JobRejected, ValueError, OSError) as e:
            self.mover.write_back(taken, original)
            raise NotAJob(str(e)) from e
        job = Job(job_id, doc)
        folder = edit(job)
        return job, self.mover.commit(job, taken, folder)

    def _where(self, path: Path) -> str:
        return str(path.parent.relative_to(self.paths.root)) + "/"

    def _apply(self, job_id: str, path: Path, edit: Callable[[Job], str], *,
               as_dropped: bool = False) -> tuple[Job, Path] | Acted | None:
        """take + rewrite with every way it can go wrong turned into an Acted; None if the file moved."""
        try:
            taken = self.take(path)
            if taken is None:
                return None
            return self.rewrite(taken, path, edit, as_dropped=as_dropped)
        except NotAJob as e:
            return Acted(job_id, False, f"not a valid job ({e}); left in {self._where(path)}")
        except OSError as e:
            return Acted(job_id, False, f"cannot write the spool: {e}", spool_error=True)

    # -- retry ---------------------------------------------------------------------------------------

    def _ready_again(self, job: Job) -> str:
        job.doc["status"] = JobStatus.READY.value
        job.doc["failed_runs"] = 0
        job.doc.pop("run_at", None)
        job.doc.pop("delay_seconds", None)
        return ready_folder(job, self.config)

    def _ready_from_rejected(self, job: Job) -> str:
        job.doc["status"] = JobStatus.READY.value
        return ready_folder(job, self.config)

    def _still_rejected(self, job_id: str, path: Path) -> Acted | None:
        """Intake's checks on a file in rejected/, before it is taken: why it is still not a job, or None."""
        try:
            read_job(self.config, path, job_id)
        except FileNotFoundError:
            return None  # it moved: the caller looks again
        except JobRejected as e:
            return Acted(job_id, False, f"still not a valid job: {e}; left in rejected/")
        except OSError as e:
            return Acted(job_id, False, f"cannot read it: {e}; left in rejected/")
        return None

    def _key_held(self, job_id: str, path: Path) -> Acted | None:
        """A job with a unique_key runs again only once it holds its key (SPEC §12): refused, naming the live
        job that holds it; else the key is now this job's."""
        key = (read_document(path) or {}).get("unique_key")
        if not isinstance(key, str):
            return None
        try:
            held = take_key(self.paths, key, job_id, durable=self.mover.durable)
        except OSError as e:
            return Acted(job_id, False, f"cannot take its unique_key: {e}", spool_error=True)
        if held is None:
            return None
        return Acted(job_id, False, f"its unique_key {key!r} is held by the live job {held}; left in "
                                    f"{self._where(path)}")

    def retry(self, job_id: str) -> Acted:
        """failed/ or scheduled/ -> its ready folder, with a fresh retry budget; `attempts` counts on.

        A file in rejected/ that has been fixed since (a hand-written file rejected while half-written)
        goes to its ready folder once it passes the daemon's checks; its ID.reason is removed (the logs
        keep the rejection and the requeue)."""
        if not is_valid_id(job_id):
            return Acted(job_id, False, "not a valid job id")
        for _ in range(TAKE_TRIES):
            path = self.paths.find_job(job_id)
            if path is None:
                return Acted(job_id, False, "no such job in the spool")
            state, _daemon = place_of(self.paths, path)
            if state not in RETRYABLE:
                return Acted(job_id, False, f"it is in {self._where(path)}; only a failed, scheduled or rejected "
                                            "job can be retried")
            held = self._key_held(job_id, path)
            if held is not None:
                return held
            if state == Folder.REJECTED:
                applied = self._still_rejected(job_id, path) or self._apply(
                    job_id, path, self._ready_from_rejected, as_dropped=True)
            else:
                applied = self._apply(job_id, path, self._ready_again)
            if isinstance(applied, Acted):
                return applied
            if applied is not None:
                job, target = applied
                if state == Folder.REJECTED:
                    with contextlib.suppress(OSError):
                        self.paths.reason_file(job_id).unlink(missing_ok=True)
                self.events.job_event("requeued", job, by=self.by)
                return Acted(job.id, True, f"{self._where(path)} -> {self._where(target)}")
        return Acted(job_id, False, "it kept moving while we tried to take it; try again")

    def retry_all_failed(self) -> list[Acted]:
        ids = [job_id for e in job_entries(self.paths.failed, nested=True)
               if (job_id := id_from_name(e.name)) is not None]
        return [self.retry(job_id) for job_id in sorted(ids)]

    # -- cancel ---------------------------------------------------------------------------------------

    def _cancelled(self, job: Job) -> str:
        job.doc["status"] = JobStatus.FAILED.value
        job.doc["error"] = {"type": "Cancelled", "message": CANCELLED_MESSAGE, "traceback": ""}
        job.doc["finished_at"] = iso(time.time())
        job.doc.pop("run_at", None)
        return Folder.FAILED

    def cancel(self, job_id: str, *, timeout: float) -> Acted:
        """A ready or scheduled job -> failed/ (Cancelled); a running one: ask its daemon, wait for failed/."""
        if not is_valid_id(job_id):
            return Acted(job_id, False, "not a valid job id")
        deadline = time.monotonic() + timeout
        marker: Path | None = None
        try:
            while True:
                step = self._cancel_step(job_id, marker)
                if isinstance(step, Acted):
                    return step
                marker = step or marker
                if time.monotonic() >= deadline:
                    return Acted(job_id, False, f"still running after {timeout:g}s: its daemon did not stop it")
                time.sleep(CANCEL_POLL_SECONDS)
        finally:
            if marker is not None:  # the daemon removes it once done; if we gave up, it must not act later
                marker.unlink(missing_ok=True)

    def _cancel_step(self, job_id: str, marker: Path | None) -> Acted | Path | None:
        """One look at the job: an Acted ends it, a Path is the marker we wrote, None means look again."""
        path = self.paths.find_job(job_id)
        if path is None:
            return Acted(job_id, False, "no such job in the spool")
        state, daemon = place_of(self.paths, path)
        if state in WAITING:
            return self._cancel_waiting(job_id, path)
        if state == Folder.RUNNING and daemon is not None:
            return self._mark(job_id, path.parent) if marker is None else None
        if state == Folder.FAILED and marker is not None:
            doc = read_document(path) or {}
            error = doc.get("error")
            error_type = error.get("type") if isinstance(error, dict) else None
            if error_type == "Cancelled":
                return Acted(job_id, True, f"{self._where(marker)} -> {self._where(path)} (its child was stopped)")
            return Acted(job_id, False, f"it failed by itself ({error_type}) before it could be cancelled")
        if marker is not None:
            return Acted(job_id, False, f"it ended in {self._where(path)} before it could be cancelled")
        return Acted(job_id, False, f"it is in {self._where(path)}; only a ready, scheduled or running job "
                                    "can be cancelled")

    def _cancel_waiting(self, job_id: str, path: Path) -> Acted | None:
        applied = self._apply(job_id, path, self._cancelled)
        if applied is None or isinstance(applied, Acted):
            return applied
        job, target = applied
        self.events.job_event("cancelled", job, by=self.by)
        return Acted(job.id, True, f"{self._where(path)} -> {self._where(target)}")

    def _mark(self, job_id: str, folder: Path) -> Acted | Path | None:
        if folder.name.startswith(OPERATOR_KIND):
            return None  # another operator command holds it for a moment: wait for where it lands
        if not is_alive(folder):
            return Acted(job_id, False, f"its daemon {folder.name} is not alive; a daemon will requeue the job "
                                        "when it recovers that folder: cancel it then")
        try:
            marker = request_cancel(folder, job_id, self.by)
        except FileNotFoundError:
            return None  # the folder went away with its daemon: look again
        return marker

    # -- purge ---------------------------------------------------------------------------------------

    def purge(self, folder: str, older_than_seconds: float, *, now: float) -> int:
        """`spoold purge`: delete the finished jobs of `folder` older than that, one `purged` line each."""
        def logged(job_id: str) -> None:
            self.events.event("purged", job=job_id, folder=folder, by=self.by)

        return purge_folder(self.paths, folder, older_than_seconds, now=now, on_removed=logged)


# -- stop ---------------------------------------------------------------------------------------------


@dataclass
class Stopped:
    """What `spoold stop` did: daemons signalled, daemons it could not signal (why), other hosts' daemons."""

    signalled: list[DaemonView] = field(default_factory=list)
    failed: list[tuple[DaemonView, str]] = field(default_factory=list)
    elsewhere: list[DaemonView] = field(default_factory=list)


def stop_daemons(paths: SpoolPaths, sig: int = signal.SIGTERM) -> Stopped:
    """Signal every live daemon of this host, by the pid in its .info.

    A daemon of another host sharing the spool is left alone: its pid means nothing here.
    """
    host = socket.gethostname()
    stopped = Stopped()
    for daemon in live_daemons(paths):
        if daemon.info.get("host") != host:
            stopped.elsewhere.append(daemon)
        elif daemon.pid is None:
            stopped.failed.append((daemon, "its .info has no pid"))
        else:
            try:
                os.kill(daemon.pid, sig)
            except OSError as e:
                stopped.failed.append((daemon, f"cannot signal pid {daemon.pid}: {e.strerror}"))
            else:
                stopped.signalled.append(daemon)
    return stopped


def wait_stopped(daemons: list[DaemonView], timeout: float) -> list[DaemonView]:
    """Wait until the daemons' locks are free (they exited); returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = list(daemons)
    while alive:
        alive = [d for d in alive if is_alive(d.folder)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(CANCEL_POLL_SECONDS)
    return alive
