"""Watchdog on the ready folders and scheduled/: events only wake the loop, rescans are the truth.

The handler stays O(1) (notes W10): it records the paths and wakes the daemon. Any event kind counts
(notes W4): a rename from tmp/ can arrive as created, moved or closed depending on the platform.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
from collections.abc import Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)


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

    def sleep(self, timeout: float) -> None:
        select.select([self._read], [], [], max(0.0, timeout))
        try:
            while self._read.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self._read.close()
        self._write.close()


class _Hints(FileSystemEventHandler):
    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self.lock = threading.Lock()
        self.paths: set[str] = set()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write") or event.is_directory:
            return
        with self.lock:
            for raw in (event.src_path, getattr(event, "dest_path", "")):
                if raw:
                    self.paths.add(os.fsdecode(raw))
        self.waker.wake()


class Watcher:
    """Starts one observer with a non-recursive watch per folder (notes W2); degrades to rescans only."""

    def __init__(self, folders: Iterable[Path], waker: Waker) -> None:
        self.folders = list(folders)
        self.hints = _Hints(waker)
        self.observer: BaseObserver | None = None

    def start(self) -> None:
        try:
            observer = Observer()
            for folder in self.folders:
                observer.schedule(self.hints, str(folder), recursive=False)
            observer.start()
        except OSError as e:
            log.warning("file notifications unavailable (%s); relying on rescans", e)
            return
        self.observer = observer

    def take_hints(self) -> list[Path]:
        with self.hints.lock:
            paths, self.hints.paths = self.hints.paths, set()
        return [Path(p) for p in paths]

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None
