"""`start_method = "spawn"`: a fresh `python -m spoold.execution.child` per job.

Portable (Windows too), and nothing of the daemon is inherited: no lock, no thread, no open spool
file (docs/design.md, M2, M6). Costs tens of milliseconds per job, where a fork costs one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from spoold.config import Config
from spoold.execution.groups import kill_group
from spoold.execution.preload import NOTHING_FOUND, PreloadReport
from spoold.execution.process import ChildProcess

log = logging.getLogger(__name__)
PRELOAD_TIMEOUT_SECONDS = 60.0


class SpawnLauncher:
    """A fresh `python -m spoold.execution.child` per job: portable, and nothing of the daemon is inherited."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.root

    def launch(self, child: ChildProcess, spec: dict[str, Any], env: dict[str, str],
               on_exit: Callable[[str], None]) -> None:
        spec_path = child.scratch_file(".spec")
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        child.spec_written = True
        with child.scratch_file(".out").open("wb") as out:
            kwargs: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {
                "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
            proc = subprocess.Popen([sys.executable, "-m", "spoold.execution.child", str(spec_path)],
                                    cwd=self.root, env=dict(os.environ, **env), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, close_fds=True, **kwargs)
        child.pid = proc.pid
        child.kill_group = (lambda: kill_group(proc.pid)) if os.name == "posix" else proc.kill
        threading.Thread(target=_wait, args=(child, proc, on_exit), name=f"wait-{child.job.id}",
                         daemon=True).start()

    def warm_up(self) -> PreloadReport:
        """Every spawned child bootstraps for itself; this checks once, in a child of its own, that the
        bootstrap and the allowed classes import, so a problem shows at start (one more bootstrap run)."""
        config = self.config
        with tempfile.TemporaryDirectory(prefix="spoold-preload-") as scratch:
            report = Path(scratch) / "report.json"
            try:
                subprocess.run([sys.executable, "-m", "spoold.execution.preload", str(report), str(config.root),
                                config.namespace, config.bootstrap, *config.allowed_jobs],
                               cwd=self.root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               timeout=PRELOAD_TIMEOUT_SECONDS, check=False)
                found: PreloadReport = json.loads(report.read_text(encoding="utf-8"))
            except (OSError, ValueError, subprocess.TimeoutExpired) as e:
                log.warning("could not check the job classes at start (%s); each job reports its own errors", e)
                return NOTHING_FOUND
        return found

    def close(self) -> None:
        pass

    def resize(self, workers: int) -> None:
        self.config = replace(self.config, workers=workers)

    def can_queue(self) -> bool:
        return False

    def filenos(self) -> list[int]:
        return []  # each child has a waiter thread

    def pump(self, readable: Collection[int] | None = None) -> None:
        pass


def _wait(child: ChildProcess, proc: subprocess.Popen[bytes], on_exit: Callable[[str], None]) -> None:
    """Waiter thread: on POSIX, see the exit without reaping, kill leftover grandchildren, then reap."""
    if os.name == "posix":
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        kill_group(proc.pid)  # the zombie leader keeps the group id from being reused meanwhile
    child.returncode = proc.wait()
    child.exited.set()
    on_exit(child.job.id)
