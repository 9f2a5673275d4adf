"""Watchdog on the ready folders and scheduled/: events only wake the loop, rescans are the truth.

The handler stays O(1) (docs/design.md, T5): it records the paths and wakes the daemon. Any event kind counts
(docs/design.md, T5): a rename from tmp/ can arrive as created, moved or closed depending on the platform.
On a network or FUSE filesystem, where another host's writes make no event (SPEC §11), a Poller lists the
same folders instead (`observer`; mounts.choose_observer decides "auto").
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from spoold.daemon import loopwatch
from spoold.daemon.mounts import choose_observer

log = logging.getLogger(__name__)


def no_move_pairing_delay() -> None:
    """Deliver inotify events at once instead of holding a rename's IN_MOVED_FROM for 0.5 s.

    watchdog holds every IN_MOVED_FROM for `delay` seconds to pair it with its IN_MOVED_TO, and its
    delayed queue makes every event behind it wait too: each claim (a rename out of a ready folder)
    would stall the next job's notification by up to half a second. We never need the pairs (any event
    is only a hint; docs/design.md, T5), so the delay goes. The class is InotifyMoveEventGrouper since watchdog 7,
    InotifyBuffer before.
    """
    for module, name in (("watchdog.observers.inotify_move_event_grouper", "InotifyMoveEventGrouper"),
                         ("watchdog.observers.inotify_buffer", "InotifyBuffer")):
        with contextlib.suppress(ImportError, AttributeError):
            getattr(importlib.import_module(module), name).delay = 0.0


class Waker:
    """A socket pair the loop sleeps on: watcher threads, waiter threads and signals all write to it."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)

    def fileno(self) -> int:
        return self._write.fileno()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: already awake; OSError: closing
            self._write.send(b"\0")

    def sleep(self, timeout: float, also: Iterable[int | None] = ()) -> set[int]:
        """Until woken, or one of `also` (fds: the fork server's messages, the workers' replies, the kernel's
        file events) is readable, or `timeout`. Returns which of `also` are readable, so the caller reads only
        those. poll where there is one: a daemon with hundreds of workers has fds beyond select's limit."""
        own = self._read.fileno()
        fds = [own, *(fd for fd in also if fd is not None)]
        if hasattr(select, "poll"):
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            readable = {fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)}  # POLLHUP and POLLERR count too
        else:  # Windows: sockets only, which the waker is; its daemon has no other fd to wait on
            readable = set(select.select(fds, [], [], max(0.0, timeout))[0])
        if own in readable:  # one read: wake-ups left over keep it readable, for the next sleep to return at once
            readable.discard(own)
            with contextlib.suppress(OSError):  # BlockingIOError: someone else's wake-up was already read
                self._read.recv(4096)
        return readable

    def close(self) -> None:
        self._read.close()
        self._write.close()


class _Hints(FileSystemEventHandler):
    def __init__(self, waker: Waker, folders: Iterable[Path]) -> None:
        self.waker = waker
        self.lock = threading.Lock()
        self.paths: set[str] = set()
        self.folders = {str(folder) for folder in folders}
        self.replaced: set[str] = set()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        raws = [os.fsdecode(raw) for raw in (event.src_path, getattr(event, "dest_path", "")) if raw]
        if event.is_directory:
            if event.event_type not in ("created", "deleted", "moved"):
                return  # "modified" for a folder only says its entries changed: noise (docs/design.md, T5)
            # A watched folder itself was removed, replaced or (re)created: its watch must be renewed.
            replaced = self.folders.intersection(raws)
            if replaced:
                with self.lock:
                    self.replaced.update(replaced)
                self.waker.wake()
            return
        with self.lock:
            self.paths.update(raws)
        self.waker.wake()


POLL_SECONDS = 0.2  # pick-up latency of a job another host dropped: half of it on average
POLL_SHARE = 0.1  # a slow listing (a huge backlog, a slow server) stretches the period: at most this share of a core


