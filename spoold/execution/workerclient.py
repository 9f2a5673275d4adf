"""The daemon's side of worker isolation: the fork server forks the workers, the daemon talks to them.

Each worker's two pipe ends come from the server over a Unix socket (protocol.py). A job's request is
written straight into an idle worker's pipe and its reply read straight from the worker's other pipe,
so a job wakes no process but its worker: without this, the server passed each request and reply on,
four hand-overs per job instead of two. The server still reaps the workers and kills their groups (by
number: a reaped worker's pid is never signalled), and reports each exit; the daemon reads whatever
reply the worker wrote before it, then ends the job it still had, if any, with the exit code and the
worker's output file. Inline only: the daemon's loop waits on `filenos()` and calls `pump()`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from spoold.config import Config
from spoold.execution.forkclient import START_TIMEOUT_SECONDS, ForkServerLauncher
from spoold.execution.process import ChildProcess
from spoold.execution.protocol import (
    encode,
    is_worker_reply,
    kill_worker_request,
    read_available,
    split_lines,
    start_request,
    worker_output,
    worker_request,
    write_all,
)

log = logging.getLogger(__name__)


@dataclass
class WorkerPipes:
    """One worker as the daemon knows it: its pipes, its job, how many it was given."""

    number: int
    pid: int
    to_worker: int
    from_worker: int
    job_id: str | None = None
    jobs: int = 0  # given so far; at max_jobs_per_worker it retires, so it is never given another
    buffer: bytes = b""
    ended: bool = False  # its pipe reached its end: it exited, and the server's report follows
    output: str | None = None  # its output file (protocol.worker_output), known from its first request


class WorkerPoolLauncher(ForkServerLauncher):
    def __init__(self, config: Config) -> None:
        super().__init__(config, inline=True)
        self.channel: socket.socket | None = None  # our end of the current server's Unix socket
        self.workers: dict[int, WorkerPipes] = {}  # by number

    def _server_fds(self) -> tuple[int, ...]:
        if self.channel is not None:
            self.channel.close()
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.channel.settimeout(START_TIMEOUT_SECONDS)
        return (theirs.detach(),)

    def launch(self, child: ChildProcess, spec: dict[str, Any], env: dict[str, str],
               on_exit: Callable[[str], None]) -> None:
        """Write the job's request to an idle worker (a new one if none is idle) and return."""
        job_id = child.job.id
        out = child.scratch_name(".out")
        request = encode(start_request(job_id, spec, out, env))
        with self.lock:
            for _ in range(2):
                worker = self._idle_worker()
                try:
                    write_all(worker.to_worker, request)  # a large request may take more than one write
                    break
                except BrokenPipeError:  # it died while idle, so it read nothing: its exit report follows
                    worker.ended = True
            else:
                raise OSError("the fork server's workers died before they could take the job")
            worker.job_id, worker.jobs = job_id, worker.jobs + 1
            worker.output = worker.output or worker_output(out, worker.pid)
            child.pid = worker.pid
            number = worker.number
            child.kill_group = lambda: self._kill_worker(number)
            self.waiting[job_id], self.exits[job_id] = child, on_exit

    def _idle_worker(self) -> WorkerPipes:
        """Called with the lock held. OSError if the server gives no worker (the claim is then undone)."""
        self._ensure_server()  # a server that died since the last pass: its workers are gone with it
        max_jobs = self.config.max_jobs_per_worker
        for worker in self.workers.values():
            if worker.job_id is None and worker.jobs < max_jobs and not worker.ended:
                return worker
        self._send(worker_request())
        assert self.channel is not None
        try:
            message, fds, _, _ = socket.recv_fds(self.channel, 65536, 2)
        except OSError as e:
            raise OSError(f"the fork server gave no worker: {e}") from e
        if len(fds) != 2 or not message.endswith(b"\n"):  # one small send: a stream socket keeps it whole
            for fd in fds:
                os.close(fd)
            raise OSError("the fork server gave no worker: it ended" if not message else
                          f"the fork server's answer was cut short: {message[:100]!r}")
        for fd in fds:
            os.set_inheritable(fd, False)  # none of the daemon's other children gets a worker's pipe
        info = json.loads(message)
        worker = WorkerPipes(info["worker"], info["pid"], fds[0], fds[1],
                             buffer=str(info.get("early", "")).encode("latin-1"))
        os.set_blocking(worker.from_worker, False)
        self.workers[worker.number] = worker
        return worker

    def _kill_worker(self, number: int) -> None:
        with self.lock, contextlib.suppress(OSError):
            if self.proc is not None and self.proc.poll() is None:  # a dead server's workers died with it
                self._send(kill_worker_request(number))

    def filenos(self) -> list[int]:
        return [*super().filenos(), *(w.from_worker for w in self.workers.values() if w.job_id and not w.ended)]

    def pump(self, readable: Collection[int] | None = None) -> None:
        """The server's messages (a worker's exit among them), then the busy workers' replies: those the
        loop's sleep found readable, or all of them when it does not say."""
        super().pump()
        for worker in [w for w in self.workers.values() if w.job_id is not None and not w.ended]:
            if readable is None or worker.from_worker in readable:
                self._read_replies(worker)

    def _read_replies(self, worker: WorkerPipes) -> None:
        data, ended = read_available(worker.from_worker)  # a reply holds a result: it may be large
        worker.ended = worker.ended or ended
        lines, worker.buffer = split_lines(worker.buffer, data)
        for line in lines:
            if not is_worker_reply(line):  # its preload report: a later worker's failure shows in its jobs
                continue
            job_id, worker.job_id = worker.job_id, None
            if job_id is None:
                log.error("worker %d (pid %d) sent a reply with no job", worker.number, worker.pid)
                continue
            try:
                reply = json.loads(line)
            except ValueError:
                reply = None  # recorded as a crash: the outcome it sent cannot be read
            self._ended(job_id, 0, reply if isinstance(reply, dict) else None)

    def _handle(self, message: dict[str, Any]) -> None:
        if "worker_exited" not in message:
            super()._handle(message)
            return
        with self.lock:
            worker = self.workers.pop(message["worker_exited"], None)
        if worker is None:
            return
        self._read_replies(worker)  # a reply written just before it exited still counts
        self._close(worker)
        if worker.job_id is not None:  # its job's output is in the worker's file: the daemon reads it
            self._ended(worker.job_id, int(message.get("returncode") or -signal.SIGKILL), None, worker.output)

    @staticmethod
    def _close(worker: WorkerPipes) -> None:
        for fd in (worker.to_worker, worker.from_worker):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _server_gone(self, proc: Any) -> None:
        """Its workers died with it: what they replied first counts, the rest end as the base class says."""
        with self.lock:
            workers, self.workers = list(self.workers.values()), {}
        for worker in workers:
            if worker.job_id is not None:
                self._read_replies(worker)
            self._close(worker)
        super()._server_gone(proc)

    def close(self) -> None:
        super().close()
        with self.lock:
            workers, self.workers = list(self.workers.values()), {}
        for worker in workers:
            self._close(worker)
        if self.channel is not None:
            self.channel.close()
            self.channel = None
