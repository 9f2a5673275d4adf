"""`isolation = "worker"`: long-lived workers forked from the fork server, each running many jobs.

Throughput over isolation: a worker keeps what its jobs imported, so a job starts in well under a
millisecond, but jobs share the worker's memory and process group. The time limit still holds: the
daemon's kill reaches the worker's whole group, the worker dies, and the next job gets a new one. A
worker retires after `max_jobs_per_worker` jobs, so leaks do not grow without bound.

The server forks the workers and reaps them; the daemon talks to each directly, on a socket pair for
requests and a pipe for replies, whose ends the server passes it over a Unix socket (protocol.py): a
request line in, `{"report", "output"}` out for each job, so a job costs this loop nothing. A worker's
output goes to one file of its own, emptied for each job, and its outcome travels in its reply: no file
per job.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any

from spoold.execution.child import run
from spoold.execution.child_setup import become_job_child, redirect_output
from spoold.execution.groups import kill_group
from spoold.execution.preload import NOTHING_FOUND, Preload, PreloadReport
from spoold.execution.protocol import (
    encode,
    preloaded,
    read_tail,
    send,
    worker_exited,
    worker_output,
    worker_reply,
    write_all,
)
from spoold.execution.serverloop import Server


@dataclass
class Worker:
    """A worker as the server knows it; its pipe ends are -1 once handed to the daemon. `requests`: the worker's
    end of its request socket pair, which the daemon keeps too, to take back a request it has not read."""

    pid: int
    to_worker: int
    from_worker: int
    number: int
    requests: int = -1
    buffer: bytes = b""  # what it said after its preload report, before it was handed over (never so far)


def _work(requests: int, replies: int, max_jobs: int, inherited: list[int], server: int, preload: Preload) -> None:
    """In the forked worker: become a job child, preload (its own bootstrap: nothing it opens is shared with
    another worker), say so, then run one job per request line. Never returns."""
    output: str | None = None
    try:
        devnull = become_job_child(server, inherited)
        write_all(replies, preloaded(preload.run()))
        lines = os.fdopen(requests, "rb")
        out = -1
        for _ in range(max_jobs):
            line = lines.readline()
            if not line:
                break
            request = json.loads(line)
            if output is None:  # O_APPEND: emptied by a truncate, every write lands at its end
                output = worker_output(request["out"], os.getpid())
                out = os.open(output, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            else:
                os.ftruncate(out, 0)
            redirect_output(out)
            os.environ.update(request.get("env", {}))
            outcome = run(request["spec"])
            redirect_output(devnull)
            write_all(replies, worker_reply(outcome, read_tail(out)))
    finally:
        if output is not None:
            with contextlib.suppress(OSError):
                os.unlink(output)
        os._exit(0)


class WorkerServer(Server):
    """Forks workers and hands each one's two pipe ends to the daemon over `channel` (a Unix socket), so a job's
    request and reply pass between the daemon and its worker directly, never through this loop. What stays
    here: the forks, the reaping (an exit is reported by the worker's number), the kills (by number, so a
    reaped pid is never signalled)."""

    def __init__(self, *, max_jobs: int, preload: Preload, channel: int) -> None:
        super().__init__()
        self.max_jobs = max_jobs
        self.preload = preload
        self.channel = socket.socket(fileno=channel)
        self.workers: dict[int, Worker] = {}  # by number
        self.spare: Worker | None = None  # the first worker, forked by prepare(), not handed over yet
        self.numbers = itertools.count(1)

    def prepare(self) -> PreloadReport:
        """One worker ready before the first job; its preload report is the server's."""
        worker = self.spare = self._fork_worker()
        buffer = b""
        while b"\n" not in buffer and (chunk := os.read(worker.from_worker, 65536)):
            buffer += chunk
        line, _, rest = buffer.partition(b"\n")
        if rest:  # never so far: a worker says nothing more before its first request
            worker.buffer = rest
        try:
            report: PreloadReport = json.loads(line)["preloaded"]
        except (ValueError, KeyError):  # it died before it could say: its first job will show why
            report = NOTHING_FOUND
        return report

    def _fork_worker(self) -> Worker:
        # Requests go over a socket pair, not a pipe: the daemon keeps the worker's end too, and takes back
        # a request the worker has not read with recv(MSG_DONTWAIT), which leaves the worker's end blocking.
        to_read, to_write = (end.detach() for end in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
        from_read, from_write = os.pipe()
        sys.stdout.flush()
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            inherited = [to_write, from_read, self.wakeup_read, self.wakeup_write, self.channel.fileno()]
            if self.spare is not None:
                inherited += [self.spare.to_worker, self.spare.from_worker, self.spare.requests]
            _work(to_read, from_write, self.max_jobs, inherited, server, self.preload)
        os.close(from_write)
        worker = Worker(pid, to_write, from_read, number=next(self.numbers), requests=to_read)
        self.workers[worker.number] = worker
        return worker

    def hand_over(self) -> None:
        """A worker for the daemon: the spare if there is one, else a new fork. Its pipe ends go to the daemon
        (SCM_RIGHTS) with its number and pid, and are closed here: only the daemon talks to it from now on."""
        worker, self.spare = self.spare or self._fork_worker(), None
        message = encode({"worker": worker.number, "pid": worker.pid, "early": worker.buffer.decode("latin-1")})
        try:
            socket.send_fds(self.channel, [message], [worker.to_worker, worker.from_worker, worker.requests])
        finally:
            for fd in (worker.to_worker, worker.from_worker, worker.requests):
                os.close(fd)
            worker.to_worker = worker.from_worker = worker.requests = -1

    def handle(self, request: dict[str, Any], raw: bytes) -> None:
        if "worker" in request:
            self.hand_over()
        elif "kill_worker" in request:
            worker = self.workers.get(request["kill_worker"])
            if worker is not None:  # not reaped yet: its pid is still its own
                kill_group(worker.pid)

    def reap(self) -> None:
        """A worker that exited: retired after its last job, or killed (time limit, cancel) mid-job. The
        daemon, which has its pipes, reads any reply it wrote before, then ends its job if it had one."""
        for number, worker in list(self.workers.items()):
            try:
                done, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                done, status = worker.pid, 0
            if done == 0:
                continue
            kill_group(worker.pid)  # whatever its jobs left behind
            for fd in (worker.to_worker, worker.from_worker, worker.requests):
                if fd >= 0:
                    os.close(fd)
            del self.workers[number]
            if worker is self.spare:
                self.spare = None
            send(worker_exited(number, os.waitstatus_to_exitcode(status) or -signal.SIGKILL))

    def shutdown(self) -> None:
        for worker in self.workers.values():
            kill_group(worker.pid)