class Poller:
    """Lists each folder every POLL_SECONDS; a name not there at the last look is a hint, and wakes the loop.

    Only these folders are read, by name (os.listdir: no stat, nothing under done/), so a poll costs what
    the backlog costs and nothing that grows with done/ (bench/poll_cost.py). watchdog's PollingObserver
    would stat every file of the tree. A folder removed and made again needs no renewal: it is listed by path.
    """

    def __init__(self, folders: Iterable[Path], hints: _Hints) -> None:
        self.folders = list(folders)
        self.hints = hints
        self.seen: dict[Path, set[str]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="spoold-poller", daemon=True)

    def start(self) -> None:
        # What is there now is the first rescan's to find; from here on, anything new is a hint.
        for folder in self.folders:
            self.seen[folder] = self._list(folder)
        self.thread.start()

    @staticmethod
    def _list(folder: Path) -> set[str]:
        try:
            return set(os.listdir(folder))
        except OSError:  # gone (made again at the next rescan), ESTALE, ENOTCONN while the server is away
            return set()

    def poll(self) -> int:
        """One look at every folder; the number of new names, recorded as hints."""
        new: list[str] = []
        for folder in self.folders:
            names = self._list(folder)
            new += [os.path.join(folder, name) for name in names - self.seen.get(folder, set())]
            self.seen[folder] = names
        if new:
            with self.hints.lock:
                self.hints.paths.update(new)
            self.hints.waker.wake()
        return len(new)

    def _run(self) -> None:
        period = POLL_SECONDS
        while not self.stopping.wait(period):
            started = time.monotonic()
            self.poll()
            period = max(POLL_SECONDS, (time.monotonic() - started) / POLL_SHARE)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)  # a listing hung on a dead server is left behind (a daemon thread)


# Which events each watch asks the kernel for (inotify's mask; other platforms filter in watchdog).
# Every other event would cost the daemon's watcher threads work per job for nothing: a job's own
# claim, commit and the reads of it make about nine events; with these masks it makes two.
# Ready folders and scheduled/: a file linked, made or moved in (moves out come with it).
JOB_EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, FileMovedEvent]
# The daemon's folder: `spoold cancel` touches a marker; the claims renamed in are not wanted.
MARKER_EVENTS: list[type[FileSystemEvent]] = [FileClosedEvent]
# The spool root: a state folder removed, made or moved.
FOLDER_EVENTS: list[type[FileSystemEvent]] = [DirCreatedEvent, DirDeletedEvent, DirMovedEvent]


