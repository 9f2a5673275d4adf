"""Taking a file out of a ready folder (or scheduled/): checks, the settle wait, the claim, validation.

The claim is one rename into our own running/DAEMON/ folder: of all daemons, exactly one rename wins
(docs/design.md, P5). A file that is not a valid job yet may still be being written by hand, so it is rejected
only once it has not changed for `settle_seconds` (SPEC §2).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from spoold.allowlist import check_allowed
from spoold.config import Config
from spoold.errors import JobRejected
from spoold.job import Job, parse_job
from spoold.logs import EventLog
from spoold.paths import JOB_SUFFIX, READY, id_from_name, new_job_id, seized_name, unseized_name
from spoold.spool.fsio import name_exists, read_bounded_stat
from spoold.spool.moves import Mover
from spoold.spool.node import Node
from spoold.spool.unique import take_key

log = logging.getLogger(__name__)


@dataclass
class Claim:
    """A job now in our running/DAEMON/ folder, parsed and allowed."""

    job: Job
    path: Path
    source: str


@dataclass(frozen=True)
class Deferred:
    """Not settled yet: look again at `until`."""

    until: float


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def printable_name(name: str) -> str:
    """A file name as text that JSON and UTF-8 can hold (bytes that are not UTF-8 become escapes)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def parse_allowed(config: Config, data: bytes, job_id: str) -> Job:
    """parse_job plus the allowlist, for the job and every chain step."""
    job = parse_job(data, job_id)
    check_allowed(config.allowed_jobs, job.class_name, job.method)
    for step in job.chain:
        check_allowed(config.allowed_jobs, step["class"], step.get("method", "handle"))
    return job


TRANSIENT_READ_SECONDS = 1.0


@dataclass(frozen=True)
class Read:
    """A job read from a file, with the file's identity when it was read."""

    job: Job
    info: os.stat_result

    def still_matches(self, path: Path) -> bool:
        """True if `path` is the same file, unchanged (a rename keeps inode, size and mtime)."""
        try:
            now = os.lstat(path)
        except OSError:
            return False
        before = self.info
        return (now.st_ino, now.st_dev, now.st_size, now.st_mtime_ns) == (
            before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns)


def read_job(config: Config, path: Path, job_id: str) -> Read:
    """Read and check a job file. JobRejected for what will not change (too large, not readable, invalid);
    other OSErrors (ENOENT, ESTALE, EIO) propagate: they say nothing about the job itself."""
    try:
        try:
            data, info = read_bounded_stat(path, config.max_job_bytes)
        except PermissionError:  # once more: only a lasting refusal rejects a job
            data, info = read_bounded_stat(path, config.max_job_bytes)
    except ValueError as e:
        raise JobRejected(str(e)) from e
    except PermissionError as e:
        raise JobRejected("cannot be read: permission denied") from e
    except IsADirectoryError as e:
        raise JobRejected("not a regular file; never opened") from e
    except OSError as e:
        if e.errno == errno.ELOOP:  # became a symlink after the lstat: O_NOFOLLOW refused it
            raise JobRejected("a symlink, not a job file; never opened") from e
        raise
    return Read(parse_allowed(config, data, job_id), info)


