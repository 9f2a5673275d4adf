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

Once a commit has linked a blank into place, its name in tmp/ is the helper's to remove too: an unlink in
tmp/ waits for the folder's lock, which the helper's create holds for as long as the allocator takes, and
waiting for it there spun the loop's CPU (a median of 35 µs, a tenth of them above 650 µs per job on a
journal-less ext4). The helper's own creates and unlinks come one after the other. The names are sent in
batches: FLUSH_AT at a time, or what is left when the loop is about to sleep with no job running or once
the oldest waited FLUSH_SECONDS. Until then a committed file has a second, hidden name in tmp/.

The helper is this file run as a script (stdlib only, no spoold import): it reads lines on its stdin,
`N` to make `PREFIXi.part` for every i below N, in order, and `ri` to remove `PREFIXi.part`; at the end
of its input it ends, so it never outlives its daemon. A blank not taken, or not yet removed, is removed
when the daemon stops, and a dead daemon's by whoever removes its folder (`remove_left`). Where the helper
cannot start, is behind, or died, a commit creates its own file and removes its names itself, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)
AHEAD = 64  # blanks asked for beyond the last one taken; asked again once half of them are taken
FLUSH_AT = 16  # linked blanks whose tmp/ names are sent to the helper together (the loop's sleep sends the rest)
FLUSH_SECONDS = 1.0  # or once the oldest of them was released this long ago, at the loop's next sleep
MAX_RELEASED = 1024  # names held back for a helper whose pipe stays full, beyond which the daemon removes them
PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # a pipe write up to this size is never split (POSIX: at least 512)
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
        self.linked: list[int] = []  # blanks linked into place whose tmp/ names the helper is yet to be told of
        self.linked_since = 0.0  # time.monotonic() of the first of them

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

    def release(self, path: Path) -> bool:
        """`path`, a blank, is linked into place: True if the helper removes its name in tmp/ (told with the
        next batch), False if the caller must (not one of ours, or no helper)."""
        with self.lock:
            number = self._number(path)
            if number is None or self.helper is None:
                return False
            if not self.linked:
                self.linked_since = time.monotonic()
            self.linked.append(number)
            if len(self.linked) >= FLUSH_AT:
                self._send(b"")
            return True

    def flush(self, *, idle: bool) -> None:
        """Before the loop sleeps: tell the helper of the names released since the last batch, if the loop
        is `idle` (no job running: it may sleep long) or the oldest was released FLUSH_SECONDS ago. While
        jobs run, a write per pass would wake the helper once or twice per job."""
        with self.lock:
            if self.linked and self.helper is not None and (
                    idle or time.monotonic() - self.linked_since >= FLUSH_SECONDS):
                self._send(b"")

    def _number(self, path: Path) -> int | None:
        name = path.name
        if path.parent != self.folder or not name.startswith(self.prefix) or not name.endswith(SUFFIX):
            return None
        digits = name[len(self.prefix):-len(SUFFIX)]
        return int(digits) if digits.isdigit() else None

    def _ask(self, upto: int) -> None:
        if self._send(b"%d\n" % upto):
            self.asked = upto

    def _send(self, order: bytes) -> bool:
        """Write the released names' removals, then `order` (a line, or nothing); False if not all of it
        was written (a full pipe: the helper is far behind; what is left waits for the next write).

        Each write holds whole lines and at most PIPE_BUF bytes, so that it is written whole or not at all:
        the pipe is non-blocking, and a longer write could stop inside a line."""
        assert self.helper is not None and self.helper.stdin is not None
        lines = [b"r%d\n" % number for number in self.linked] + ([order] if order else [])
        sent = 0
        while sent < len(lines):
            chunk: list[bytes] = []
            size = 0
            for line in lines[sent:]:
                if chunk and size + len(line) > PIPE_BUF:
                    break
                chunk.append(line)
                size += len(line)
            try:
                os.write(self.helper.stdin.fileno(), b"".join(chunk))
            except BlockingIOError:
                break
            except OSError as e:
                self._gone(e.strerror or str(e))
                return False
            sent += len(chunk)
        del self.linked[:sent]
        if len(self.linked) >= MAX_RELEASED:  # a helper that reads nothing (stopped?) must not hold them all
            self._remove_released()
        return sent == len(lines)

    def _gone(self, why: str) -> None:
        log.warning("the helper that makes commit files ahead ended (%s); commits make their own", why)
        self.helper = None
        self._remove_released()

    def _remove_released(self) -> None:
        self._remove(self.linked)
        self.linked.clear()

    def _remove(self, numbers: Iterable[int]) -> None:
        for number in numbers:
            with contextlib.suppress(OSError):
                os.unlink(self.folder / blank_name(self.prefix, number))

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
        self._remove_released()  # the helper was never told of them
        self._remove(range(self.taken, self.asked))


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
    """The helper: make `PREFIXi.part` for each i below the last N read, remove it when `ri` is read, until
    the input ends."""
    made = 0
    for line in sys.stdin.buffer:
        removal = line.startswith(b"r")
        try:
            number = int(line[1:] if removal else line)
        except ValueError:
            continue
        if removal:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, blank_name(prefix, number)))
            continue
        while made < number:
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
