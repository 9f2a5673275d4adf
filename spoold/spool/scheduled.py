"""scheduled/: one timer for the earliest due job, not a poll of every file (issue 3).

A file is read once when first seen (or when it changes) to learn its due time; a file that cannot be
read or parsed is due at once, so that the intake's checks (settle, reject) deal with it.
"""

from __future__ import annotations

import contextlib
import heapq
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from spoold.errors import JobRejected
from spoold.job import decode_document, parse_time
from spoold.paths import is_job_name
from spoold.spool.fsio import read_bounded


def due_time(doc: dict[str, Any], fallback: float) -> float:
    """When a job may start: `run_at`, else `delay_seconds` after `created_at` (else after `fallback`,
    the time the file was written or seen); 0.0 when it may start at once."""
    if "run_at" in doc:
        return parse_time(doc["run_at"], "run_at").timestamp()
    delay = doc.get("delay_seconds")
    if isinstance(delay, int | float) and not isinstance(delay, bool) and delay > 0:
        base = fallback
        if isinstance(doc.get("created_at"), str):
            with contextlib.suppress(ValueError):
                base = datetime.fromisoformat(doc["created_at"]).timestamp()
        return base + delay
    return 0.0


class ScheduledIndex:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.heap: list[tuple[float, str]] = []
        self.known: dict[str, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self.known)

    def note(self, name: str, due: float, mtime_ns: int = 0) -> None:
        self.known[name] = (mtime_ns, due)
        heapq.heappush(self.heap, (due, name))

    def _look(self, name: str) -> None:
        path = self.folder / name
        try:
            info = os.lstat(path)
        except OSError:
            self.known.pop(name, None)
            return
        seen = self.known.get(name)
        if seen is not None and seen[0] == info.st_mtime_ns:
            return
        try:
            due = due_time(decode_document(read_bounded(path, self.max_bytes)), info.st_mtime)
        except (JobRejected, ValueError, OSError):
            due = 0.0
        self.note(name, due, info.st_mtime_ns)

    def hint(self, path: Path) -> None:
        if path.parent == self.folder and is_job_name(path.name):
            self._look(path.name)

    def rescan(self) -> None:
        try:
            names = [e.name for e in os.scandir(self.folder) if is_job_name(e.name)]
        except FileNotFoundError:
            names = []
        present = set(names)
        for name in list(self.known):
            if name not in present:
                del self.known[name]
        for name in names:
            self._look(name)

    def next_due(self) -> float | None:
        while self.heap and self.known.get(self.heap[0][1], (0, None))[1] != self.heap[0][0]:
            heapq.heappop(self.heap)  # stale entry: the file changed or left
        return self.heap[0][0] if self.heap else None

    def pop_due(self, now: float) -> str | None:
        due = self.next_due()
        if due is None or due > now:
            return None
        _, name = heapq.heappop(self.heap)
        del self.known[name]
        return name
