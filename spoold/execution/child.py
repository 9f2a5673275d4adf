"""Runs inside the job's child process: resolve the allowed class, call the method, report the outcome.

Forked from the fork server with the spec in its request, or started as `python -m spoold.execution.child
SPEC.json` (spawn), with the config's folder as its working directory. It never opens the spool: the
job arrives as a copy, the outcome leaves as a file the daemon reads once the child has exited.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from spoold.allowlist import check_allowed, resolve_class
from spoold.errors import JobNotFound, JobRejected
from spoold.execution.preload import bootstrap
from spoold.execution.protocol import write_all


def report(path: Path, outcome: dict[str, Any]) -> None:
    """Written in place: it is read only after the child exited, and a cut-off JSON object never parses
    (the daemon then records the run as Crashed)."""
    data = json.dumps(outcome).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def _error(exc: BaseException) -> dict[str, Any]:
    return {"status": "failure",
            "error": {"type": type(exc).__name__, "message": str(exc),
                      "traceback": "".join(traceback.format_exception(exc))},
            "mro": [cls.__name__ for cls in type(exc).__mro__]}


def limit_memory(megabytes: int) -> None:
    """Cap the child's address space (RLIMIT_AS) where the platform has setrlimit; a no-op elsewhere."""
    try:
        import resource
    except ImportError:  # Windows
        return
    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """The job's outcome as a JSON-ready dict: success with result, or failure with error.

    An allowed class or method missing from the namespace fails as JobNotFound, which is never retried.
    """
    if spec["root"] not in sys.path:  # a reused worker runs many jobs
        sys.path.insert(0, spec["root"])
    class_name, method_name, params = spec["class"], spec["method"], spec["params"]
    failed = bootstrap(spec.get("bootstrap", ""))  # a no-op where the server or worker ran it already
    if failed is not None:
        return {"status": "failure", "error": failed, "mro": ["BootstrapError"]}
    try:
        check_allowed({class_name: spec["allowed_methods"]}, class_name, method_name)
        cls = resolve_class(spec["namespace"], class_name)
        method = getattr(cls, method_name, None)
        if not callable(method):
            raise JobNotFound(f"{spec['namespace']}.{class_name} has no method {method_name!r}")
    except JobRejected as e:  # JobNotFound, or a name the allowlist refuses
        return {"status": "failure", "error": {"type": "JobNotFound", "message": str(e), "traceback": ""},
                "mro": ["JobNotFound"]}
    except BaseException as e:  # an error raised while importing the job's module is a failed run
        return _error(e)
    try:
        if spec.get("memory_limit_mb"):
            limit_memory(int(spec["memory_limit_mb"]))
        bound = getattr(cls(), method_name)
        prefix = [spec["previous_result"]] if "previous_result" in spec else []  # a chain step (SPEC §5)
        result = bound(*prefix, **params) if isinstance(params, dict) else bound(*prefix, *params)
        if inspect.iscoroutine(result):  # an `async def` method: run it to completion on a loop of its own
            import asyncio

            result = asyncio.run(result)
        json.dumps(result, allow_nan=False)  # a result must be JSON: no NaN or Infinity either
    except MemoryError as e:
        if not spec.get("memory_limit_mb"):
            return _error(e)
        outcome = _error(e)
        outcome["error"].update(type="MemoryLimit", message=f"exceeded memory_limit_mb = {spec['memory_limit_mb']}")
        outcome["mro"] = ["MemoryLimit", *outcome["mro"]]
        return outcome
    except BaseException as e:  # the job's own failure, whatever it is, is reported, not raised
        return _error(e)
    return {"status": "success", "result": result}


def die_with_parent(interval: float = 0.5) -> None:
    """If the daemon dies, take the job's whole process group down too (docs/design.md, M9, F5).

    The daemon that recovers the job runs it again; an orphan still running it would be a second copy.
    POSIX only: a reparented child sees its parent pid change.
    """
    if os.name != "posix":
        return
    # Imported here, not at the top: the fork server imports this module, and once `threading` is
    # loaded every fork runs its after-fork hook, which costs each job child ~130 copied pages (0.5 ms).
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


PR_SET_PDEATHSIG = 1


def find_prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, else None. The fork server looks it up once, before it forks."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return cast(Callable[..., int], ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


def exit_with_parent(parent: int, prctl: Callable[..., int] | None) -> bool:
    """Linux: the kernel SIGKILLs us when `parent` (a single-threaded fork server) dies; no watcher thread.

    Only this process dies so; its group is killed by the daemon, which sees the server end. False
    where the platform cannot, and then the caller falls back to die_with_parent().
    """
    if prctl is None or prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # it died before we asked
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return True


def execute(spec: dict[str, Any], *, watch_parent: bool = True, report_to: int | None = None) -> None:
    """Run the job described by `spec`, report its outcome (to the pipe `report_to`, else to the spec's
    result file), and exit the process."""
    if watch_parent:
        die_with_parent()
    outcome = run(spec)
    if report_to is not None:  # a fork server's child: the server passes it on with the child's end
        write_all(report_to, json.dumps(outcome).encode("utf-8"))
    else:
        report(Path(spec["result_path"]), outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: threads the job left running must not keep the child (and its slot) alive.
    os._exit(0)


def main() -> None:
    execute(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))


if __name__ == "__main__":
    main()
