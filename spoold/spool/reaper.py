"""The last step of a commit, off the caller's path: removing the claimed copy (docs/design.md, P7).

Once a job's new version is linked into its folder, its old copy in our node folder only waits to be
unlinked, and nothing waits on that. But the unlink is where the filesystem frees the file: on ext4 a
job file whose blocks are on disk (any file a `fsync` submitter wrote, or older than the writeback
delay) takes about 130 µs to unlink, of which 25 µs is CPU and the rest waiting on the filesystem.
The loop (and the committer thread) would sit through that for every job; a thread of its own does it.

A crash before the unlink leaves the copy beside its newer state, which recovery resolves by precedence
(P18), exactly as after a crash between a commit's link and its unlink. What must wait: a job retried
and claimed again at once has the same id, so its next claim (`Intake`) waits until that copy is gone
(after a crash, recovery would find the old copy beside the new claim, with no later state to drop it
for), and so does its next seize (`Mover.seize`), which renames onto the very name waiting here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_SECONDS = 10.0  # a hung mount must not keep a stopping daemon forever
BATCH_SECONDS = 0.01


@dataclass(frozen=True)
class Drop:
    path: Path
    job_id: str
    folder: str  # where its new version is, for the log line when the copy cannot be removed


class Reaper:
    """Unlinks committed claims' copies in our node's `folder`, in a thread; what cannot be removed goes to
    `failed`, for the Mover's stale list (removed later, never committed again). A copy elsewhere (a dead
    node's file that recovery commits) is removed at once by the Mover: that folder is removed next."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.queue: deque[Drop] = deque()
        self.pending: set[Path] = set()  # queued or being unlinked
        self.failed: list[Path] = []
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closing = False
        self.waiting = 0  # callers in wait_for: the batch goes at once

    def drop(self, path: Path, job_id: str, folder: str) -> None:
        with self.changed:
            if self.closing:  # after close: nobody else would unlink it
                if not remove_committed_copy(Drop(path, job_id, folder)):
                    self.failed.append(path)
                return
            self.pending.add(path)
            self.queue.append(Drop(path, job_id, folder))
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="spoold-reaper", daemon=True)
                self.thread.start()
            elif len(self.queue) == 1:
                self.changed.notify_all()  # the thread waits for a first one; later ones need no wake-up

    def wait_for(self, path: Path) -> None:
        """Return once `path` is no longer waiting to be unlinked (at once, nearly always)."""
        if path in self.pending:
            with self.changed:
                self.waiting += 1
                self.changed.notify_all()
                self.changed.wait_for(lambda: path not in self.pending)
                self.waiting -= 1

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> bool:
        """Unlink what is queued, then stop; False if that did not end within `timeout`."""
        with self.changed:
            self.closing = True
            self.changed.notify_all()
            done = self.changed.wait_for(lambda: not self.pending, timeout)
        if not done:
            log.error("%d committed claim copies could not be removed within %.0fs; recovery drops them later",
                      len(self.pending), timeout)
        return done

    def take_failed(self) -> list[Path]:
        with self.changed:
            failed, self.failed = self.failed, []
        return failed

    def _run(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.queue or self.closing)
                if not self.queue:
                    self.thread = None
                    return
                if not self.closing and not self.waiting:
                    self.changed.wait(BATCH_SECONDS)  # let a few gather: one wake-up for several
                batch = list(self.queue)
                self.queue.clear()
            kept = [drop.path for drop in batch if not remove_committed_copy(drop)]
            with self.changed:
                self.pending.difference_update(drop.path for drop in batch)
                self.failed += kept
                self.changed.notify_all()



def remove_committed_copy(drop: Drop) -> bool:
    """Unlink a committed claim's copy; False if it stays (logged): committed all the same, it is removed
    later, never redone."""
    try:
        os.unlink(drop.path)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and not os.path.lexists(drop.path):
            log.warning("job=%s claim %s vanished during commit", drop.job_id, drop.path)
            return True
        log.error("job=%s is in %s/ but %s cannot be removed yet: %s", drop.job_id, drop.folder, drop.path, e)
        return False
    return True
