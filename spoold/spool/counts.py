"""Job files per state folder, counted again only where a folder changed: what the metrics gauge of SPEC §10
reads at every scrape, without listing an unchanged 100,000-file done/ each time.

Each folder's count is kept with the folder's inode and mtime. An unchanged folder costs one stat. A
changed one is listed again, but a costly one (over CHEAP_SECONDS) not more often than its last listing's
cost allows (COUNT_BUDGET of the time, and at least every MAX_STALE_SECONDS): small folders are exact at
every look, while a large done/ that changes with every finished job is listed every few seconds instead
of at every scrape.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spoold.paths import JOB_FOLDERS, READY, Folder, SpoolPaths, is_job_name

NESTED = (Folder.RUNNING, Folder.DONE, Folder.FAILED)  # a folder per node; day shards (SPEC §2)
COUNT_BUDGET = 0.005  # a changed folder is listed again after 200 times what its last listing took...
MAX_STALE_SECONDS = 30.0  # ...but never later than this...
CHEAP_SECONDS = 0.002  # ...and one that took less than this is listed again at every look: it stays exact
# A listing is trusted while the folder's mtime stays the same only if it began this long after the
# folder's last change: a change in the same tick of the filesystem's clock would not move the mtime.
RACY_SECONDS = 1.0


@dataclass(frozen=True)
class Listing:
    """One folder as last listed: its identity then, its job files, its sub-folders, what it cost."""

    key: tuple[int, int]  # (inode, mtime in ns)
    trusted: bool
    files: int
    oldest: float | None  # the earliest ctime of its job files (ready folders only: a rename sets it)
    subfolders: tuple[str, ...]
    listed_at: float  # monotonic
    cost: float  # seconds


def list_folder(path: Path, *, ages: bool, clock: Callable[[], float] = time.monotonic) -> Listing | None:
    """Count the job files directly in `path` and name its visible sub-folders (never following a symlink);
    None if it is not there."""
    began, wall = clock(), time.time()
    try:
        info = os.stat(path)
        entries = os.scandir(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    files, oldest, subfolders = 0, None, []
    with entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith("."):
                        subfolders.append(entry.name)
                    continue
                if not is_job_name(entry.name):
                    continue
                files += 1
                if ages:
                    ctime = entry.stat(follow_symlinks=False).st_ctime
                    oldest = ctime if oldest is None else min(oldest, ctime)
            except OSError:  # gone meanwhile: a daemon moved it
                continue
    trusted = info.st_mtime < wall - RACY_SECONDS
    return Listing((info.st_ino, info.st_mtime_ns), trusted, files, oldest, tuple(subfolders), began,
                   clock() - began)


class FolderCounts:
    """The job files of every state folder of one spool (`running` = every node's), from cached listings.
    Safe to call from several threads (scrapes may overlap)."""

    def __init__(self, paths: SpoolPaths, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = paths
        self.clock = clock
        self.listings: dict[Path, Listing] = {}
        self.lock = threading.Lock()
        self.listed = 0  # how many folders were listed: what the tests and the benchmark look at

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {str(folder): self._count(self.paths.folder(folder), nested=folder in NESTED,
                                             ages=str(folder) in READY)  # one listing serves oldest_ready too
                    for folder in JOB_FOLDERS}

    def oldest_ready(self) -> float | None:
        """When the oldest ready job entered its folder (its ctime), or None when nothing is ready."""
        with self.lock:
            oldest = None
            for priority in READY:
                path = self.paths.ready(priority)
                self._count(path, nested=False, ages=True)
                listing = self.listings.get(path)
                if listing is not None and listing.oldest is not None:
                    oldest = listing.oldest if oldest is None else min(oldest, listing.oldest)
            return oldest

    def _count(self, path: Path, *, nested: bool, ages: bool) -> int:
        listing = self._look(path, ages=ages)
        if listing is None:
            return 0
        total = listing.files
        if nested:
            total += sum(self._count(path / name, nested=False, ages=False) for name in listing.subfolders)
        return total

    def _look(self, path: Path, *, ages: bool) -> Listing | None:
        held = self.listings.get(path)
        try:
            info = os.stat(path)
        except OSError:
            self._forget(path)
            return None
        if held is not None:
            unchanged = held.key == (info.st_ino, info.st_mtime_ns) and held.trusted
            wait = min(MAX_STALE_SECONDS, held.cost / COUNT_BUDGET) if held.cost >= CHEAP_SECONDS else 0.0
            if unchanged or self.clock() - held.listed_at < wait:
                return held
        listing = list_folder(path, ages=ages, clock=self.clock)
        self.listed += 1
        if listing is None:
            self._forget(path)
            return None
        if held is not None:
            for gone in set(held.subfolders) - set(listing.subfolders):
                self._forget(path / gone)
        self.listings[path] = listing
        return listing

    def _forget(self, path: Path) -> None:
        for cached in [p for p in self.listings if p == path or path in p.parents]:
            del self.listings[cached]