class Watcher:
    """One observer with a non-recursive watch per folder (docs/design.md, T6); degrades to rescans only.

    The spool root is watched too, so a ready folder removed and made again (`rm -r low && mkdir low`)
    is noticed and its watch renewed (docs/design.md, F28); rescans catch what happened in between.
    `markers` is the daemon's own folder, watched only for files written there (cancel markers).
    `observer` (SPEC §11): "native" file events, "polling" (a Poller lists the folders), or "auto": polling
    on a network or FUSE filesystem, where events from other hosts never come.
    """

    def __init__(self, folders: Iterable[Path], waker: Waker, *, root: Path | None = None,
                 markers: Path | None = None, observer: str = "native") -> None:
        self.folders = list(folders)
        self.root = root
        self.markers = markers
        self.observer_setting = observer
        self.hints = _Hints(waker, self.watched())
        self.observer: BaseObserver | None = None
        self.poller: Poller | None = None
        self.inline: loopwatch.LoopInotify | None = None
        self.watches: dict[Path, ObservedWatch] = {}

    def start(self, *, inline: bool = False) -> None:
        """`inline`: on Linux, the caller's loop reads the kernel's events itself (fileno, pump)."""
        kind, why = choose_observer(self.observer_setting, self.folders)
        log.info("observer: %s (%s)", kind, why)
        if kind == "polling":
            self.poller = Poller(self.watched(), self.hints)
            self.poller.start()
            return
        if inline and sys.platform.startswith("linux") and loopwatch.available():
            self._start_inline()
            return
        no_move_pairing_delay()
        try:
            observer = Observer()
            observer.start()
        except OSError as e:
            log.warning("file notifications unavailable (%s); relying on rescans", e)
            return
        self.observer = observer
        if self.root is not None:
            self._watch(self.root)
        for folder in self.watched():
            self._watch(folder)

    def _start_inline(self) -> None:
        try:
            self.inline = loopwatch.LoopInotify(self._hint, self._replaced)
        except OSError as e:
            log.warning("file notifications unavailable (%s); relying on rescans", e)
            return
        log.info("file events: read by the loop (watchdog's inotify layer, no observer threads)")
        if self.root is not None:
            self._watch(self.root)
        for folder in self.watched():
            self._watch(folder)

    def _hint(self, path: str) -> None:
        self.hints.paths.add(path)  # in the loop's own thread: nothing to wake

    def _replaced(self, path: str) -> None:
        self.hints.replaced.add(path)

    def fileno(self) -> int | None:
        """The fd the loop waits on for file events when it reads them itself, else None."""
        return self.inline.fileno() if self.inline is not None else None

    def pump(self, *, readable: bool = False) -> None:
        """Take the kernel's events into the hints, without blocking (inline only). `readable`: the caller's
        select found fileno() readable, so there is something to read."""
        if self.inline is not None:
            try:
                self.inline.pump(readable=readable)
            except OSError as e:  # an inotify read error: events are hints, the rescan is the truth
                log.warning("cannot read file events (%s); renewing the watches", e)
                self.hints.replaced.update(str(folder) for folder in self.watched())

    def watched(self) -> list[Path]:
        return [*self.folders, *([self.markers] if self.markers is not None else [])]

    def _events_for(self, folder: Path) -> list[type[FileSystemEvent]]:
        if folder == self.root:
            return FOLDER_EVENTS
        return MARKER_EVENTS if folder == self.markers else JOB_EVENTS

    def _watch(self, folder: Path) -> None:
        if self.inline is not None:
            kind = loopwatch.ROOT if folder == self.root else (
                loopwatch.MARKERS if folder == self.markers else loopwatch.JOBS)
            try:
                self.inline.watch(folder, kind, {f.name for f in self.watched() if f.parent == self.root})
            except OSError as e:
                log.warning("cannot watch %s (%s); rescans will find its jobs", folder, e)
            return
        assert self.observer is not None
        try:
            self.watches[folder] = self.observer.schedule(self.hints, str(folder), recursive=False,
                                                          event_filter=self._events_for(folder))
        except OSError as e:
            log.warning("cannot watch %s (%s); rescans will find its jobs", folder, e)

    def rearm(self) -> None:
        """Renew the watch of every folder that was removed or made again since the last call.

        By name, not by inode: a folder made again at once often gets the old inode number back.
        """
        with self.hints.lock:
            replaced, self.hints.replaced = self.hints.replaced, set()
        if self.observer is None and self.inline is None:
            return
        for folder in self.watched():
            if str(folder) not in replaced:
                continue
            if not folder.is_dir():
                with self.hints.lock:
                    self.hints.replaced.add(str(folder))  # gone for now: renew once it is back
                continue
            old = self.watches.pop(folder, None)
            if self.inline is not None:
                with contextlib.suppress(KeyError, OSError):
                    self.inline.unwatch(folder)
            elif old is not None and self.observer is not None:
                with contextlib.suppress(KeyError, OSError):
                    self.observer.unschedule(old)
            log.info("watching %s again (it was replaced)", folder)
            self._watch(folder)

    @property
    def rearm_needed(self) -> bool:
        return bool(self.hints.replaced)

    def take_hints(self) -> list[Path]:
        with self.hints.lock:
            paths, self.hints.paths = self.hints.paths, set()
        return [Path(p) for p in paths]

    def stop(self) -> None:
        if self.inline is not None:
            with contextlib.suppress(OSError):
                self.inline.close()
            self.inline = None
        if self.poller is not None:
            self.poller.stop()
            self.poller = None
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None
