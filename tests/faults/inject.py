"""Run a spoold command with one fault injected at the k-th call of one `os` function on the spool.

    python tests/faults/inject.py FUNC K ACTION SPOOL COUNTS_FILE -- spoold-args...

FUNC is an `os` function (rename, link, unlink, open, write, fsync, close, replace); only calls that
touch SPOOL count (for fd functions: fds opened on SPOOL). ACTION: `kill` (SIGKILL before the call),
`kill-after` (SIGKILL right after it), `count` (no fault), or an errno name (ENOSPC, EIO, EACCES,
ENOENT) raised instead of the call, or after it with `-after` (`ENOENT-after`: the call succeeded and
says it failed, as a retransmitted NFS rename or unlink does). The number of counted calls is written to COUNTS_FILE at exit, so
a clean run tells how many crash points a scenario has. A real process, real files: only the chosen
call is replaced, the way SQLite's and unreliablefs's fault injection fail the N-th call.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any

FD_FUNCS = {"write", "fsync", "close"}


def main() -> int:
    func, k, action, spool, counts_file = sys.argv[1:6]
    args = sys.argv[7:] if sys.argv[6] == "--" else sys.argv[6:]
    target, spool_root = int(k), os.path.realpath(spool)
    state = {"calls": 0}
    spool_fds: set[int] = set()
    real = {name: getattr(os, name) for name in ("open", "close", func)}

    def on_spool(value: Any) -> bool:
        if isinstance(value, str | Path):
            return os.path.abspath(value).startswith(spool_root)
        return False

    def relevant(name: str, call_args: tuple[Any, ...]) -> bool:
        if name in FD_FUNCS:
            return bool(call_args) and isinstance(call_args[0], int) and call_args[0] in spool_fds
        return any(on_spool(a) for a in call_args[:2])

    def fault(name: str, call_args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if relevant(name, call_args):
            state["calls"] += 1
            if state["calls"] == target and action != "count":
                if action == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if action == "kill-after":
                    result = real[name](*call_args, **kwargs)
                    os.kill(os.getpid(), signal.SIGKILL)
                    return result
                code = getattr(errno, action.removesuffix("-after"))
                if action.endswith("-after"):  # the call happens, then reports an error (NFS retransmits)
                    real[name](*call_args, **kwargs)
                raise OSError(code, os.strerror(code), str(call_args[0]))
        return real[name](*call_args, **kwargs)

    def tracking_open(*call_args: Any, **kwargs: Any) -> int:
        fd: int = fault("open", call_args, kwargs) if func == "open" else real["open"](*call_args, **kwargs)
        if on_spool(call_args[0]):
            spool_fds.add(fd)
        return fd

    def tracking_close(fd: int) -> None:
        try:
            if func == "close":
                fault("close", (fd,), {})
            else:
                real["close"](fd)
        finally:
            spool_fds.discard(fd)

    os.open = tracking_open  # type: ignore[assignment]
    os.close = tracking_close  # type: ignore[assignment]
    if func not in ("open", "close"):
        setattr(os, func, lambda *a, **kw: fault(func, a, kw))

    import atexit

    atexit.register(lambda: Path(counts_file).write_text(str(state["calls"])))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from spoold.cli import main as spoold_main

    return spoold_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
