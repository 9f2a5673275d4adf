"""Empty files made ahead by a helper process, for a daemon's commits to write into (docs/design.md, P7).

A commit stages each new version of a job in a file of its own in tmp/, and creating that file is the
one step whose cost the filesystem alone decides: 16-27 µs on a journaled ext4, but on an ext4 without
a journal the allocator steps over every inode freed in the last half minute or so, and a busy spool
frees one per job, so a create there costs up to a millisecond, on the CPU of the loop that commits. A
helper process makes the files ahead instead, on another CPU, and a commit opens the next one and writes
into it. Such a file is as private as a staged file always was: empty, hidden in tmp/, under a name
only its daemon uses, until the commit has written it and links it in. Readers see nothing new.
This is for commits without fsyncs (`durability = "fast"`), which the loop makes itself: with fsyncs the
committer thread commits, and its creates hold up nothing (the loop runs on while it waits).

The helper is this file run as a script (stdlib only, no spoold import): it reads lines `N` on its stdin
and makes `PREFIXi.part` for every i below N, in order; at the end of its input it ends, so it never
outlives its daemon. A blank not taken is removed when the daemon stops, and a dead daemon's by whoever
removes its folder (`remove_left`). Where the helper cannot start, is behind, or died, a commit creates
its own file, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)
AHEAD = 64  # blanks asked for beyond the last one taken; asked again once half of them are taken
STOP_TIMEOUT_SECONDS = 2.0
SUFFIX = ".part"  # what tmp/ holds while it is written: reaped once old if its daemon never removed it


def prefix_of(node_id: str) -> str:
    return f".blank-{node_id}-"


def blank_name(prefix: str, number: int) -> str:
    """The name of a node's blank number `number` (`prefix`: prefix_of its id)."""
    return f"{prefix}{number}{SUFFIX}"


class Blanks:
    """One daemon's blanks in `folder` (the spool's tmp/), and the helper that makes them."""

    def __init__(self, folder: Path, node_id: str) -> None:
        self.folder = folder
        self.prefix = prefix_of(node_id)
        self.lock = threading.Lock()  # for whichever thread commits
        self.taken = 0  # the next blank's number
        self.asked = 0  # the helper was asked for every blank below this
        self.helper: subprocess.Popen[bytes] | None = None
        self.started = False  # the helper is started by the first take, once

    def _start(self) -> None:
        """Start the helper (at the first take: a daemon that never commits without fsyncs needs none)."""
        self.started = True
        try:
            self.helper = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), str(self.folder),
                                            self.prefix], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           close_fds=True)
        except OSError as e:
            log.warning("cannot start the helper that makes commit files ahead (%s); commits make their own", e)
            return
        assert self.helper.stdin is not None
        with contextlib.suppress(OSError):  # a full pipe must never hold the loop: a request is then skipped
            os.set_blocking(self.helper.stdin.fileno(), False)
        log.debug("blank-file helper started: pid=%d", self.helper.pid)

    def take(self) -> tuple[Path, int] | None:
        """The next blank, opened for writing: (its path, its fd); None if none is ready (make one then)."""
        with self.lock:
            if not self.started:
                self._start()
            if self.helper is None:
                return None
            path = self.folder / blank_name(self.prefix, self.taken)
            fd = -1
            if self.taken < self.asked:
                try:
                    fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
                except OSError:  # not made yet, or its helper is gone
                    if self.helper.poll() is not None:
                        self._gone(f"exit {self.helper.returncode}")
                        return None
            if fd >= 0:
                self.taken += 1
            if self.asked - self.taken < AHEAD // 2:
                self._ask(self.taken + AHEAD)
            return (path, fd) if fd >= 0 else None

    def _ask(self, upto: int) -> None:
        assert self.helper is not None and self.helper.stdin is not None
        try:
            os.write(self.helper.stdin.fileno(), b"%d\n" % upto)
        except BlockingIOError:  # its pipe is full: it is far behind; asked again at the next take
            return
        except OSError as e:
            self._gone(e.strerror or str(e))
            return
        self.asked = upto

    def _gone(self, why: str) -> None:
        log.warning("the helper that makes commit files ahead ended (%s); commits make their own", why)
        self.helper = None

    def close(self) -> None:
        """End the helper, then remove the blanks it may have made that were not taken."""
        with self.lock:
            helper, self.helper = self.helper, None
        if helper is not None and helper.stdin is not None:
            with contextlib.suppress(OSError):
                helper.stdin.close()
            try:
                helper.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        for number in range(self.taken, self.asked):
            with contextlib.suppress(OSError):
                os.unlink(self.folder / blank_name(self.prefix, number))


def remove_left(folder: Path, node_id: str) -> None:
    """Remove the blanks a dead daemon left in `folder` (tmp/): it was killed before it could."""
    prefix = prefix_of(node_id)
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries if entry.name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))


def make(folder: str, prefix: str) -> None:
    """The helper: make `PREFIXi.part` for each i below the last N read, until the input ends."""
    made = 0
    for line in sys.stdin.buffer:
        try:
            upto = int(line)
        except ValueError:
            continue
        while made < upto:
            path = os.path.join(folder, blank_name(prefix, made))
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644))
            except FileExistsError:
                pass
            except OSError:  # the spool refuses (full, gone): the daemon's commits make their own
                return
            made += 1


if __name__ == "__main__":
    make(sys.argv[1], sys.argv[2])
