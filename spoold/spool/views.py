"""Read-only views of a spool for `spoold status`, `list` and `show` (SPEC §6).

Daemons move these files at any moment, so every read here tolerates a file that vanished or is not
(yet) a valid job, and each file is parsed at most once. Nothing here writes to the spool.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spoold.config import Config
from spoold.errors import JobRejected
from spoold.job import decode_document
from spoold.paths import JOB_FOLDERS, JOB_SUFFIX, READY, Folder, SpoolPaths, is_job_name, is_valid_id
from spoold.spool.fsio import read_bounded
from spoold.spool.limits import limits_view
from spoold.spool.lookup import find_job_info
from spoold.spool.node import NOW_KIND, OPERATOR_KIND, is_alive, other_nodes, read_info
from spoold.spool.slots import schedule_view

LIST_FOLDERS: tuple[str, ...] = tuple(folder.value for folder in JOB_FOLDERS)  # plain strings: argparse quotes them
# running/ holds one folder per node; done/ and failed/ may hold day shards (SPEC §2).
NESTED = (Folder.RUNNING, Folder.DONE, Folder.FAILED)
# Nodes that are not daemons: a `spoold retry/cancel` taking a file, a `run_job.py --now` run.
NOT_DAEMONS = (OPERATOR_KIND, NOW_KIND)
# The daemon's own rewrites may exceed max_job_bytes (SPEC §3); this only guards against reading a huge
# stray file into memory.
READ_LIMIT = 64 * 1024 * 1024
FIND_TRIES = 3


@dataclass(frozen=True)
class DaemonView:
    """A live daemon as its `.info` describes it, with `busy` = the job files in its folder now."""

    folder: Path
    info: dict[str, Any]
    busy: int

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def pid(self) -> int | None:
        pid = self.info.get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.info.get("host"), "pid": self.pid,
                "started_at": self.info.get("started_at"), "workers": self.info.get("workers"),
                "busy": self.busy}


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def job_entries(folder: Path, *, nested: bool = False) -> Iterator[os.DirEntry[str]]:
    """The job files of a folder (and, if `nested`, of its visible sub-folders); never follows a symlink."""
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for entry in entries:
            if _is_dir(entry):
                if nested and not entry.name.startswith("."):
                    yield from job_entries(Path(entry.path))
            elif is_job_name(entry.name):
                yield entry


def is_daemon(folder: Path) -> bool:
    """Daemon folders are named HOST-PID-XXXX; operator commands and `--now` runs hold kind-prefixed ones."""
    return not folder.name.startswith(NOT_DAEMONS)


def live_daemons(paths: SpoolPaths) -> list[DaemonView]:
    """Daemons whose lock is held now; a folder whose lock is free belongs to a dead one and is left out."""
    views = []
    for folder in sorted(other_nodes(paths, "")):
        if is_daemon(folder) and is_alive(folder):
            views.append(DaemonView(folder, read_info(folder), sum(1 for _ in job_entries(folder))))
    return views


def count_jobs(paths: SpoolPaths) -> dict[str, int]:
    """Job files per state folder: names only, no stat, so it stays cheap on a large done/."""
    return {name: sum(1 for _ in job_entries(paths.folder(name), nested=name in NESTED)) for name in LIST_FOLDERS}


def count_not_jobs(paths: SpoolPaths) -> dict[str, int]:
    """Entries of each ready folder the daemon leaves alone for good (`notes.txt`, `job.json.swp`, a
    folder), by folder, only where there are some; hidden names (editors' and writers' temp files) are
    not counted. A person who dropped one sees in `spoold status` why it never runs."""
    counts: dict[str, int] = {}
    for priority in READY:
        try:
            entries = os.scandir(paths.ready(priority))
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            found = sum(1 for e in entries if not e.name.startswith(".") and (_is_dir(e) or not is_job_name(e.name)))
        if found:
            counts[priority.value] = found
    return counts


def oldest_ready_since(paths: SpoolPaths) -> float | None:
    """When the oldest ready job entered its folder (its ctime: a rename sets it), or None."""
    oldest: float | None = None
    for priority in READY:
        for entry in job_entries(paths.ready(priority)):
            try:
                ctime = entry.stat(follow_symlinks=False).st_ctime
            except OSError:
                continue
            oldest = ctime if oldest is None else min(oldest, ctime)
    return oldest


def oldest_ready_age(paths: SpoolPaths, now: float) -> float | None:
    """Seconds since the oldest ready job entered its folder, or None."""
    oldest = oldest_ready_since(paths)
    return None if oldest is None else round(max(0.0, now - oldest), 3)


def spool_status(paths: SpoolPaths, now: float, config: Config | None = None) -> dict[str, Any]:
    """The object `spoold status --json` prints; its keys are a contract (SPEC §6), add, never rename.
    With the config, its [schedule] and [concurrency] too (slots.schedule_view, limits.limits_view)."""
    status = {"spool": str(paths.root), "daemons": [d.as_json() for d in live_daemons(paths)],
              "counts": count_jobs(paths), "oldest_ready_age_seconds": oldest_ready_age(paths, now),
              "not_jobs": count_not_jobs(paths)}
    if config is not None:
        status["schedule"] = schedule_view(paths, config, now)
        status["concurrency"] = limits_view(paths, config)
    return status


def read_document(path: Path) -> dict[str, Any] | None:
    """The JSON object in a job file, or None if it is unreadable, gone or not a valid object."""
    try:
        return decode_document(read_bounded(path, READ_LIMIT))
    except (OSError, ValueError, JobRejected):
        return None


def read_reason(paths: SpoolPaths, job_id: str) -> str | None:
    try:
        text = paths.reason_file(job_id).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.splitlines()[0] if text.strip() else ""


def iso_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def place_of(paths: SpoolPaths, path: Path) -> tuple[str, str | None]:
    """(state folder, daemon id or None) of a job file: `running/D/x.json` -> ("running", "D")."""
    parts = path.relative_to(paths.root).parts
    return parts[0], (parts[1] if parts[0] == Folder.RUNNING and len(parts) > 2 else None)


def _text(value: Any, default: str | None = None) -> str | None:
    return value if isinstance(value, str) else default


def job_row(paths: SpoolPaths, path: Path, mtime: float) -> dict[str, Any]:
    """One line of `spoold list`: a file that cannot be parsed still gets a row, with class "?"."""
    folder, daemon = place_of(paths, path)
    job_id = path.name[: -len(JOB_SUFFIX)]
    doc = read_document(path)
    error = doc.get("error") if doc is not None else None
    attempts = doc.get("attempts", 0) if doc is not None else None
    return {
        "id": job_id, "folder": folder,
        "class": _text(doc.get("class"), "?") if doc is not None else "?",
        "method": _text(doc.get("method"), "handle") if doc is not None else "?",
        "attempts": attempts if isinstance(attempts, int) else None,
        "status": _text(doc.get("status")) if doc is not None else None,
        "mtime": iso_time(mtime),
        "error_type": _text(error.get("type")) if isinstance(error, dict) else None,
        "error": _text(error.get("message")) if isinstance(error, dict) else None,
        "run_at": _text(doc.get("run_at")) if doc is not None else None,
        "daemon": daemon,
        "reason": read_reason(paths, job_id) if folder == Folder.REJECTED else None,
        "path": str(path),
    }


def list_jobs(paths: SpoolPaths, folder: str, *, limit: int, class_name: str | None = None) -> list[dict[str, Any]]:
    """Newest first (mtime, then name); only as many files are parsed as the limit and filter need."""
    if folder not in LIST_FOLDERS:
        raise ValueError(f"expected one of {', '.join(LIST_FOLDERS)}, got {folder!r}")
    found: list[tuple[float, str, str]] = []
    for entry in job_entries(paths.folder(folder), nested=folder in NESTED):
        try:
            found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name, entry.path))
        except OSError:
            continue
    found.sort(reverse=True)
    rows: list[dict[str, Any]] = []
    for mtime, _name, path in found:
        if limit > 0 and len(rows) >= limit:
            break
        row = job_row(paths, Path(path), mtime)
        if class_name is None or row["class"] == class_name:
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Shown:
    """A job file found by id: where it is, its document if it parses, its raw bytes, and any reason."""

    id: str
    path: Path
    folder: str
    daemon: str | None
    daemon_alive: bool | None
    document: dict[str, Any] | None
    raw: bytes
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"id": self.id, "folder": self.folder, "path": str(self.path),
                                 "document": self.document}
        if self.daemon is not None:
            shown["daemon"], shown["daemon_alive"] = self.daemon, self.daemon_alive
        if self.folder == Folder.REJECTED or self.document is None:
            shown["reason"] = self.reason
            shown["raw"] = self.raw.decode("utf-8", errors="replace")
        return shown


def show_job(paths: SpoolPaths, job_id: str) -> Shown | None:
    """Find the job in any state folder and read it; a file that moves while we look is looked up again."""
    if not is_valid_id(job_id):
        return None
    for _ in range(FIND_TRIES):
        found = find_job_info(paths, job_id)  # "not found" only after a look in which no folder changed
        if found is None:
            return None
        path = found.path
        reason: str | None = None
        try:
            raw = read_bounded(path, READ_LIMIT)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raw, reason = b"", f"cannot read it: {e}"
        folder, daemon = place_of(paths, path)
        document: dict[str, Any] | None = None
        try:
            document = decode_document(raw) if raw else None
        except JobRejected as e:
            reason = str(e)
        if folder == Folder.REJECTED:
            reason = read_reason(paths, job_id) or reason
        alive = is_alive(path.parent) if daemon is not None else None
        return Shown(job_id, path, folder, daemon, alive, document, raw, reason)
    return None
