"""In-memory index of ready jobs: claiming costs the same whatever the backlog (notes S2).

Fed by full rescans (the truth) and by watcher hints (the speed). Each ready folder keeps a heap
ordered by when a file entered it (st_ctime), then by name, so the oldest job runs first.
"""

from __future__ import annotations

import heapq
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from spoold.paths import READY, SpoolPaths, is_job_name


@dataclass
class _Folder:
    heap: list[tuple[int, str]] = field(default_factory=list)
    members: set[str] = field(default_factory=set)


class ReadyIndex:
    """Which files wait in high/, medium/, low/, and which are put off until they settle."""

    def __init__(self, paths: SpoolPaths) -> None:
        self.paths = paths
        self.folders = {priority: _Folder() for priority in READY}
        self.deferred: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        return sum(len(f.members) for f in self.folders.values()) + len(self.deferred)

    def add(self, priority: str, name: str, entered_ns: int) -> None:
        folder = self.folders[priority]
        if name in folder.members or (priority, name) in self.deferred:
            return
        folder.members.add(name)
        heapq.heappush(folder.heap, (entered_ns, name))

    def hint(self, path: Path) -> None:
        """A watcher saw `path` change: index it if it is a job file in a ready folder."""
        priority = path.parent.name
        if priority not in self.folders or path.parent.parent != self.paths.root or not is_job_name(path.name):
            return
        try:
            info = os.lstat(path)
        except OSError:
            return
        if not stat.S_ISDIR(info.st_mode):
            self.add(priority, path.name, info.st_ctime_ns)

    def defer(self, priority: str, name: str, until: float) -> None:
        """Look at this file again at `until` (a hand-written file that has not settled yet)."""
        self.deferred[(priority, name)] = until

    def rescan(self, now: float) -> None:
        """Rebuild from the folders; events are only hints (notes W1, W8)."""
        for priority in READY:
            folder = _Folder()
            try:
                entries = os.scandir(self.paths.ready(priority))
            except FileNotFoundError:
                entries = None
            if entries is not None:
                with entries:
                    for entry in entries:
                        if not is_job_name(entry.name) or (priority, entry.name) in self.deferred:
                            continue
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if not stat.S_ISDIR(info.st_mode):
                            folder.members.add(entry.name)
                            folder.heap.append((info.st_ctime_ns, entry.name))
            heapq.heapify(folder.heap)
            self.folders[priority] = folder

    def next_due(self) -> float | None:
        return min(self.deferred.values(), default=None)

    def pop(self, now: float, *, aging_seconds: float = 0.0) -> tuple[str, str] | None:
        """The next (priority, name) to try: high before medium before low, oldest first.

        With aging, a job counts one level higher for every `aging_seconds` it has waited, and among
        equal levels the one that entered its folder first wins; only each folder's oldest can win.
        """
        if self.deferred:
            for key, until in list(self.deferred.items()):
                if until <= now:
                    del self.deferred[key]
                    self.hint(self.paths.ready(key[0]) / key[1])
        best: tuple[int, int, str] | None = None
        for level, priority in enumerate(READY):
            heap = self.folders[priority].heap
            if not heap:
                continue
            entered_ns = heap[0][0]
            if aging_seconds > 0:
                level = max(0, level - int(max(0.0, now - entered_ns / 1e9) // aging_seconds))
            if best is None or (level, entered_ns) < best[:2]:
                best = (level, entered_ns, priority)
            if aging_seconds <= 0:
                break  # strict order: the first non-empty folder wins
        if best is None:
            return None
        folder = self.folders[best[2]]
        _, name = heapq.heappop(folder.heap)
        folder.members.discard(name)
        return best[2], name
