"""`isolation = "process"` in the fork server: a fresh fork per job, one always forked ahead (the spare).

The spare has made its session and waits on a pipe, so a job starts with one pipe write, and the fork
for the next job happens while this one runs. A child writes its outcome on a second pipe, which the
server reads as it comes and passes on with the child's end (`reply`, as a worker's): no result file
is created, read and removed for each job. Its output still goes to its own file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from spoold.execution.child import execute
from spoold.execution.child_setup import become_job_child, take_request
from spoold.execution.groups import kill_group
from spoold.execution.preload import Preload, PreloadReport
from spoold.execution.protocol import ended, ended_with_reply, send, started, write_all
from spoold.execution.serverloop import Server

NO_CHILD_EXIT = 70  # EX_SOFTWARE: the set-up failed, or no child would start; the job ends as Crashed


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _spare(requests: int, reports: int, inherited: list[int], server: int) -> None:
    """In a forked spare: become a job child, wait for one request and run it. Never returns."""
    try:
        os.close(become_job_child(server, inherited))
        data = _read_all(requests)
        if not data:
            os._exit(0)  # the server let this spare go unused
        request = json.loads(data)
        take_request(request)
        execute(request["spec"], watch_parent=False, report_to=reports)
    finally:
        os._exit(NO_CHILD_EXIT)  # execute() exits itself; reaching here means the set-up failed


@dataclass
class Spare:
    pid: int
    requests: int  # the write end of its request pipe
    reports: int  # the read end of the pipe its outcome comes on
    report: bytearray = field(default_factory=bytearray)


class SpareServer(Server):
    def __init__(self, *, preload: Preload) -> None:
        super().__init__()
        self.preload = preload
        self.spare: Spare | None = None
        self.running: dict[int, Spare] = {}  # pid -> the child running a job, whose outcome is read here

    def prepare(self) -> PreloadReport:
        """The bootstrap and the job modules run here, once: every child forked after inherits them."""
        report = self.preload.run()
        self.fork_spare()
        return report

    def fork_spare(self) -> None:
        read_end, write_end = os.pipe()
        reports_read, reports_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            others = [child.reports for child in self.running.values()]
            _spare(read_end, reports_write, [write_end, reports_read, self.wakeup_read, self.wakeup_write, *others],
                   server)
        os.close(read_end)
        os.close(reports_write)
        os.set_blocking(reports_read, False)
        self.spare = Spare(pid, write_end, reports_read)

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
        return [*super().watched_fds(), *(child.reports for child in self.running.values())]

    def on_readable(self, readable: list[int]) -> None:
        for child in self.running.values():
            if child.reports in readable:
                _read_report(child)

    def send_end(self, pid: int, job_id: str, code: int) -> None:
        """The child's end, with the outcome it wrote (none if it died before it could: the daemon then
        records a crash, as it would for a cut-off result file)."""
        child = self.running.pop(pid, None)
        if child is None:
            send(ended(job_id, code))
            return
        _read_report(child)
        os.close(child.reports)
        try:
            outcome = json.loads(child.report) if child.report else None
        except ValueError:  # cut off by a kill mid-write
            outcome = None
        if isinstance(outcome, dict):
            write_all(1, ended_with_reply(job_id, b'{"report": %s}' % bytes(child.report), code))
        else:
            send(ended(job_id, code))

    def forget_spare(self, spare: Spare) -> None:
        os.close(spare.reports)
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
                os.close(self.spare.requests)
                os.close(self.spare.reports)
                self.spare = None
        super().reap()

    def shutdown(self) -> None:
        if self.spare is not None:
            self.forget_spare(self.spare)
        super().shutdown()


def _read_report(child: Spare) -> None:
    """What the child has written of its outcome so far: a large result comes in several reads."""
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(child.reports, 65536):
            child.report += chunk
