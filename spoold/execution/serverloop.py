"""The fork server's loop, shared by its two kinds (spares.py, workerpool.py): requests in, exits out.

Single-threaded, so forking it is safe. Requests arrive on stdin (protocol.py); a SIGCHLD wakes the
`select` through a self-pipe, and every exited child is reported after its leftover process group is
killed (its pid is not freed before, so the kill can never hit a stranger).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
from typing import Any

from spoold.execution.groups import kill_group
from spoold.execution.preload import PreloadReport
from spoold.execution.protocol import ended, send, split_lines


class Server:
    def __init__(self) -> None:
        self.children: dict[int, str] = {}  # pid -> job id
        self.wakeup_read, self.wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_write, False)
        signal.set_wakeup_fd(self.wakeup_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the daemon to handle
        self.buffer = b""

    def prepare(self) -> PreloadReport:
        """Before the first request: the preload run where it belongs, and a child or worker ready.
        Returns the preload's report (preload.py), which the server sends the daemon as it becomes ready."""
        raise NotImplementedError

    def start(self, request: dict[str, Any], raw: bytes) -> None:
        """Run the job of `request` (`raw`: the line as the daemon wrote it) and `send` its pid."""
        raise NotImplementedError

    def reap(self) -> None:
        """Report every exited child; its leftover process group is killed before the pid is freed."""
        for pid in list(self.children):
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            else:
                if info is None:
                    continue
            kill_group(pid)
            try:
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                code = -signal.SIGKILL
            self.send_end(pid, self.children.pop(pid), code)

    def send_end(self, pid: int, job_id: str, code: int) -> None:
        """Tell the daemon a child ended (spares.py adds the output and outcome it sent on its pipes)."""
        send(ended(job_id, code))

    def read_requests(self) -> bool:
        """Start a child for every complete request line; False once the daemon closed our stdin."""
        chunk = os.read(0, 65536)
        if not chunk:
            return False
        lines, self.buffer = split_lines(self.buffer, chunk)
        for line in lines:
            self.handle(json.loads(line), line)
        return True

    def handle(self, request: dict[str, Any], raw: bytes) -> None:
        """One request: a job to start, or a kill."""
        if "kill" in request:
            self.kill(request["kill"])
        else:
            self.start(request, raw)

    def kill(self, job_id: str) -> None:
        for pid, running in self.children.items():
            if running == job_id:
                kill_group(pid)

    def watched_fds(self) -> list[int]:
        return [0, self.wakeup_read]

    def on_readable(self, readable: list[int]) -> None:
        """Hook for the spares (spares.py): their children's pipes are read before exits are reaped."""

    def shutdown(self) -> None:
        for pid in self.children:
            kill_group(pid)

    def serve(self) -> None:
        """The loop, once prepare() has run."""
        while True:
            readable, _, _ = select.select(self.watched_fds(), [], [])
            self.on_readable(readable)
            if self.wakeup_read in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wakeup_read, 4096)
                self.reap()
            if 0 in readable and not self.read_requests():
                break
        self.shutdown()

