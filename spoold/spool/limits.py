"""[concurrency] (SPEC §12): at most N jobs of a class running at once across every daemon on the spool.

A class limited to N has N slots, the lock files `markers/limits/CLASS/0.lock` ... `N-1.lock`. A daemon
takes a free slot (a non-blocking lock) before it claims a job of that class and holds it in its own
process until the job's child exits, so a daemon that dies frees its slots at once: the kernel drops its
locks (or, on GlusterFS, the server, once the client is gone). A job whose class has no free slot is not
claimed at all: it stays in its ready folder, in its place, spending no attempt, and is looked at again
a little later, while jobs of other classes start meanwhile. On a filesystem whose locks stay local to a
host (NFS with `local_lock`), the limit holds per host only (README, "Running on several machines").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from spoold.config import Config
from spoold.paths import SpoolPaths, is_job_name
from spoold.spool.fsio import read_bounded
from spoold.spool.node import spool_lock

RECHECK_SECONDS = 0.2  # how soon a class found full is tried again (a slot another daemon freed)


class Limits:
    """The slots this daemon holds, by job id, and the classes it found full (until when)."""

    def __init__(self, paths: SpoolPaths) -> None:
        self.folder = paths.markers / "limits"
        self.held: dict[str, FileLock] = {}
        self.full_until: dict[str, float] = {}
        self.classes: dict[str, str | None] = {}  # ready file path -> its class, read once

    def class_of(self, path: Path, max_bytes: int) -> str | None:
        """The class a ready file names, read once per file (None if it cannot be read: the intake decides)."""
        key = str(path)
        if key not in self.classes:
            try:
                doc = json.loads(read_bounded(path, max_bytes))
                name = doc.get("class") if isinstance(doc, dict) else None
                self.classes[key] = name if isinstance(name, str) else None
            except (OSError, ValueError):
                return None
        return self.classes[key]

    def forget(self, path: Path) -> None:
        self.classes.pop(str(path), None)

    def reserve(self, config: Config, class_name: str | None, now: float) -> FileLock | bool:
        """A slot of `class_name` now held by us; True if the class has no limit; False if it is full."""
        limit = config.concurrency.get(class_name or "")
        if not limit:
            return True
        if self.full_until.get(class_name or "", 0.0) > now:
            return False
        folder = self.folder / (class_name or "")
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(limit):
            lock = spool_lock(folder / f"{number}.lock")
            try:
                lock.acquire()
            except Timeout:
                continue
            return lock
        self.full_until[class_name or ""] = now + RECHECK_SECONDS
        return False

    def recheck_at(self, class_name: str | None, now: float) -> float:
        """When to look again at a job of a class found full."""
        return self.full_until.get(class_name or "", now)

    def hold(self, job_id: str, slot: FileLock | bool) -> None:
        """The claimed job keeps the slot reserved for it until release(); True (no limit) holds nothing."""
        if isinstance(slot, FileLock):
            self.held[job_id] = slot

    @staticmethod
    def give_back(slot: FileLock | bool) -> None:
        """A reserved slot whose job was not claimed after all."""
        if isinstance(slot, FileLock):
            slot.release(force=True)

    def release(self, job_id: str) -> None:
        """The job's child exited (or never started): its slot is free for any daemon."""
        lock = self.held.pop(job_id, None)
        if lock is not None:
            lock.release(force=True)

    def release_all(self) -> None:
        for job_id in list(self.held):
            self.release(job_id)


def running_by_class(paths: SpoolPaths, max_bytes: int) -> dict[str, int]:
    """How many claimed jobs of each class are in running/ now (every daemon's folder; a few files)."""
    counts: dict[str, int] = {}
    try:
        nodes = [entry.path for entry in os.scandir(paths.running) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return counts
    for node in nodes:
        try:
            names = [name for name in os.listdir(node) if is_job_name(name)]
        except OSError:
            continue
        for name in names:
            try:
                doc = json.loads(read_bounded(os.path.join(node, name), max_bytes))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and isinstance(doc.get("class"), str):
                counts[doc["class"]] = counts.get(doc["class"], 0) + 1
    return counts


def limits_view(paths: SpoolPaths, config: Config) -> list[dict[str, Any]]:
    """[concurrency] for `spoold status` and the dashboard: each limited class, its limit, running now."""
    if not config.concurrency:
        return []
    running = running_by_class(paths, config.max_job_bytes)
    return [{"class": name, "limit": limit, "running": running.get(name, 0)}
            for name, limit in config.concurrency.items()]
