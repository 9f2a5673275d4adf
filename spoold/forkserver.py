"""A warm template for job children (issue 5): a small server that forks one child per job.

The daemon starts it as a fresh interpreter (`python -m spoold.forkserver ROOT NAMESPACE`), so it
inherits none of the daemon's threads, locks or open spool files (notes L5). It imports spoold's
child code and the job namespace once; each job is then a fork (about a millisecond) instead of a
new interpreter (tens of milliseconds). The server is single-threaded, so forking it is safe. One
child is forked ahead (the spare): it has made its session and waits on a pipe, so a job starts with
one pipe write, and the fork for the next job happens after this one has started.

Protocol, one JSON object per line: the daemon writes `{"id", "spec", "out", "env"}` on the server's
stdin (or `{"kill": id}`: SIGKILL that job's group, if the server has not reaped it yet, so a pid is
never signalled after it was freed); the server answers `{"id", "pid"}` when the child runs and
`{"id", "returncode"}` when it has exited (negative: killed by that signal), after killing whatever
the job left in its process group. End of stdin (the daemon closed it, or died) kills every child's
group and ends the server.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send(message: dict[str, Any]) -> None:
    write_all(1, (json.dumps(message) + "\n").encode())


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _spare(requests: int, inherited: list[int], server: int) -> None:
    """In a forked spare: its own session, the daemon's pipes let go at once (so a dead server's EOF
    reaches the daemon), then wait for one request and run it. Never returns."""
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        for fd in (devnull, *inherited):
            with contextlib.suppress(OSError):
                os.close(fd)
        from spoold.child import die_with_parent, execute, exit_with_parent

        if not exit_with_parent(server, PRCTL):
            die_with_parent()
        data = _read_all(requests)
        if not data:
            os._exit(0)  # the server let this spare go unused
        request = json.loads(data)
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.environ.update(request.get("env", {}))
        execute(request["spec"], watch_parent=False)
    finally:
        os._exit(70)  # execute() exits itself; reaching here means the set-up failed


PRCTL: Callable[..., int] | None = None


@dataclass
class Spare:
    pid: int
    requests: int  # the write end of its request pipe


class Server:
    def __init__(self) -> None:
        self.children: dict[int, str] = {}  # pid -> job id
        self.wakeup_read, self.wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_write, False)
        signal.set_wakeup_fd(self.wakeup_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the daemon to handle
        self.buffer = b""
        self.spare: Spare | None = None

    def prepare(self) -> None:
        """Before the first request: fork the spare."""
        self.fork_spare()

    def fork_spare(self) -> None:
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            _spare(read_end, [write_end, self.wakeup_read, self.wakeup_write], server)
        os.close(read_end)
        self.spare = Spare(pid, write_end)

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
            send({"id": request["id"], "pid": spare.pid})
            break
        else:
            send({"id": request["id"], "returncode": 70})  # no child would start: the job ends as Crashed
        self.fork_spare()

    def forget_spare(self, spare: Spare) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(spare.pid, signal.SIGKILL)  # it may not lead its own group yet
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(spare.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(spare.pid, 0)

    def reap(self) -> None:
        """Report every exited child; its leftover process group is killed before the pid is freed."""
        if self.spare is not None:
            try:
                ended = os.waitpid(self.spare.pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                ended = True
            if ended:  # killed from outside while it waited: the next job forks a new one
                os.close(self.spare.requests)
                self.spare = None
        for pid in list(self.children):
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            else:
                if info is None:
                    continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            try:
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                code = -signal.SIGKILL
            send({"id": self.children.pop(pid), "returncode": code})

    def read_requests(self) -> bool:
        """Start a child for every complete request line; False once the daemon closed our stdin."""
        chunk = os.read(0, 65536)
        if not chunk:
            return False
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            request = json.loads(line)
            if "kill" in request:
                self.kill(request["kill"])
            else:
                self.start(request, line)
        return True

    def kill(self, job_id: str) -> None:
        for pid, running in self.children.items():
            if running == job_id:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def watched_fds(self) -> list[int]:
        return [0, self.wakeup_read]

    def on_readable(self, readable: list[int]) -> None:
        """Hook for the worker pool: its workers' replies are read before exits are reaped."""

    def shutdown(self) -> None:
        if self.spare is not None:
            self.forget_spare(self.spare)
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def serve(self) -> None:
        self.prepare()
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


def main() -> None:
    root, namespace = sys.argv[1], sys.argv[2]
    isolation = sys.argv[3] if len(sys.argv) > 3 else "process"
    sys.path.insert(0, root)
    global PRCTL
    child = importlib.import_module("spoold.child")
    PRCTL = child.find_prctl()  # looked up once here, not in every child
    with contextlib.suppress(Exception):  # a broken namespace fails each job with its own error instead
        importlib.import_module(namespace)
    gc.freeze()  # what is loaded now stays out of the collector's way: fewer pages copied in each child
    send({"ready": True})
    if isolation == "worker":
        from spoold.workerpool import WorkerServer

        WorkerServer(max_jobs=int(sys.argv[4])).serve()
    else:
        Server().serve()


if __name__ == "__main__":
    main()
