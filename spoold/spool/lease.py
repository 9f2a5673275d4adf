"""Leases between hosts (SPEC §11; docs/design.md, section 9): a heartbeat each node renews, and the
checker's view of everyone else's, timed by the checker's own monotonic clock.

Locks may not cross hosts (NFS with local locks), and a frozen process keeps its lock (SIGSTOP, a paused
VM), so a lock alone cannot say that a daemon of another host is dead. Every node therefore renews
`running/NODE/.heartbeat`, a counter, every `heartbeat_seconds`. A checker never compares clocks: it
notes, on its own monotonic clock, when it last saw a node's counter change, and counts the node dead
once it has not seen a change for `lease_seconds`. The node itself stops renewing, and fences itself
(its jobs killed, nothing more written for them), once `lease_seconds - 2 x heartbeat_seconds` have
passed since its last renewal began: before any checker can decide it is dead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HEARTBEAT_NAME = ".heartbeat"
FENCE_CHECK_SECONDS = 0.2


def fence_margin(heartbeat_seconds: float) -> float:
    """How long before its lease ends a node stops: two renewals' worth, so one slow renewal is not fatal."""
    return 2 * heartbeat_seconds


def write_heartbeat(folder: Path, count: int) -> None:
    """The counter, whole: written beside, then renamed over (a reader never sees half of it)."""
    part = folder / f"{HEARTBEAT_NAME}.part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{count}\n".encode())
    finally:
        os.close(fd)
    os.replace(part, folder / HEARTBEAT_NAME)


def read_heartbeat(folder: Path) -> bytes | None:
    """The counter as the checker sees it now; None if there is none (yet, or any more)."""
    try:
        with open(folder / HEARTBEAT_NAME, "rb") as handle:
            return handle.read(64)
    except OSError:  # ENOENT, and ESTALE on a network filesystem, alike
        return None


class Heartbeat:
    """A node's own lease: renewed by one thread, watched by another.

    The renewal may block for as long as the filesystem hangs; the watcher does not touch the spool, so it
    fences on time even then. `fenced` never goes back to False: a node whose lease may have ended must
    not act on its jobs again (another host may have taken them over); it leaves and joins again anew.
    """

    def __init__(self, folder: Path, *, heartbeat_seconds: float, lease_seconds: float,
                 on_fence: Callable[[], None] = lambda: None) -> None:
        self.folder = folder
        self.heartbeat_seconds, self.lease_seconds = heartbeat_seconds, lease_seconds
        self.on_fence = on_fence
        self.count = 0
        self.renewed_at = time.monotonic()  # when the last renewal that worked began
        self.fenced = False
        self.fence_reason = ""
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    @property
    def good_until(self) -> float:
        """The monotonic time past which this node must not act on its jobs."""
        return self.renewed_at + self.lease_seconds - fence_margin(self.heartbeat_seconds)

    def ok(self) -> bool:
        """True while this node may still claim and commit: its lease is surely its own."""
        if self.fenced:
            return False
        if time.monotonic() >= self.good_until:
            self.fence(f"no renewal for {time.monotonic() - self.renewed_at:.1f}s")
            return False
        return True

    def renew(self) -> bool:
        """One renewal; it counts only if it began while the lease was still good."""
        began = time.monotonic()
        if not self.ok():
            return False
        try:
            write_heartbeat(self.folder, self.count + 1)
        except OSError as e:
            log.warning("cannot renew the lease in %s: %s", self.folder, e)
            return False
        with self.lock:
            self.count += 1
            if not self.fenced:
                self.renewed_at = max(self.renewed_at, began)
        return True

    def fence(self, reason: str) -> None:
        with self.lock:
            if self.fenced:
                return
            self.fenced, self.fence_reason = True, reason
        log.error("lease of %s lost (%s): its jobs are stopped and left to the others", self.folder.name, reason)
        self.on_fence()

    def start(self) -> None:
        """Keep renewing and watching; the first heartbeat was written before the node was published."""
        for target, name in ((self._renew_loop, "lease-renew"), (self._watch_loop, "lease-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=1)  # a renewal stuck on a hung mount is left to die with the process

    def _renew_loop(self) -> None:
        while not self.stopping.wait(self.heartbeat_seconds) and not self.fenced:
            self.renew()

    def _watch_loop(self) -> None:
        while not self.stopping.wait(FENCE_CHECK_SECONDS) and not self.fenced:
            self.ok()


@dataclass
class Seen:
    """A checker's memory of one other node: the counter, and when (our monotonic clock) it last changed."""

    value: bytes | None
    since: float


@dataclass
class LeaseBook:
    """What one checker has seen of every other node's heartbeat (docs/design.md, H2)."""

    lease_seconds: float
    seen: dict[str, Seen] = field(default_factory=dict)

    def expired(self, folder: Path, now: float | None = None) -> bool:
        """True once `folder`'s heartbeat has not been seen to change for lease_seconds of our own clock.

        A node first seen now starts its lease now: a checker that just started waits a whole lease.
        """
        now = time.monotonic() if now is None else now
        value = read_heartbeat(folder)
        seen = self.seen.get(folder.name)
        if seen is None or seen.value != value:
            self.seen[folder.name] = Seen(value, now)
            return False
        return now - seen.since >= self.lease_seconds

    def forget(self, names: set[str]) -> None:
        """Drop what we remember of nodes whose folders are gone."""
        self.seen = {name: seen for name, seen in self.seen.items() if name in names}
