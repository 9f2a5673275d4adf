"""Becoming a job child: what a process forked from the fork server does before it runs any job.

Shared by the spare children (one job each) and the long-lived workers (many jobs each), so both
leave the server's world the same way: a session of their own (the daemon kills the job's whole group),
default signal handlers, none of the server's pipes (so a dead server's EOF reaches the daemon), and
death with the server (docs/design.md, M7, M9).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable

from spoold.execution.child import die_with_parent, exit_with_parent, find_prctl

PRCTL: Callable[..., int] | None = None


def prepare_server() -> None:
    """In the fork server, before its first fork: look prctl up once, not in every child."""
    global PRCTL
    PRCTL = find_prctl()


def become_job_child(server_pid: int, inherited: list[int]) -> int:
    """Own session, default signals, stdin/stdout/stderr on /dev/null, the server's fds closed, and death
    with the server. Returns an fd open on /dev/null, for output between a worker's jobs."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    if not exit_with_parent(server_pid, PRCTL):
        die_with_parent()
    return devnull


def redirect_output(fd: int) -> None:
    """stdout and stderr onto `fd`, flushing what Python still buffers for the old target."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
