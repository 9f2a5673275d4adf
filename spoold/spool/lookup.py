"""Reading one job back by id while daemons move it (SPEC §7): JobInfo, get_job, JobFailed.

A job's folder is its state, and a daemon may move the file between two looks. So the folders are looked
at in the order a job moves through them (a move forwards is always caught: the file is looked for in its
new folder after its old one), and each look is one open() (found and read at once, never a stat then a
read). A move backwards (a retry, a promotion, an operator's `mv`) can slip past a pass, so a pass that
finds nothing counts only if no folder it looked in changed meanwhile (their mtimes, taken before and
after); otherwise it is made again.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spoold.config import Config, find_config, load_config
from spoold.errors import JobRejected, SpooldError
from spoold.job import decode_document
from spoold.paths import JOB_SUFFIX, Folder, SpoolPaths, is_valid_id, seized_name
from spoold.spool.fsio import read_bounded
from spoold.spool.submit import cached_config

# The life cycle: scheduled -> ready (by priority) -> running/DAEMON/ -> done, failed or rejected.
SEARCH_ORDER: tuple[Folder, ...] = (Folder.SCHEDULED, Folder.HIGH, Folder.MEDIUM, Folder.LOW, Folder.RUNNING,
                                    Folder.DONE, Folder.FAILED, Folder.REJECTED)
FINAL_STATES: tuple[Folder, ...] = (Folder.DONE, Folder.FAILED, Folder.REJECTED)
# How long get_job keeps looking while the folders keep changing under it (a busy spool, or the race test's
# process moving one file around as fast as it can) before it gives up and says "not found".
GIVE_UP_SECONDS = 2.0
READ_LIMIT = 64 * 1024 * 1024  # the daemon's own rewrites may exceed max_job_bytes (SPEC §3)
_GONE = (errno.ENOENT, errno.ENOTDIR)


@dataclass(frozen=True)
class JobInfo:
    """A job as found in the spool just now. `state` is its folder (the truth: a claimed job's `status`
    still says "ready" while it runs); `doc` is the whole document, {} if the file is not a JSON object
    (a file being dropped by hand, or a rejected one); `reason` is the line of ID.reason for a rejected job."""

    id: str
    state: str
    path: Path
    status: str | None
    attempts: int
    result: Any
    error: dict[str, Any] | None
    doc: dict[str, Any] = field(repr=False)
    reason: str | None = None

    @classmethod
    def of(cls, job_id: str, state: str, path: Path, doc: dict[str, Any], reason: str | None = None) -> JobInfo:
        status, attempts, error = doc.get("status"), doc.get("attempts", 0), doc.get("error")
        return cls(job_id, state, path, status if isinstance(status, str) else None,
                   attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0,
                   doc.get("result"), error if isinstance(error, dict) else None, doc, reason)


class JobFailed(SpooldError):
    """Raised by wait_for_job() once the job is in failed/ or rejected/; `.job` is what was found there.

    Defined here, not in errors.py, because it carries a JobInfo (errors.py imports nothing of spoold).
    """

    def __init__(self, job: JobInfo) -> None:
        if job.state == Folder.REJECTED:
            message = f"job {job.id} was rejected: {job.reason or 'no reason recorded yet'}"
        elif job.error is not None:
            message = f"job {job.id} failed: {job.error.get('type')}: {job.error.get('message')}"
        else:
            message = f"job {job.id} failed"
        super().__init__(message)
        self.job = job

    def __reduce__(self) -> tuple[type[JobFailed], tuple[JobInfo]]:
        return JobFailed, (self.job,)  # rebuilt from the job (pickle, multiprocessing), not the message


def config_of(config: str | os.PathLike[str] | None) -> Config:
    """The Config a caller named (else found as in SPEC §4), cached until the file changes."""
    path = find_config(config)
    try:
        return cached_config(path)
    except OSError:
        return load_config(path)  # raises the ConfigError that names the file


def _read_reason(paths: SpoolPaths, job_id: str) -> str | None:
    try:
        text = paths.reason_file(job_id).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.splitlines()[0] if text.strip() else ""


def _folders(paths: SpoolPaths) -> list[tuple[Folder, str, bool]]:
    """(state, folder, seized) of every place the job may be, in the order of SEARCH_ORDER; running/ is
    listed now. Each node folder comes twice: under the job's claimed name, and after the final states
    under its seized name (`.ID.json.moving`, docs/design.md, H3): a job being committed is only there
    between its seize and its link, and once linked its copy there waits for the reaper (P7)."""
    root = os.fspath(paths.root)
    folders: list[tuple[Folder, str, bool]] = []
    nodes: list[str] = []
    for state in SEARCH_ORDER:
        folder = os.path.join(root, state)
        if state != Folder.RUNNING:
            folders.append((state, folder, False))
            continue
        try:
            with os.scandir(folder) as entries:
                nodes = [entry.path for entry in entries if not entry.name.startswith(".") and _is_dir(entry)]
        except OSError:
            continue
        folders.extend((state, node, False) for node in nodes)
    folders.extend((Folder.RUNNING, node, True) for node in nodes)
    return folders


def _versions(folders: list[str]) -> list[tuple[int, int] | None]:
    """Each folder's (inode, mtime in ns): an entry added, removed or renamed changes its folder's mtime.

    Sound where a change right after a stat gets a newer mtime: Linux >= 6.13 on ext4, xfs, btrfs and tmpfs
    (multigrain timestamps); elsewhere a change within one clock tick of the stat may go unseen.
    """
    versions: list[tuple[int, int] | None] = []
    for folder in folders:
        try:
            info = os.stat(folder)
        except OSError:
            versions.append(None)
            continue
        versions.append((info.st_ino, info.st_mtime_ns))
    return versions


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _look(paths: SpoolPaths, job_id: str, state: Folder, path: str) -> JobInfo | None:
    """The job if its file is at `path` now: one open, so a file that moves away is simply not here."""
    try:
        raw = read_bounded(path, READ_LIMIT)
    except OSError as e:
        if e.errno in _GONE or not os.path.lexists(path) or (os.path.isdir(path) and not os.path.islink(path)):
            return None  # gone, a folder we may not look in, or a directory (never a job, SPEC §2)
        raw = b""  # there but unreadable (a symlink, a FIFO, no permission): found, with no document
    except ValueError:
        raw = b""  # larger than READ_LIMIT
    try:
        doc = decode_document(raw) if raw else {}
    except JobRejected:
        doc = {}
    reason = _read_reason(paths, job_id) if state == Folder.REJECTED else None
    return JobInfo.of(job_id, state.value, Path(path), doc, reason)


def _look_in(paths: SpoolPaths, job_id: str, folders: list[tuple[Folder, str, bool]]) -> JobInfo | None:
    name = job_id + JOB_SUFFIX
    for state, folder, seized in folders:
        info = _look(paths, job_id, state, os.path.join(folder, seized_name(name) if seized else name))
        if info is not None:
            return info
    return None


def find_job_info(paths: SpoolPaths, job_id: str, *, final_first: bool = False) -> JobInfo | None:
    """The job wherever it is now, or None once a pass found it nowhere while none of its folders changed.

    A move is a link, then an unlink (docs/design.md, P2): for a moment the job is in both folders, and
    the search in life-cycle order finds its old copy. `final_first` looks in done/, failed/ and
    rejected/ before that, for a waiter woken by the link.
    """
    if not is_valid_id(job_id):
        return None
    found = None
    if final_first:
        found = _look_in(paths, job_id, [(state, os.path.join(paths.root, state), False) for state in FINAL_STATES])
    if found is None:
        found = _look_in(paths, job_id, _folders(paths))  # a job that exists is almost always found here
    running = os.path.join(paths.root, Folder.RUNNING)
    give_up = time.monotonic() + GIVE_UP_SECONDS
    while found is None:
        listed = _versions([running])  # before the listing: a node folder made after it changes running/
        folders = _folders(paths)
        watched = [folder for _, folder, _ in folders]
        before = listed + _versions(watched)
        found = _look_in(paths, job_id, folders)
        if found is None and (_versions([running, *watched]) == before or time.monotonic() > give_up):
            return None
    return found


def get_job(job_id: str, *, config: str | os.PathLike[str] | None = None) -> JobInfo | None:
    """The job with this id as it is now (JobInfo), or None if no folder of the spool holds it."""
    return find_job_info(SpoolPaths(config_of(config).spool_dir), job_id)
