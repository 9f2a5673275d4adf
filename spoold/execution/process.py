"""A job's child process: started in its own process group, waited on by a thread, killed past its limit.

A fresh interpreter per job (`python -m spoold.execution.child`) is portable and never inherits the daemon's lock,
threads or open spool files (docs/design.md, M2). Killing the whole group takes grandchildren too (docs/design.md, M8).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from spoold.config import Config
from spoold.execution.preload import PreloadReport
from spoold.execution.protocol import read_tail
from spoold.job import Job
from spoold.outcomes import Outcome

log = logging.getLogger(__name__)


def _error(kind: str, message: str) -> dict[str, str]:
    return {"type": kind, "message": message, "traceback": ""}


@dataclass
class ChildProcess:
    """One running job. Its launcher sets `returncode`, then `exited`, then calls `on_exit(job_id)`."""

    job: Job
    timeout: float
    stem: Path  # its files in the daemon's scratch folder: STEM.out, STEM.result (and STEM.spec for spawn)
    started: float
    deadline: float
    pid: int = 0
    kill_group: Callable[[], None] = lambda: None
    returncode: int | None = None
    killed_for: str | None = None
    spec_written: bool = False  # spawn passes the spec as a file, the fork server in its request
    exited: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None  # its outcome and output, sent with its end by a worker or the fork server
    output_file: Path | None = None  # where a worker that died mid-job had its output, instead of STEM.out
    # Worker isolation: a job handed to a busy worker waits in its pipe (workerclient.py). Until the worker
    # takes it, its time limit does not run; `on_start` is called when it does. `not_started`: it ended
    # without the worker ever taking it (taken back, or the worker died first): it never ran.
    queued: bool = False
    not_started: bool = False
    on_start: Callable[[], None] = lambda: None

    def begin(self, now: float) -> None:
        """A queued job's worker has taken it: from now on it runs, and its time limit with it."""
        self.queued, self.started, self.deadline = False, now, now + self.timeout
        self.on_start()

    def scratch_file(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)

    def scratch_name(self, suffix: str) -> str:
        """scratch_file's name as a string, for a request: no Path made (a job's start asks for two)."""
        return os.fspath(self.stem) + suffix

    def kill(self, reason: str) -> None:
        """Kill the child and everything it started; `reason` (Timeout, Interrupted, Cancelled) is kept."""
        self.killed_for = self.killed_for or reason
        if not self.exited.is_set():
            self.kill_group()

    def outcome(self) -> Outcome:
        """Read what the child reported; call once it has exited."""
        duration_ms = int((time.monotonic() - self.started) * 1000)
        if self.reply is not None:
            output, report = self.reply.get("output"), self.reply.get("report")
            output, reported = str(output or ""), report if isinstance(report, dict) else None
        else:
            output = _tail(self.output_file or self.scratch_file(".out"))
            reported = _read_json(self.scratch_file(".result"))
        code = self.returncode
        if self.killed_for == "Timeout":
            outcome = Outcome("failure", error=_error("Timeout", f"killed after the time limit of {self.timeout:g}s"),
                              error_mro=("Timeout",))
        elif self.killed_for == "Cancelled":
            outcome = Outcome("cancelled", error=_error("Cancelled", "cancelled by spoold cancel while it ran"),
                              error_mro=("Cancelled",))
        elif self.killed_for == "Interrupted":
            outcome = Outcome("interrupted")
        elif reported is not None:
            outcome = _from_report(reported)
        elif code is not None and code < 0:
            name = _signal_name(-code)
            outcome = Outcome("failure", error=_error("Crashed", f"the child died by {name}"), error_mro=("Crashed",))
        else:
            outcome = Outcome("failure", error=_error("Crashed", f"the child exited with code {code} without a result"),
                              error_mro=("Crashed",))
        outcome.output, outcome.returncode, outcome.duration_ms = output, code, duration_ms
        return outcome

    def cleanup(self) -> None:
        if self.reply is not None:
            return  # a worker's job, or a child forked per job, wrote no file of its own
        files = [self.scratch_file(suffix) for suffix in (".out", ".result", ".spec")[:3 if self.spec_written else 2]]
        for path in [*files, *([self.output_file] if self.output_file else [])]:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _from_report(reported: dict[str, Any]) -> Outcome:
    status = reported.get("status")
    if status == "success":
        return Outcome("success", result=reported.get("result"))
    error = reported.get("error") or {}
    return Outcome("failure", error={"type": str(error.get("type", "Error")), "message": str(error.get("message", "")),
                                     "traceback": str(error.get("traceback", ""))},
                   error_mro=tuple(reported.get("mro") or (error.get("type", "Error"),)))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        value = json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return value if isinstance(value, dict) else None


def _tail(path: Path) -> str:
    """The end of what the job printed (protocol.read_tail)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return ""
    try:
        return read_tail(fd)
    except OSError:
        return ""
    finally:
        os.close(fd)


class Launcher(Protocol):
    """Starts a child for a written spec: a fresh interpreter (spawn) or a fork of a warm server."""

    def launch(self, child: ChildProcess, spec: dict[str, Any], env: dict[str, str],
               on_exit: Callable[[str], None]) -> None: ...

    def warm_up(self) -> PreloadReport:
        """Get ready for the first job, and say what the bootstrap and the allowed classes' imports did."""
        ...

    def close(self) -> None: ...

    def resize(self, workers: int) -> None:
        """A reload changed `workers`: the pool's size from now on."""
        ...

    def can_queue(self) -> bool:
        """One more job could be launched now, beyond one per worker: it waits for a busy worker (worker
        isolation only)."""
        ...

    def filenos(self) -> list[int]:
        """The fds the caller's loop may wait on, then call pump(); none when its children report otherwise."""
        ...

    def pump(self, readable: Collection[int] | None = None) -> None:
        """Act on what filenos() have to say, without blocking; `readable`: those of them the caller's sleep
        found readable (None: not known, look at all)."""
        ...


def start_child(job: Job, config: Config, stem: Path, on_exit: Callable[[str], None], *,
                allowed_methods: tuple[str, ...], timeout: float, launcher: Launcher) -> ChildProcess:
    """Start the child of one job, its files named `stem`.*; raises OSError if it cannot start."""
    now = time.monotonic()
    child = ChildProcess(job, timeout, stem, started=now, deadline=now + timeout)
    spec: dict[str, Any] = {
        "class": job.class_name, "method": job.method, "params": job.params, "namespace": config.namespace,
        "root": str(config.root), "allowed_methods": list(allowed_methods),
        "result_path": child.scratch_name(".result")}
    if config.bootstrap:
        spec["bootstrap"] = config.bootstrap
    if config.memory_limit_mb:
        spec["memory_limit_mb"] = config.memory_limit_mb
    if "previous_result" in job.doc:
        spec["previous_result"] = job.doc["previous_result"]
    env = {"SPOOLD_LOG_DIR": str(config.log_dir), "SPOOLD_JOB_ID": job.id, "SPOOLD_ATTEMPT": str(job.attempts)}
    launcher.launch(child, spec, env, on_exit)
    return child
