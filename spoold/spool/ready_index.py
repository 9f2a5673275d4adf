"""In-memory index of ready jobs: claiming costs the same whatever the backlog (docs/design.md, T2).

Fed by full rescans (the truth) and by watcher hints (the speed). Each ready folder keeps a heap
ordered by when a file entered it (st_ctime), then by name, so the oldest job runs first.
"""

from __future__ import annotations

import heapq
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from spoold.paths import READY, SpoolPaths, is_job_name

log = logging.getLogger(__name__)

SCAN_CHUNK = 2000  # entries a rescan reads at once: a backlog this small is ordered before any job starts
SCAN_STEP = 250  # entries read per pass of the loop after that (about 2 ms), so jobs keep flowing
# Once the index holds enough jobs to run (the loop decides), a scan under way is paced by time instead:
# a slice of reading (SCAN_SLICE seconds at most) is followed by a pause nine times its length.
SCAN_SHARE = 0.1
SCAN_SLICE = 0.001


@dataclass
class _Folder:
    heap: list[tuple[int, str]] = field(default_factory=list)
    members: set[str] = field(default_factory=set)


@dataclass
class _Scan:
    """A rescan under way: which folder it reads, and what it has found so far."""

    folders: Iterator[str]
    fresh: dict[str, _Folder]
    hinted: dict[tuple[str, str], int] = field(default_factory=dict)  # indexed by an event meanwhile
    taken: set[tuple[str, str]] = field(default_factory=set)  # popped meanwhile: the loop has them
    shared: bool = False  # the index was empty: the scan fills it directly, nothing to swap or double
    priority: str | None = None
    entries: Iterator[os.DirEntry[str]] | None = None
    close: Callable[[], None] = lambda: None
    next_slice_at: float = 0.0  # monotonic: when rescan_paced may read on


class ReadyIndex:
    """Which files wait in high/, medium/, low/, and which are put off until they settle."""

    def __init__(self, paths: SpoolPaths) -> None:
        self.paths = paths
        self.folders: dict[str, _Folder] = {priority: _Folder() for priority in READY}
        self.deferred: dict[tuple[str, str], float] = {}
        self.scan: _Scan | None = None

    def __len__(self) -> int:
        return sum(len(f.members) for f in self.folders.values()) + len(self.deferred)

    def add(self, priority: str, name: str, entered_ns: int) -> None:
        if self.scan is not None:
            self.scan.hinted[(priority, name)] = entered_ns
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

    @property
    def scanning(self) -> bool:
        return self.scan is not None

    def rescan(self, now: float, *, whole: bool = False) -> None:
        """Start rebuilding from the folders (events are only hints; docs/design.md, T7) and read the first
        SCAN_CHUNK entries now; `whole` reads them all before returning.

        What a scan finds is indexed as it is read, so with a large backlog jobs start while the scan
        goes on (in the order found until it ends); when it ends, the scan's view replaces the index,
        which drops files that left without an event.
        """
        self.close()  # a scan started over (a folder was replaced): let go of the old listing now
        if not any(folder.members for folder in self.folders.values()):
            self.scan = _Scan(iter(READY), self.folders, shared=True)
        else:
            self.scan = _Scan(iter(READY), {str(priority): _Folder() for priority in READY})
        while not self.rescan_step(SCAN_CHUNK) and whole:
            pass

    def close(self) -> None:
        """Let go of a scan under way (its open folder listing)."""
        if self.scan is not None:
            self.scan.close()
            self.scan = None

    def rescan_paced(self) -> bool:
        """Read on for one slice (SCAN_SLICE), if the last slice is SCAN_SHARE behind us: a large backlog's
        scan then takes a tenth of the loop's time from the jobs it has found, whatever one entry costs on
        this filesystem (docs/design.md, T2). True once the scan has ended."""
        scan = self.scan
        if scan is None:
            return True
        began = time.monotonic()
        if began < scan.next_slice_at:
            return False
        ended = self.rescan_step(SCAN_CHUNK, until=began + SCAN_SLICE)
        scan.next_slice_at = began + (time.monotonic() - began) / SCAN_SHARE
        return ended

    def paced_due(self) -> float | None:
        """Monotonic time of a paced scan's next slice; None if no scan runs."""
        return None if self.scan is None else self.scan.next_slice_at

    def rescan_step(self, budget: int = SCAN_STEP, *, until: float | None = None) -> bool:
        """Read up to `budget` more entries of the scan under way, and none after `until` (monotonic; at
        least one is read); True once it has ended (or none runs)."""
        scan = self.scan
        if scan is None:
            return True
        read = 0
        while read < budget and (until is None or not read or time.monotonic() < until):
            if scan.entries is None:
                scan.priority = next(scan.folders, None)
                if scan.priority is None:
                    break
                try:
                    listing = os.scandir(self.paths.ready(scan.priority))
                except FileNotFoundError:
                    continue
                except OSError as e:
                    return self._abandon(e)
                scan.entries, scan.close = listing, listing.close
            try:
                entry = next(scan.entries, None)
            except OSError as e:
                return self._abandon(e)
            if entry is None:
                scan.close()
                scan.entries = None
                continue
            read += 1
            self._scanned(scan, entry)
        else:
            return False
        self._swap_in(scan)
        return True

    def _abandon(self, error: OSError) -> bool:
        """A ready folder cannot be listed (a hung or cut-off network mount: ENOTCONN, EIO): this scan ends
        here and the index keeps what it knew; the next rescan tries again."""
        log.warning("cannot list the ready folders (%s); the next rescan tries again", error)
        self.close()
        return True

    def _swap_in(self, scan: _Scan) -> None:
        """The scan has ended: its view, plus what events added meanwhile, minus what was popped."""
        self.scan = None
        if scan.shared:
            return
        for (priority, name), entered_ns in scan.hinted.items():
            fresh = scan.fresh[priority]
            if name in self.folders[priority].members and name not in fresh.members:
                fresh.members.add(name)
                fresh.heap.append((entered_ns, name))
        for priority, name in scan.taken - scan.hinted.keys():
            scan.fresh[priority].members.discard(name)
        for folder in scan.fresh.values():
            folder.heap = [(ns, name) for ns, name in folder.heap if name in folder.members]
            heapq.heapify(folder.heap)
        self.folders = scan.fresh

    def _scanned(self, scan: _Scan, entry: os.DirEntry[str]) -> None:
        assert scan.priority is not None
        key = (scan.priority, entry.name)
        if not is_job_name(entry.name) or key in self.deferred or key in scan.taken:
            return
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            return
        if stat.S_ISDIR(info.st_mode):
            return
        fresh = scan.fresh[scan.priority]
        if not scan.shared and entry.name not in fresh.members:
            fresh.members.add(entry.name)
            fresh.heap.append((info.st_ctime_ns, entry.name))
        live = self.folders[scan.priority]
        if entry.name not in live.members:  # startable at once, before the scan has ended
            live.members.add(entry.name)
            heapq.heappush(live.heap, (info.st_ctime_ns, entry.name))

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
        if self.scan is not None:
            self.scan.taken.add((best[2], name))
            self.scan.hinted.pop((best[2], name), None)
        return best[2], name
