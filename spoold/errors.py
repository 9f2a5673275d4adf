"""The project's exceptions: one base class, one class per way things go wrong."""

from __future__ import annotations

import errno
from pathlib import Path

# Exit codes of every command (SPEC §6).
EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job failed (--wait, --now); for retry/cancel/show: an id could not be acted on
EXIT_USAGE = 2  # usage, configuration or invalid job
EXIT_SPOOL = 3  # the spool could not be written


class SpooldError(Exception):
    """Base class of every error spoold raises on purpose."""


class ConfigError(SpooldError):
    """Raised when bgjobs.toml cannot be found, read or has a bad key; nothing starts."""

    def __init__(self, path: Path | None, key: str, problem: str) -> None:
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")
        self.path, self.key, self.problem = path, key, problem


class JobRejected(SpooldError):
    """Raised when a job document is invalid; str() is the one line written to ID.reason."""


class SubmitError(SpooldError, ValueError):
    """Raised when run_background_job() refuses a job; nothing was written."""


class SpoolWriteError(SpooldError):
    """Raised when the spool cannot be written (disk full, permissions, I/O error)."""


class BatchWriteError(SpoolWriteError):
    """Raised when run_background_jobs() could not write every job of a checked batch; `written` holds the
    ids of those that are in the spool anyway (empty when it failed before any was moved in)."""

    def __init__(self, message: str, written: list[str]) -> None:
        super().__init__(message)
        self.written = written

    def __reduce__(self) -> tuple[type[BatchWriteError], tuple[str, list[str]]]:
        return BatchWriteError, (str(self), self.written)


class UnknownJob(SpooldError, LookupError):
    """Raised when wait_for_job() finds no job with this id in any folder of the spool."""

    def __init__(self, job_id: str, spool: Path) -> None:
        super().__init__(f"no job {job_id} in the spool {spool}")
        self.job_id, self.spool = job_id, spool

    def __reduce__(self) -> tuple[type[UnknownJob], tuple[str, Path]]:
        return UnknownJob, (self.job_id, self.spool)


class JobNotFound(JobRejected):
    """Raised in a job's child when an allowed class or method does not exist in the job namespace."""


class NameTaken(SpooldError, FileExistsError):
    """Raised when the destination name of a no-replace move is already taken (and only then)."""

    def __init__(self, dst: Path) -> None:
        super().__init__(errno.EEXIST, "name taken", str(dst))


class LostClaim(SpooldError):
    """Raised when our running/DAEMON/ copy of a job is gone: someone moved it; its result is not written back."""


class Fenced(LostClaim):
    """Raised instead of a move out of a claim once the node's lease may have ended: another host may have
    taken the job over, so nothing is written for it (SPEC §11; docs/design.md, H4)."""


class NotAJob(SpooldError):
    """Raised when a file an operator command took is not a valid job document; it was put back where it was."""
