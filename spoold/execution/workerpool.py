"""`isolation = "worker"`: long-lived workers forked from the fork server, each running many jobs.

Throughput over isolation: a worker keeps what its jobs imported, so a job starts in well under a
millisecond, but jobs share the worker's memory and process group. The time limit still holds: the
daemon's kill reaches the worker's whole group, the worker dies, and the next job gets a new one. A
worker retires after `max_jobs_per_worker` jobs, so leaks do not grow without bound.

Same protocol with the daemon as the fork server's (it is one): `{"id", "pid"}` when a worker takes
the job, `{"id", "returncode"}` when it is done (0, with the job's outcome and output as its `reply`)
or when its worker died under it (with the worker's output file as `out`). A worker's output goes to
one file of its own, emptied for each job, and its outcome travels in its reply: no file per job.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from spoold.execution.child import run
from spoold.execution.child_setup import become_job_child, redirect_output
from spoold.execution.groups import kill_group
from spoold.execution.preload import NOTHING_FOUND, Preload, PreloadReport
from spoold.execution.protocol import (
    ended,
    ended_with_reply,
    is_worker_reply,
    preloaded,
    read_tail,
    send,
    started,
    worker_output,
    worker_reply,
    write_all,
)
from spoold.execution.serverloop import Server


@dataclass
class Worker:
    pid: int
    to_worker: int
    from_worker: int
    job_id: str | None = None
    jobs: int = 0  # handed to it so far; at max_jobs it retires, so it is never given another
    buffer: bytes = b""
    output: str | None = None  # its output file (protocol.worker_output), known from its first request


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
    def __init__(self, *, max_jobs: int, preload: Preload) -> None:
        super().__init__()
        self.max_jobs = max_jobs
        self.preload = preload
        self.workers: dict[int, Worker] = {}

    def prepare(self) -> PreloadReport:
        """One worker ready before the first job; its preload report is the server's."""
        worker = self._fork_worker()
        os.set_blocking(worker.from_worker, True)
        try:
            while b"\n" not in worker.buffer and (chunk := os.read(worker.from_worker, 65536)):
                worker.buffer += chunk
        finally:
            os.set_blocking(worker.from_worker, False)
        line, _, worker.buffer = worker.buffer.partition(b"\n")
        try:
            report: PreloadReport = json.loads(line)["preloaded"]
        except (ValueError, KeyError):  # it died before it could say: its first job will show why
            report = NOTHING_FOUND
        return report

    def _fork_worker(self) -> Worker:
        to_read, to_write = os.pipe()
        from_read, from_write = os.pipe()
        sys.stdout.flush()
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            inherited = [to_write, from_read, self.wakeup_read, self.wakeup_write]
            for worker in self.workers.values():
                inherited += [worker.to_worker, worker.from_worker]
            _work(to_read, from_write, self.max_jobs, inherited, server, self.preload)
        os.close(to_read)
        os.close(from_write)
        os.set_blocking(from_read, False)
        worker = Worker(pid, to_write, from_read)
        self.workers[pid] = worker
        return worker

    def start(self, request: dict[str, Any], raw: bytes) -> None:
        idle = (w for w in self.workers.values() if w.job_id is None and w.jobs < self.max_jobs)
        worker = next(idle, None) or self._fork_worker()
        worker.job_id, worker.jobs = request["id"], worker.jobs + 1
        worker.output = worker.output or worker_output(request["out"], worker.pid)
        with contextlib.suppress(BrokenPipeError):  # it died a moment ago: reaping reports the job with it
            write_all(worker.to_worker, raw + b"\n")  # a large request may take more than one write
        send(started(request["id"], worker.pid))

    def kill(self, job_id: str) -> None:
        for worker in self.workers.values():
            if worker.job_id == job_id:
                kill_group(worker.pid)

    def watched_fds(self) -> list[int]:
        return [*super().watched_fds(), *(w.from_worker for w in self.workers.values())]

    def _read_replies(self, worker: Worker) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(worker.from_worker, 65536):  # a reply holds a result: it may be large
                worker.buffer += chunk
        while b"\n" in worker.buffer:
            line, worker.buffer = worker.buffer.split(b"\n", 1)
            if not is_worker_reply(line):  # a new worker's preload report: a later one's failure shows in its jobs
                continue
            if worker.job_id is not None:
                write_all(1, ended_with_reply(worker.job_id, line))
                worker.job_id = None

    def on_readable(self, readable: list[int]) -> None:
        for worker in list(self.workers.values()):
            if worker.from_worker in readable:
                self._read_replies(worker)

    def reap(self) -> None:
        """A worker that exited: retired after its last job, or killed (time limit, cancel) mid-job."""
        for pid, worker in list(self.workers.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            self._read_replies(worker)  # a "done" written just before it exited still counts
            kill_group(pid)  # whatever its jobs left behind
            for fd in (worker.to_worker, worker.from_worker):
                os.close(fd)
            del self.workers[pid]
            if worker.job_id is not None:  # its job's output is in the worker's file: the daemon reads it
                message = ended(worker.job_id, os.waitstatus_to_exitcode(status) or -signal.SIGKILL)
                send({**message, "out": worker.output} if worker.output else message)

    def shutdown(self) -> None:
        for pid in self.workers:
            kill_group(pid)
