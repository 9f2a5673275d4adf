"""Job lists for the dashboard: newest first, paged, filtered, reading only the files a page shows.

"Newest first" is the order of the ids, descending: the ids spoold makes start with their UTC time
(20261128-192615-...), so for them it is the order of submission; a dropped `foo.json` keeps the id
`foo` and sorts by its name. The names of a folder are listed (never stat'ed) and cached per folder by
its (mtime, size, inode), so a page of an unchanged 100,000-file folder reads its 50 files and no more.
Filters need the documents: they scan newest first and stop after SCAN_BUDGET files or SCAN_SECONDS,
and the page says how far it got, so the next page continues the scan where this one stopped.
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spoold.dashboard.diskcache import DiskCache
from spoold.paths import JOB_SUFFIX, READY, Folder, SpoolPaths
from spoold.spool.views import LIST_FOLDERS, job_entries, read_document, read_reason

SCAN_BUDGET = 5_000
SCAN_SECONDS = 0.15  # a filter reads documents for at most this long per page, then says how far it got
MAX_LIMIT = 500
PERSIST_FROM = 1_000  # folders with fewer names are listed faster than their cache is read
RACY_SECONDS = 1.0  # a folder changed within the last second may change again within its mtime's tick


@dataclass(frozen=True)
class Filters:
    class_name: str | None = None
    method: str | None = None
    priority: str | None = None
    error_type: str | None = None
    text: str | None = None

    @property
    def any(self) -> bool:
        return any((self.class_name, self.method, self.priority, self.error_type, self.text))

    def match(self, row: dict[str, Any], doc: dict[str, Any] | None) -> bool:
        if self.class_name and row["class"] != self.class_name:
            return False
        if self.method and row["method"] != self.method:
            return False
        if self.priority and row["priority"] != self.priority:
            return False
        if self.error_type and row["error_type"] != self.error_type:
            return False
        return not self.text or self.text.lower() in searchable_text(doc).lower()


def searchable_text(doc: dict[str, Any] | None) -> str:
    """What `q` matches: params, result and error (type, message, traceback), as JSON-ish text."""
    if doc is None:
        return ""
    parts = [repr(doc.get("params")), repr(doc.get("result"))]
    error = doc.get("error")
    if isinstance(error, dict):
        parts += [str(error.get(key, "")) for key in ("type", "message", "traceback")]
    return "\n".join(parts)


@dataclass
class _Listed:
    key: tuple[int, int, int]
    ids: list[str]  # ascending


@dataclass
class NameCache:
    """The job ids of each flat folder, sorted, kept while the folder's (mtime, size, inode) stays the same:
    an unchanged 100,000-file folder costs one stat per request, a changed one a listing and a sort."""

    folders: dict[Path, _Listed] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    disk: DiskCache = field(default_factory=lambda: DiskCache(None))

    def ids(self, folder: Path) -> list[str]:
        try:
            info = os.stat(folder)
        except OSError:
            return []
        key = (info.st_mtime_ns, info.st_size, info.st_ino)
        with self.lock:
            listed = self.folders.get(folder)
        if listed is not None and listed.key == key:
            return listed.ids
        name = f"names-{folder.name}"
        saved = self.disk.load(name) if listed is None else None  # a first look: maybe an earlier run's list
        if isinstance(saved, dict) and saved.get("key") == list(key) and isinstance(saved.get("ids"), list):
            ids = [str(job_id) for job_id in saved["ids"]]
        else:
            ids = sorted(entry.name[: -len(JOB_SUFFIX)] for entry in job_entries(folder))
            if time.time() - info.st_mtime > RACY_SECONDS and len(ids) >= PERSIST_FROM:
                self.disk.save(name, {"key": list(key), "ids": ids})
        if time.time() - info.st_mtime > RACY_SECONDS:  # a key younger than that may hide a later change
            with self.lock:
                self.folders[folder] = _Listed(key, ids)
        return ids

    def count(self, folder: Path) -> int:
        return len(self.ids(folder))


@dataclass(frozen=True)
class Page:
    jobs: list[dict[str, Any]]
    next: str | None
    total: int  # job files in the state, matching or not
    scanned: int  # documents read to fill the page
    scan_stopped: bool  # the filter's scan hit its budget before the page was full


@dataclass(frozen=True)
class StateFiles:
    """The job ids of a state, ascending, and where each one's file is."""

    ids: list[str]
    folder: Path | None  # None for running/: each daemon has its folder
    nested: dict[str, Path] = field(default_factory=dict)

    def path(self, job_id: str) -> Path:
        return self.folder / (job_id + JOB_SUFFIX) if self.folder is not None else self.nested[job_id]

    def newest_first(self, below: str | None) -> Iterator[str]:
        end = len(self.ids) if below is None else bisect.bisect_left(self.ids, below)
        return (self.ids[i] for i in range(end - 1, -1, -1))


