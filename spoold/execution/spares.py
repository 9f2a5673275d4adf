"""`isolation = "process"` in the fork server: a fresh fork per job, one always forked ahead (the spare).

The spare has made its session and waits on a pipe, so a job starts with one pipe write, and the fork
for the next job happens while this one runs. The child's output and its outcome come back on two
more pipes, which the server reads as they come; it keeps the output's last OUTPUT_TAIL_BYTES and
passes both on with the child's end (`reply`, as a worker's): a job creates, and the daemon reads and
removes, no file of its own. A process the job left behind outside its group that still holds the
output pipe can go on writing: the server reads and drops it until the pipe's last writer is gone
(for at most DRAIN_LIMIT such pipes at once).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from spoold.execution.child import execute
from spoold.execution.child_setup import become_job_child, redirect_output
from spoold.execution.groups import kill_group
from spoold.execution.preload import Preload, PreloadReport
from spoold.execution.protocol import OUTPUT_TAIL_BYTES, ended, ended_with_reply, send, started, write_all
from spoold.execution.serverloop import Server

NO_CHILD_EXIT = 70  # EX_SOFTWARE: the set-up failed, or no child would start; the job ends as Crashed
# Output pipes of ended jobs kept open for what they left behind: beyond these the oldest is closed (its
# writer then gets EPIPE), so jobs that each leave a process behind cannot run the server out of fds.
DRAIN_LIMIT = 64


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _spare(requests: int, output: int, reports: int, inherited: list[int], server: int) -> None:
    """In a forked spare: become a job child, wait for one request and run it. Never returns."""
    try:
        os.close(become_job_child(server, inherited))
        data = _read_all(requests)
        if not data:
            os._exit(0)  # the server let this spare go unused
        request = json.loads(data)
        redirect_output(output)
        os.close(output)
        os.environ.update(request.get("env", {}))
        execute(request["spec"], watch_parent=False, report_to=reports)
    finally:
        os._exit(NO_CHILD_EXIT)  # execute() exits itself; reaching here means the set-up failed


@dataclass
class Spare:
    pid: int
    requests: int  # the write end of its request pipe
    output: int  # the read ends of the pipes its output and its outcome come on
    reports: int
    tail: bytearray = field(default_factory=bytearray)  # the end of its output, at most twice OUTPUT_TAIL_BYTES
    report: bytearray = field(default_factory=bytearray)

    @property
    def fds(self) -> tuple[int, int]:
        return self.output, self.reports


class SpareServer(Server):
    def __init__(self, *, preload: Preload) -> None:
        super().__init__()
        self.preload = preload
        self.spare: Spare | None = None
        self.running: dict[int, Spare] = {}  # pid -> the child running a job, whose output and outcome are read here
        self.draining: list[int] = []  # output pipes of ended jobs that something the job left still holds

    def prepare(self) -> PreloadReport:
        """The bootstrap and the job modules run here, once: every child forked after inherits them."""
        report = self.preload.run()
        self.fork_spare()
        return report

    def fork_spare(self) -> None:
        read_end, write_end = os.pipe()
        output_read, output_write = os.pipe()
        reports_read, reports_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours = [fd for child in self.running.values() for fd in child.fds] + self.draining
            _spare(read_end, output_write, reports_write,
                   [write_end, output_read, reports_read, self.wakeup_read, self.wakeup_write, *ours], server)
        for fd in (read_end, output_write, reports_write):
            os.close(fd)
        os.set_blocking(output_read, False)
        os.set_blocking(reports_read, False)
        self.spare = Spare(pid, write_end, output_read, reports_read)

    def take_spare(self) -> Spare:
        if self.spare is None:
            self.fork_spare()
        assert self.spare is not None
        spare, self.spare = self.spare, None
        return spare

    def start(self, request: dict[str, Any], raw: bytes) -> None:
        """Hand the request, as the daemon wrote it (`raw`), to the spare; then fork the next spare."""
        for _ in range(2):
            spare = self.take_spare()
            try:
                write_all(spare.requests, raw)
            except BrokenPipeError:  # it died while it waited: reap it, and use a fresh one
                self.forget_spare(spare)
                continue
            finally:
                os.close(spare.requests)
            self.children[spare.pid] = request["id"]
            self.running[spare.pid] = spare
            send(started(request["id"], spare.pid))
            break
        else:
            send(ended(request["id"], NO_CHILD_EXIT))
        self.fork_spare()

    def watched_fds(self) -> list[int]:
        return [*super().watched_fds(), *(fd for child in self.running.values() for fd in child.fds), *self.draining]

    def on_readable(self, readable: list[int]) -> None:
        for child in self.running.values():
            if child.output in readable:
                _read_output(child)
            if child.reports in readable:
                _read_into(child.reports, child.report)
        for fd in [fd for fd in self.draining if fd in readable]:
            if _drained(fd):
                os.close(fd)
                self.draining.remove(fd)

    def send_end(self, pid: int, job_id: str, code: int) -> None:
        """The child's end, with its output's tail and the outcome it wrote (none if it died before it
        could: the daemon then records a crash, as it would for a cut-off result file)."""
        child = self.running.pop(pid, None)
        if child is None:
            send(ended(job_id, code))
            return
        if _read_output(child):
            os.close(child.output)
        else:  # still held open by a process the job left behind
            keep_draining(self.draining, child.output)
        _read_into(child.reports, child.report)
        os.close(child.reports)
        try:
            outcome = json.loads(child.report) if child.report else None
        except ValueError:  # cut off by a kill mid-write
            outcome = None
        output = json.dumps(bytes(child.tail[-OUTPUT_TAIL_BYTES:]).decode("utf-8", "replace")).encode()
        report = b', "report": %s' % bytes(child.report) if isinstance(outcome, dict) else b""
        write_all(1, ended_with_reply(job_id, b'{"output": %s%s}' % (output, report), code))

    def forget_spare(self, spare: Spare) -> None:
        for fd in spare.fds:
            os.close(fd)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(spare.pid, signal.SIGKILL)  # it may not lead its own group yet
        kill_group(spare.pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(spare.pid, 0)

    def reap(self) -> None:
        if self.spare is not None:
            try:
                gone = os.waitpid(self.spare.pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                gone = True
            if gone:  # killed from outside while it waited: the next job forks a new one
                for fd in (self.spare.requests, *self.spare.fds):
                    os.close(fd)
                self.spare = None
        super().reap()

    def shutdown(self) -> None:
        if self.spare is not None:
            self.forget_spare(self.spare)
        super().shutdown()


def _read_into(fd: int, buffer: bytearray, *, keep: int | None = None, reads: int | None = None) -> bool:
    """Append what the pipe `fd` holds now to `buffer` (only its last `keep` bytes kept, at most `reads`
    reads); True once its writers are all gone (end of file)."""
    try:
        for _ in itertools.repeat(None) if reads is None else range(reads):
            chunk = os.read(fd, 65536)
            if not chunk:
                return True
            buffer += chunk
            if keep is not None and len(buffer) > 2 * keep:
                del buffer[:len(buffer) - keep]
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    return False


def _read_output(child: Spare) -> bool:
    """_read_into for the output, which keeps only its end: a job may print without bound, so a pass
    reads at most 1 MiB of it and lets the loop go on."""
    return _read_into(child.output, child.tail, keep=OUTPUT_TAIL_BYTES, reads=16)


def keep_draining(draining: list[int], fd: int, limit: int = DRAIN_LIMIT) -> None:
    """Keep `fd` among the pipes read until their writers are gone, closing the oldest beyond `limit`."""
    draining.append(fd)
    while len(draining) > limit:
        os.close(draining.pop(0))


def _drained(fd: int) -> bool:
    """Read and drop what an ended job's leftover process wrote; True once no one holds the pipe."""
    return _read_into(fd, bytearray(), keep=0, reads=16)
