"""Waiting for a job to finish (SPEC §7): a watch on done/, failed/ and rejected/, never a busy poll.

watchdog is imported only when a watch is armed, so `import spoold`, get_job() and submitting stay free
of it. The watch is armed before the first look at the job, so a move that lands in between is either
seen by that look or wakes the waiter; events are only hints and the look decides (docs/design.md, T7).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from spoold.config import Config
from spoold.errors import UnknownJob
from spoold.paths import JOB_SUFFIX, Folder, SpoolPaths
from spoold.spool.lookup import FINAL_STATES, JobFailed, config_of, find_job_info

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)


class FinishWatch:
    """Sets `woken` when a file named `name` is made in, or moved into or out of, one of `folders`.

    Each watch is one non-recursive inotify watch (or the platform's equivalent) and a few threads,
    stopped on exit. If file events cannot be had, `armed` stays False and the waiter looks again
    every `rescan_seconds`, as the daemon does (docs/design.md, F7).
    """

    def __init__(self, folders: list[Path], name: str, *, file_events: bool = True) -> None:
        self.folders, self.name, self.file_events = folders, name, file_events
        self.woken = threading.Event()
        self.observer: BaseObserver | None = None
        self.armed = False

    def __enter__(self) -> FinishWatch:
        if self.file_events:
            self._arm()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None

    def _arm(self) -> None:
        from watchdog.events import FileCreatedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        name, woken = self.name, self.woken

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                for raw in (event.src_path, event.dest_path):
                    if raw and os.path.basename(os.fsdecode(raw)) == name:
                        woken.set()

        try:
            observer = Observer()
            observer.start()
        except OSError as e:
            log.warning("file notifications unavailable (%s); looking at the job every rescan_seconds", e)
            return
        self.observer = observer
        handler = Wake()
        for folder in self.folders:
            try:
                folder.mkdir(exist_ok=True)  # a spool no daemon has started on yet: the daemon makes it too
                # A link or a creation (the daemon's commit) and a rename (a filesystem without links, a mv).
                observer.schedule(handler, str(folder), recursive=False,
                                  event_filter=[FileCreatedEvent, FileMovedEvent])
                self.armed = True
            except OSError as e:
                log.warning("cannot watch %s (%s); looking at the job every rescan_seconds", folder, e)


def wait_in(config: Config, job_id: str, timeout: float | None = None) -> Any:
    """wait_for_job() with a loaded Config: the one owner of waiting, `spoold submit --wait` included."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or math.isnan(timeout)):
        raise TypeError(f"timeout: expected a number of seconds or None, got {timeout!r}")
    paths = SpoolPaths(config.spool_dir)
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    folders = [paths.folder(state) for state in FINAL_STATES]
    with FinishWatch(folders, job_id + JOB_SUFFIX, file_events=config.file_events) as watch:
        while True:
            watch.woken.clear()  # before the look: an event during it keeps the next wait short
            info = find_job_info(paths, job_id, final_first=True)
            if info is None:
                raise UnknownJob(job_id, paths.root)
            if info.state == Folder.DONE:
                return info.result
            if info.state in FINAL_STATES:
                raise JobFailed(info)
            # Armed, a second look is only a safety net for a lost event (an inotify queue overflow).
            pause = config.rescan_seconds
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} is still {info.state} after {timeout:g} s")
                pause = min(pause, left)
            watch.woken.wait(pause)


def wait_for_job(job_id: str, timeout: float | None = None, *,
                 config: str | os.PathLike[str] | None = None) -> Any:
    """Block until the job is finished: its result once in done/; JobFailed once in failed/ or rejected/,
    TimeoutError past `timeout` seconds, UnknownJob if no folder holds it."""
    return wait_in(config_of(config), job_id, timeout)
