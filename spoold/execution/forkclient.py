"""The daemon's side of the fork server (execution/forkserver.py): start it, ask it for children, hear back.

The server's messages become the same events the spawn launcher produces: a pid when the child runs,
a return code and `on_exit(job_id)` when it has ended. A reader thread reads them, or, `inline`, the
caller's own loop does: it waits on `filenos()` with its other wake-ups and calls `pump()`, which saves
a thread hop per job (the daemon does so). In worker isolation workerclient.py adds the workers' own
pipes, which the daemon reads and writes directly. If the server dies, its children die with it (they watch
their parent) and each is reported as ended, so the daemon records them as Crashed and retries; the
next job starts a new server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from spoold.config import Config
from spoold.execution.groups import kill_group
from spoold.execution.preload import NOTHING_FOUND, PreloadReport
from spoold.execution.process import ChildProcess
from spoold.execution.protocol import encode, kill_request, read_available, split_lines, start_request

log = logging.getLogger(__name__)
START_TIMEOUT_SECONDS = 30.0


class ForkServerLauncher:
    def __init__(self, config: Config, *, inline: bool = False) -> None:
        self.config = config
        self.inline = inline
        self.buffer = b""  # inline: the start of a message not read whole yet
        self.reading: subprocess.Popen[bytes] | None = None  # inline: the server whose messages pump() reads
        self.lock = threading.RLock()  # a launch that finds the server dead hears its last words first
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()
        self.report: PreloadReport = NOTHING_FOUND  # what the server's preload found (its ready message)
        self.waiting: dict[str, ChildProcess] = {}
        self.exits: dict[str, Callable[[str], None]] = {}

    def _ensure_server(self) -> subprocess.Popen[bytes]:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        if self.reading is not None:  # inline: hear the dead server's last words first, its jobs' ends
            self.pump()
        self.ready = threading.Event()
        # A fresh interpreter in its own session: none of our threads, locks or spool files; no terminal signals.
        config = self.config
        passed = self._server_fds()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "spoold.execution.forkserver", str(config.root),
                                     config.namespace, config.isolation, str(config.max_jobs_per_worker),
                                     str(passed[0]) if passed else "-", config.bootstrap, *config.allowed_jobs],
                                    cwd=self.config.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    close_fds=True, pass_fds=passed, start_new_session=True)
        finally:
            for fd in passed:  # the server's now
                os.close(fd)
        self.proc = proc
        assert proc.stdout is not None
        if self.inline:
            self.reading, self.buffer = proc, b""
            os.set_blocking(proc.stdout.fileno(), False)
            self._pump_until_ready(proc)
        else:
            threading.Thread(target=self._read, args=(proc, proc.stdout), name="forkserver-reader",
                             daemon=True).start()
        if not self.ready.wait(0 if self.inline else START_TIMEOUT_SECONDS):
            proc.kill()
            raise OSError("the fork server did not start")
        log.info("fork server started: pid=%d", proc.pid)
        return proc

    def _server_fds(self) -> tuple[int, ...]:
        """Descriptors a new server gets (its argv names the first), closed here once it started."""
        return ()

    def _pump_until_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.ready.is_set() and self.reading is proc and (left := deadline - time.monotonic()) > 0:
            select.select(self.filenos(), [], [], left)  # while reading `proc`, its stdout is among them
            self.pump()

    def warm_up(self) -> PreloadReport:
        """Start the server now, so the first job does not pay for it, and return what its preload found;
        a server that does not start is retried per job."""
        try:
            with self.lock:
                self._ensure_server()
        except OSError as e:
            log.warning("the fork server did not start (%s); trying again with the first job", e)
        return self.report

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._ensure_server()
        assert proc.stdin is not None
        try:
            proc.stdin.write(encode(message))
            proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise OSError(f"the fork server is gone: {e}") from e

    def launch(self, child: ChildProcess, spec: dict[str, Any], env: dict[str, str],
               on_exit: Callable[[str], None]) -> None:
        """Ask for a child and return at once: its pid arrives later; if the server dies first, the job
        ends as Crashed through the reader thread, so nothing waits forever."""
        job_id = child.job.id
        child.kill_group = lambda: self._kill(job_id)
        with self.lock:
            self.waiting[job_id], self.exits[job_id] = child, on_exit
            try:
                self._send(start_request(job_id, spec, child.scratch_name(".out"), env))
            except OSError:
                self._forget(job_id)
                raise

    def _kill(self, job_id: str) -> None:
        with self.lock, contextlib.suppress(OSError):
            if self.proc is not None and self.proc.poll() is None:  # a dead server's children died with it
                self._send(kill_request(job_id))

    def _forget(self, job_id: str) -> tuple[ChildProcess | None, Callable[[str], None] | None]:
        return self.waiting.pop(job_id, None), self.exits.pop(job_id, None)

    def resize(self, workers: int) -> None:
        self.config = replace(self.config, workers=workers)

    def can_queue(self) -> bool:
        """A child per job starts at once: nothing waits for a busy one."""
        return False

    def filenos(self) -> list[int]:
        """Inline: the fds to wait on for the server's messages (none: no server to hear from now)."""
        proc = self.reading
        return [proc.stdout.fileno()] if proc is not None and proc.stdout is not None else []

    def pump(self, readable: Collection[int] | None = None) -> None:
        """Inline: act on every message the server has sent so far, without blocking (`readable`: what the
        caller's sleep found readable, for a subclass that waits on more than the server)."""
        proc = self.reading
        if proc is None or proc.stdout is None:
            return
        data, ended = read_available(proc.stdout.fileno())
        lines, self.buffer = split_lines(self.buffer, data)
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:  # never the loop's end: the server is ours, but a stray print reaches here too
                log.error("the fork server said something that is not a message: %r", line[:200])
                continue
            self._handle(message)
        if ended:
            self.reading = None
            self._server_gone(proc)

    def _read(self, proc: subprocess.Popen[bytes], stream: IO[bytes]) -> None:
        for line in stream:
            self._handle(json.loads(line))
        self._server_gone(proc)

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("ready"):
            self.report = PreloadReport(bootstrap=message.get("bootstrap"), imports=message.get("imports", {}))
            self.ready.set()
        elif "pid" in message:
            with self.lock:
                child = self.waiting.get(message["id"])
            if child is not None:
                child.pid = message["pid"]
        elif "returncode" in message:
            self._ended(message["id"], message["returncode"], message.get("reply"), message.get("out"))

    def _server_gone(self, proc: subprocess.Popen[bytes]) -> None:
        """Its stdout ended: every job it still had ended with it."""
        proc.wait()
        with self.lock:
            orphans = list(self.waiting)
        if orphans:
            log.error("the fork server died (exit %s); %d running job(s) ended with it", proc.returncode,
                      len(orphans))
        for job_id in orphans:
            self._kill_orphan_group(job_id)
            self._ended(job_id, -9)

    def _kill_orphan_group(self, job_id: str) -> None:
        """The server died: its children died with it (exit_with_parent), but not what they started.
        Their group ids stay reserved while a member lives, so killing the group cannot hit a stranger."""
        with self.lock:
            child = self.waiting.get(job_id)
        if child is not None and child.pid > 0:
            kill_group(child.pid)

    def _ended(self, job_id: str, returncode: int, reply: dict[str, Any] | None = None,
               output_file: str | None = None, *, not_started: bool = False) -> None:
        with self.lock:
            child, on_exit = self._forget(job_id)
        if child is None or on_exit is None:
            return
        child.not_started = not_started
        child.reply = reply if isinstance(reply, dict) else None
        child.output_file = Path(output_file) if isinstance(output_file, str) else None
        child.returncode = returncode
        child.exited.set()
        on_exit(job_id)

    def close(self) -> None:
        """Closing the server's stdin ends it; it kills whatever children are left."""
        proc, self.proc, self.reading = self.proc, None, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


