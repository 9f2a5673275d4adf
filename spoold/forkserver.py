"""A warm template for job children (issue 5): a small server that forks one child per job.

The daemon starts it as a fresh interpreter (`python -m spoold.forkserver ROOT NAMESPACE`), so it
inherits none of the daemon's threads, locks or open spool files (notes L5). It imports spoold's
child code and the job namespace once; each job is then a fork (about a millisecond) instead of a
new interpreter (tens of milliseconds). The server is single-threaded, so forking it is safe.

Protocol, one JSON object per line: the daemon writes `{"id", "spec", "out", "env"}` on the server's
stdin (or `{"kill": id}`: SIGKILL that job's group, if the server has not reaped it yet, so a pid is
never signalled after it was freed); the server answers `{"id", "pid"}` when the child runs and
`{"id", "returncode"}` when it has exited (negative: killed by that signal), after killing whatever
the job left in its process group. End of stdin (the daemon closed it, or died) kills every child's
group and ends the server.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import sys
from pathlib import Path
from typing import Any


def send(message: dict[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


def _run_child(request: dict[str, Any], wakeup_read: int, wakeup_write: int) -> None:
    """In the forked child: own session, output to the job's file, then the job itself. Never returns."""
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        for fd in (out, devnull, wakeup_read, wakeup_write):
            os.close(fd)
        os.environ.update(request.get("env", {}))
        from spoold.child import execute

        execute(Path(request["spec"]))
    finally:
        os._exit(70)  # execute() exits itself; reaching here means the set-up failed


class Server:
    def __init__(self) -> None:
        self.children: dict[int, str] = {}  # pid -> job id
        self.wakeup_read, self.wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_write, False)
        signal.set_wakeup_fd(self.wakeup_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the daemon to handle
        self.buffer = b""

    def start(self, request: dict[str, Any]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request, self.wakeup_read, self.wakeup_write)
        self.children[pid] = request["id"]
        send({"id": request["id"], "pid": pid})

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
                self.start(request)
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
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def serve(self) -> None:
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
    importlib.import_module("spoold.child")
    with contextlib.suppress(Exception):  # a broken namespace fails each job with its own error instead
        importlib.import_module(namespace)
    send({"ready": True})
    if isolation == "worker":
        from spoold.workerpool import WorkerServer

        WorkerServer(max_jobs=int(sys.argv[4])).serve()
    else:
        Server().serve()


if __name__ == "__main__":
    main()