def state_files(paths: SpoolPaths, state: str, cache: NameCache) -> StateFiles:
    if state == Folder.RUNNING:
        nested = {entry.name[: -len(JOB_SUFFIX)]: Path(entry.path) for entry in job_entries(paths.running, nested=True)}
        return StateFiles(sorted(nested), None, nested)
    folder = paths.folder(state)
    return StateFiles(cache.ids(folder), folder)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def job_entry(paths: SpoolPaths, state: str, job_id: str, path: Path,
              doc: dict[str, Any] | None) -> dict[str, Any]:
    """One entry of `GET /api/jobs` (SPEC §9); a file that does not parse still gets one."""
    doc = doc or {}
    error = doc.get("error")
    priority = _text(doc.get("priority")) or (state if state in READY else None)
    attempts = doc.get("attempts", 0)
    entry = {"id": job_id, "state": state, "class": _text(doc.get("class")),
             "method": _text(doc.get("method")) or ("handle" if doc else None), "priority": priority,
             "attempts": attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else None,
             "status": _text(doc.get("status")),
             "error_type": _text(error.get("type")) if isinstance(error, dict) else None,
             "created_at": _text(doc.get("created_at")), "finished_at": _text(doc.get("finished_at")),
             "run_at": _text(doc.get("run_at")), "path": str(path)}
    if state == Folder.REJECTED:
        entry["reason"] = read_reason(paths, job_id)
    return entry


def list_page(paths: SpoolPaths, state: str, filters: Filters, *, limit: int, cursor: str | None,
              cache: NameCache) -> Page:
    """One page, newest first, of the jobs in `state` below `cursor` (the last id of the page before)."""
    if state not in LIST_FOLDERS:
        raise ValueError(f"state: expected one of {', '.join(LIST_FOLDERS)}, got {state!r}")
    files = state_files(paths, state, cache)
    ordered = files.newest_first(cursor)
    if not filters.any:
        shown = list(itertools.islice(ordered, limit + 1))
        page = [job_entry(paths, state, job_id, files.path(job_id), read_document(files.path(job_id)))
                for job_id in shown[:limit]]
        return Page(page, shown[limit - 1] if len(shown) > limit else None, len(files.ids), len(page), False)
    jobs: list[dict[str, Any]] = []
    scanned, last = 0, None
    stop_at = time.monotonic() + SCAN_SECONDS
    for job_id in ordered:
        if scanned >= SCAN_BUDGET or (scanned and time.monotonic() >= stop_at):
            return Page(jobs, last, len(files.ids), scanned, True)
        doc = read_document(files.path(job_id))
        scanned, last = scanned + 1, job_id
        entry = job_entry(paths, state, job_id, files.path(job_id), doc)
        if filters.match(entry, doc):
            if len(jobs) == limit:
                return Page(jobs, jobs[-1]["id"], len(files.ids), scanned, False)
            jobs.append(entry)
    return Page(jobs, None, len(files.ids), scanned, False)


def matching(paths: SpoolPaths, state: str, filters: Filters, cache: NameCache, *, cap: int) -> list[str]:
    """Every id in `state` that matches the filter (a bulk action's set), up to `cap` + 1."""
    files = state_files(paths, state, cache)
    if not filters.any:
        return list(itertools.islice(files.newest_first(None), cap + 1))
    found: list[str] = []
    for job_id in files.newest_first(None):
        doc = read_document(files.path(job_id))
        if filters.match(job_entry(paths, state, job_id, files.path(job_id), doc), doc):
            found.append(job_id)
            if len(found) > cap:
                break
    return found
