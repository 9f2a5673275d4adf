"""Linux: watchdog's own inotify layer, read by the daemon's loop instead of by observer threads.

Between the kernel and the loop, watchdog's observer puts three threads (its inotify reader, its
emitter, its dispatcher), each a wake-up per event. Here the loop waits on the inotify descriptor
beside its other wake-ups (`fileno`) and `pump()` hands the events over in its own thread, so a
dropped job reaches the loop with no hop between threads (docs/design.md, T5). It uses watchdog's
`InotifyFD` (watchdog 7.1 and later), never started as a thread: where that is missing, or on any
other platform, the watcher keeps the observer.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.observers import inotify_c

# What each watch asks the kernel for (the observer's event filters in watcher.py, as inotify masks).
_C: Any = getattr(inotify_c, "InotifyConstants", None)
JOBS, MARKERS, ROOT = "jobs", "markers", "root"


def available() -> bool:
    """watchdog's inotify layer as this module needs it (Linux, watchdog 7.1+)."""
    fd_class = getattr(inotify_c, "InotifyFD", None)
    return _C is not None and fd_class is not None and hasattr(fd_class, "add_callback") and hasattr(
        fd_class, "read_events")


def _mask(kind: str) -> int:
    if kind == ROOT:  # a state folder removed, made or moved
        return int(_C.IN_CREATE | _C.IN_DELETE | _C.IN_MOVED_FROM | _C.IN_MOVED_TO | _C.IN_ONLYDIR)
    if kind == MARKERS:  # `spoold cancel` writes a marker into our folder
        return int(_C.IN_CLOSE_WRITE)
    return int(_C.IN_CREATE | _C.IN_MOVED_TO)  # a job linked, made or moved into a ready folder


class _Folder:
    """watchdog's WatchCallback for one watched folder: its events become the loop's hints."""

    def __init__(self, folder: Path, kind: str, names: set[str], hint: Callable[[str], None],
                 replaced: Callable[[str], None]) -> None:
        self.folder, self.kind, self.names = folder, kind, names
        self.hint, self.replaced = hint, replaced

    def on_event(self, event: Any) -> None:
        name = os.fsdecode(event.name)
        if self.kind == ROOT:
            if event.is_directory and name in self.names:
                self.replaced(os.path.join(self.folder, name))
        elif name and not event.is_directory:
            self.hint(os.path.join(self.folder, name))

    def on_watch_deleted(self, wd: int) -> None:
        """The folder itself went (removed, or moved away): its watch must be made again."""
        if self.kind != ROOT:
            self.replaced(str(self.folder))

    def on_queue_overflow(self) -> None:
        """Events were lost: every watch is renewed, which rescans (docs/design.md, T7)."""
        self.replaced(str(self.folder))


class LoopInotify:
    """The watches of one daemon on one inotify descriptor that its loop reads."""

    def __init__(self, hint: Callable[[str], None], replaced: Callable[[str], None]) -> None:
        self.inotify: Any = inotify_c.InotifyFD()  # its own instance, not watchdog's shared thread
        self.hint, self.replaced = hint, replaced
        self.watches: dict[Path, int] = {}

    def fileno(self) -> int:
        return int(self.inotify._inotify_fd)  # watchdog has no public name for it

    def watch(self, folder: Path, kind: str, names: set[str]) -> None:
        """Watch `folder` (`kind`: JOBS, MARKERS or ROOT; `names`: for ROOT, the folders that matter)."""
        callback = _Folder(folder, kind, names, self.hint, self.replaced)
        self.watches[folder] = self.inotify.add_callback(os.fsencode(folder), _mask(kind), callback, id(self))

    def unwatch(self, folder: Path) -> None:
        wd = self.watches.pop(folder, None)
        if wd is not None:
            self.inotify.remove_callbacks([(wd, id(self))])

    def pump(self, *, readable: bool = False) -> None:
        """Hand over what the kernel has, without blocking (watchdog's read blocks on an empty queue).
        `readable`: the caller's select just found the fd readable; the loop is its only reader."""
        if not readable and not select.select([self.fileno()], [], [], 0)[0]:
            return
        for event in self.inotify.read_events():
            self.inotify.handle_event(event)

    def close(self) -> None:
        self.inotify.close()