class Intake:
    def __init__(self, node: Node, mover: Mover, events: EventLog) -> None:
        self.node, self.mover, self.events = node, mover, events

    def reject(self, path: Path, reason: str, *, dropped_as: str | None = None) -> None:
        job_id, reason = self.mover.reject(path, reason, dropped_as=dropped_as)
        self.events.rejected(job_id, reason)
        log.info("job=%s rejected: %s", job_id, reason)

    def take(self, config: Config, folder: Path, name: str, now: float, *,
             job_id: str | None = None) -> Claim | Deferred | None:
        """Claim `folder/name`; None when there is nothing to run (gone, a folder, or rejected). `job_id`: the
        id when the name does not give it (a seized claim recovered from a dead daemon)."""
        path = folder / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(info.st_mode):
            return None
        if not stat.S_ISREG(info.st_mode):
            self.reject(path, f"{_kind(info.st_mode)}, not a job file; never opened")
            return None
        settles_at = info.st_mtime + config.settle_seconds
        job_id = job_id or id_from_name(name) or new_job_id()
        early: Read | None = None
        if settles_at > now:
            try:
                early = read_job(config, path, job_id)
            except (JobRejected, OSError):
                return Deferred(settles_at)  # maybe still being written: not run, not rejected
        if not self.mover.may_act():
            return None  # our lease may have ended: we claim nothing more (docs/design.md, H4)
        job_id, target = self._claim_target(job_id)
        try:
            os.rename(path, target)
        except OSError as e:
            # The target in our own folder is the proof: over NFS a retransmitted rename reports an
            # error after succeeding (docs/design.md, P6), and no one else ever renames into our folder.
            if not os.path.lexists(target):
                if isinstance(e, FileNotFoundError) or e.errno == errno.ESTALE:
                    return None  # another daemon (or a person, or another host) took it first
                raise
        self.mover.claims.note()  # not fsynced now: before its commit (moves.ClaimLog)
        if early is not None and early.job.id != job_id:
            early = None
        return self._check_claimed(config, folder, name, target, job_id, now, early)

    def _claim_target(self, job_id: str) -> tuple[str, Path]:
        """The id and name in our folder a claim renames to: a fresh id if ours already holds one of that id.
        A committed copy of the same id that still waits for the reaper (a job retried and claimed again at
        once) is gone first: after a crash it would be recovered beside the new claim (spool/reaper.py)."""
        target = self.node.folder / (job_id + JOB_SUFFIX)
        if name_exists(target):
            job_id = new_job_id()
            target = self.node.folder / (job_id + JOB_SUFFIX)
        if self.mover.reaper is not None:
            self.mover.reaper.wait_for(target.with_name(seized_name(target.name)))
        return job_id, target

    def _check_claimed(self, config: Config, folder: Path, name: str, target: Path, job_id: str,
                       now: float, early: Read | None) -> Claim | Deferred | None:
        """Read the claimed file, unless it is still the very file read just before the claim."""
        try:
            job = early.job if early is not None and early.still_matches(target) else read_job(
                config, target, job_id).job
        except FileNotFoundError:
            log.warning("job=%s claim %s vanished before it was read (lost claim)", job_id, target)
            return None
        except OSError as e:  # ESTALE, EIO...: not the job's fault; put it back and look again soon
            log.warning("job=%s cannot read %s (%s); putting it back", job_id, target, e)
            self.mover.write_back(target, folder / name)
            return Deferred(now + TRANSIENT_READ_SECONDS)
        except JobRejected as e:
            mtime = os.lstat(target).st_mtime
            if mtime + config.settle_seconds > now:
                self.mover.write_back(target, folder / name)  # changed under us: let it settle first
                return Deferred(mtime + config.settle_seconds)
            self.reject(target, str(e), dropped_as=name)
            return None
        if job_id + JOB_SUFFIX != (unseized_name(name) or name):  # a recovered seized claim keeps its name
            job.doc["source_name"] = printable_name(name)
        if folder.name in READY:
            job.doc["priority"] = folder.name  # for a dropped file, the folder wins (SPEC §3): retries go back there
        if self.mover.id_taken(job_id, besides=target):
            job.doc.setdefault("source_name", printable_name(name))
            job.id = new_job_id()
            fresh = self.node.folder / (job.id + JOB_SUFFIX)
            os.rename(target, fresh)
            target = fresh
        if isinstance(key := job.doc.get("unique_key"), str):  # a dropped file, or a submitted job: its key
            try:
                held = take_key(self.mover.paths, key, job.id, durable=self.mover.durable)
            except OSError as e:  # not the job's fault: put it back and look again soon
                log.warning("job=%s cannot take its unique_key (%s); putting it back", job.id, e)
                self.mover.write_back(target, folder / name)
                return Deferred(now + TRANSIENT_READ_SECONDS)
            if held is not None:
                self.reject(target, f"duplicate of {held}", dropped_as=name)
                return None
        return Claim(job, target, folder.name)
