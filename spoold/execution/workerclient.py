"""The daemon's side of worker isolation: the fork server forks the workers, the daemon talks to them.

Each worker's ends come from the server over a Unix socket (protocol.py). A job's request is
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
import math
import os
import select
import signal
import socket
import time
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
)

log = logging.getLogger(__name__)


def _write(worker: WorkerPipes, data: bytes) -> None:
    """Write all of `data` to the worker. Its request socket never reports EPIPE (the daemon holds the
    worker's end of it too), so a write that must wait for the worker to read also watches its reply pipe: that one
    hangs up when the worker is gone, and then BrokenPipeError, instead of waiting for ever."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(worker.to_worker, view):]
        except BlockingIOError:
            poll = select.poll()
            poll.register(worker.to_worker, select.POLLOUT)
            poll.register(worker.from_worker, 0)  # only its hang-up is reported
            for fd, events in poll.poll(START_TIMEOUT_SECONDS * 1000):
                if fd == worker.from_worker and events & (select.POLLHUP | select.POLLERR):
                    raise BrokenPipeError(f"worker {worker.number} is gone") from None


def _unread(worker: WorkerPipes) -> bytes:
    """What the worker has not read of its requests yet, taken out (never waits: MSG_DONTWAIT)."""
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := worker.requests.recv(65536, socket.MSG_DONTWAIT):
            chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class WorkerPipes:
    """One worker as the daemon knows it: its pipes, its job, how many it was given."""

    number: int
    pid: int
    to_worker: int
    from_worker: int
    requests: socket.socket  # the worker's end of its requests: what it has not read yet can be taken back
    job_id: str | None = None  # the job it runs (or will read next, if it has not yet)
    request: bytes = b""  # that job's request line
    queued: str | None = None  # the job written after it, which the worker takes once it replies
    queued_request: bytes = b""
    jobs: int = 0  # given so far; at max_jobs_per_worker it retires, so it is never given another
    buffer: bytes = b""
    ended: bool = False  # its pipe reached its end: it exited, and the server's report follows
    output: str | None = None  # its output file (protocol.worker_output), known from its first request

    def idle(self, max_jobs: int) -> bool:
        """It runs nothing and can be given a job (it is not retiring, not gone)."""
        return self.job_id is None and self.jobs < max_jobs and not self.ended

    def may_queue(self, size: int, max_jobs: int) -> bool:
        """A job can wait in its pipe: it is busy with one job and has none waiting, both requests fit in
        one atomic pipe write (so the pipe never fills and a request is read whole), and it is not retiring."""
        return (self.job_id is not None and self.queued is None and not self.ended and self.jobs < max_jobs
                and len(self.request) <= select.PIPE_BUF and size <= select.PIPE_BUF)


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
        """Write the job's request to an idle worker (a new one if none is idle) and return. When every
        worker is busy, it waits in one's pipe (`child.queued`) and starts the moment that worker replies:
        the worker does not wait for the daemon between two jobs (docs/design.md, M14)."""
        job_id = child.job.id
        out = child.scratch_name(".out")
        request = encode(start_request(job_id, spec, out, env))
        with self.lock:
            for _ in range(2):
                worker = self._queue_on(len(request)) or self._idle_worker()
                try:
                    _write(worker, request)
                    break
                except BrokenPipeError:  # it died while idle, so it read nothing: its exit report follows
                    worker.ended = True
            else:
                raise OSError("the fork server's workers died before they could take the job")
            if worker.job_id is None:
                worker.job_id, worker.request = job_id, request
                child.pid = worker.pid
            else:
                worker.queued, worker.queued_request = job_id, request
                child.queued, child.deadline = True, math.inf
            worker.jobs += 1
            worker.output = worker.output or worker_output(out, worker.pid)
            child.kill_group = lambda: self._kill_job(job_id)
            self.waiting[job_id], self.exits[job_id] = child, on_exit

    def can_queue(self) -> bool:
        """One more job could wait in a busy worker's pipe now (the daemon's loop then claims one)."""
        max_jobs = self.config.max_jobs_per_worker
        with self.lock:
            return self._full() and any(w.may_queue(0, max_jobs) for w in self.workers.values())

    def _full(self) -> bool:
        return sum(1 for w in self.workers.values() if not w.ended) >= self.config.workers

    def _queue_on(self, size: int) -> WorkerPipes | None:
        """Called with the lock held: a busy worker to queue on, when none is idle and the pool is full."""
        max_jobs = self.config.max_jobs_per_worker
        if not self._full() or any(w.idle(max_jobs) for w in self.workers.values()):
            return None
        return next((w for w in self.workers.values() if w.may_queue(size, max_jobs)), None)

    def _idle_worker(self) -> WorkerPipes:
        """Called with the lock held. OSError if the server gives no worker (the claim is then undone)."""
        self._ensure_server()  # a server that died since the last pass: its workers are gone with it
        max_jobs = self.config.max_jobs_per_worker
        for worker in self.workers.values():
            if worker.idle(max_jobs):
                return worker
        self._send(worker_request())
        assert self.channel is not None
        try:
            message, fds, _, _ = socket.recv_fds(self.channel, 65536, 3)
        except OSError as e:
            raise OSError(f"the fork server gave no worker: {e}") from e
        if len(fds) != 3 or not message.endswith(b"\n"):  # one small send: a stream socket keeps it whole
            for fd in fds:
                os.close(fd)
            raise OSError("the fork server gave no worker: it ended" if not message else
                          f"the fork server's answer was cut short: {message[:100]!r}")
        for fd in fds:
            os.set_inheritable(fd, False)  # none of the daemon's other children gets a worker's pipe
        info = json.loads(message)
        worker = WorkerPipes(info["worker"], info["pid"], fds[0], fds[1], socket.socket(fileno=fds[2]),
                             buffer=str(info.get("early", "")).encode("latin-1"))
        os.set_blocking(worker.to_worker, False)  # our end alone; the worker's end of it stays blocking
        os.set_blocking(worker.from_worker, False)
        self.workers[worker.number] = worker
        return worker

    def _kill_job(self, job_id: str) -> None:
        """A running job: kill its worker. A queued one is taken back from the pipe and ends unstarted;
        if the worker read it already, it is killed the moment it starts (its `killed_for` is set)."""
        with self.lock:
            worker = next((w for w in self.workers.values() if job_id in (w.job_id, w.queued)), None)
            if worker is None:
                return
            if worker.job_id == job_id:
                self._kill_worker(worker.number)
            elif self._take_back(worker):
                self._ended(job_id, 0, not_started=True)

    def _take_back(self, worker: WorkerPipes) -> bool:
        """Called with the lock held: read the worker's queued request back out of its pipe, if the worker has
        not read it yet. What it had not read of the request before (never more than a pipe write) goes
        back in, in order, so it reads exactly what it would have."""
        try:
            unread = _unread(worker)
        except OSError:
            return False
        taken = len(unread) >= len(worker.queued_request)  # what is left is the stream's end: all of it
        rest = unread[:-len(worker.queued_request)] if taken else unread
        if rest:
            with contextlib.suppress(BrokenPipeError):  # it died: its exit report follows
                _write(worker, rest)
        if taken:
            worker.queued, worker.queued_request = None, b""
            worker.jobs -= 1
        return taken

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
        self._rebalance()

    def _rebalance(self) -> None:
        """A worker is idle while a job waits in another's pipe (behind a long job, say): move it over."""
        max_jobs = self.config.max_jobs_per_worker
        with self.lock:
            if sum(1 for w in self.workers.values() if w.job_id is not None and not w.ended) >= self.config.workers:
                return  # a reload made the pool smaller: an idle worker beyond it takes nothing
            for idle in [w for w in self.workers.values() if w.idle(max_jobs)]:
                busy = next((w for w in self.workers.values() if w.queued is not None and not w.ended), None)
                if busy is None:
                    return
                job_id, request = busy.queued, busy.queued_request
                if job_id is None or not self._take_back(busy):
                    continue
                try:
                    _write(idle, request)
                except BrokenPipeError:
                    idle.ended = True
                    self._ended(job_id, 0, not_started=True)
                    continue
                idle.job_id, idle.request, idle.jobs = job_id, request, idle.jobs + 1
                if (child := self.waiting.get(job_id)) is not None:
                    child.pid = idle.pid
                    self._start_queued(child)

    def _read_replies(self, worker: WorkerPipes) -> None:
        data, ended = read_available(worker.from_worker)  # a reply holds a result: it may be large
        worker.ended = worker.ended or ended
        lines, worker.buffer = split_lines(worker.buffer, data)
        for line in lines:
            if not is_worker_reply(line):  # its preload report: a later worker's failure shows in its jobs
                continue
            with self.lock:  # a kill from the lease's thread looks at the same fields (on_fenced)
                job_id, worker.job_id, worker.request = worker.job_id, worker.queued, worker.queued_request
                worker.queued, worker.queued_request = None, b""
                if worker.job_id is not None and (child := self.waiting.get(worker.job_id)) is not None:
                    child.pid = worker.pid
                    self._start_queued(child)  # the worker read it as soon as it had written this reply
            if job_id is None:
                log.error("worker %d (pid %d) sent a reply with no job", worker.number, worker.pid)
                continue
            try:
                reply = json.loads(line)
            except ValueError:
                reply = None  # recorded as a crash: the outcome it sent cannot be read
            self._ended(job_id, 0, reply if isinstance(reply, dict) else None)

    def _start_queued(self, child: ChildProcess) -> None:
        child.begin(time.monotonic())
        if child.killed_for is not None:  # killed while queued, but its worker had read it: it ends now
            child.kill_group()

    def _handle(self, message: dict[str, Any]) -> None:
        if "worker_exited" not in message:
            super()._handle(message)
            return
        with self.lock:
            worker = self.workers.pop(message["worker_exited"], None)
        if worker is None:
            return
        self._read_replies(worker)  # a reply written just before it exited still counts
        self._end_unread(worker)
        self._close(worker)
        if worker.job_id is not None:  # its job's output is in the worker's file: the daemon reads it
            self._ended(worker.job_id, int(message.get("returncode") or -signal.SIGKILL), None, worker.output)

    def _end_unread(self, worker: WorkerPipes) -> None:
        """A worker that is gone, its last replies read: the jobs it never started end unstarted (the daemon
        puts them back, no run counted); the one it read, if any, is left to end as the caller says. A job
        still queued never started, whatever the worker had read of it: it would have replied first."""
        try:
            unread = _unread(worker)
        except OSError:
            unread = b""
        if worker.queued is not None:
            unread = unread[:-len(worker.queued_request)] if len(unread) >= len(worker.queued_request) else b""
            queued, worker.queued = worker.queued, None
            self._ended(queued, 0, not_started=True)
        if worker.job_id is not None and worker.request and len(unread) >= len(worker.request):
            current, worker.job_id = worker.job_id, None
            self._ended(current, 0, not_started=True)

    @staticmethod
    def _close(worker: WorkerPipes) -> None:
        worker.requests.close()
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
            self._end_unread(worker)
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
