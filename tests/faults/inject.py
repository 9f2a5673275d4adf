"""Run a spoold command with one fault injected at the k-th call of one `os` function on the spool.

    python tests/faults/inject.py FUNC K ACTION SPOOL COUNTS_FILE -- spoold-args...

FUNC is an `os` function (rename, link, unlink, open, write, fsync, close); only calls that touch
SPOOL count (for fd functions: fds opened on SPOOL). ACTION: `kill` (SIGKILL before the call),
`kill-after` (SIGKILL right after it), `count` (no fault), or an errno name (ENOSPC, EIO, EACCES,
ENOENT, ESTALE) raised instead of the call, or after it with `-after` (`ENOENT-after`: the call
succeeded and says it failed, as a retransmitted NFS rename or unlink does). The number of counted
calls is written to COUNTS_FILE at exit, so a clean run tells how many crash points a scenario has.
A real process, real files: only the chosen call is replaced, the way SQLite's and unreliablefs's
fault injection fail the N-th call.
"""

from __future__ import annotations

import atexit
import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any

FD_FUNCS = {"write", "fsync", "close"}


class Injector:
    def __init__(self, func: str, k: int, action: str, spool: str) -> None:
        self.func, self.target, self.action = func, k, action
        self.spool_root = os.path.realpath(spool)
        self.calls = 0
        self.spool_fds: set[int] = set()
        self.real = {name: getattr(os, name) for name in ("open", "close", func)}

    def on_spool(self, value: Any) -> bool:
        return isinstance(value, str | Path) and os.path.abspath(value).startswith(self.spool_root)

    def relevant(self, name: str, args: tuple[Any, ...]) -> bool:
        if name in FD_FUNCS:
            return bool(args) and isinstance(args[0], int) and args[0] in self.spool_fds
        return any(self.on_spool(a) for a in args[:2])

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.relevant(name, args):
            self.calls += 1
            if self.calls == self.target and self.action != "count":
                return self.fail(name, args, kwargs)
        return self.real[name](*args, **kwargs)

    def fail(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.action == "kill-after":
            result = self.real[name](*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
            return result
        code = getattr(errno, self.action.removesuffix("-after"))
        if self.action.endswith("-after"):  # the call happens, then reports an error (NFS retransmits)
            self.real[name](*args, **kwargs)
        raise OSError(code, os.strerror(code), str(args[0]))

    def open(self, *args: Any, **kwargs: Any) -> int:
        fd: int = self.call("open", args, kwargs) if self.func == "open" else self.real["open"](*args, **kwargs)
        if self.on_spool(args[0]):
            self.spool_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        try:
            if self.func == "close":
                self.call("close", (fd,), {})
            else:
                self.real["close"](fd)
        finally:
            self.spool_fds.discard(fd)

    def install(self) -> None:
        os.open = self.open
        os.close = self.close
        if self.func not in ("open", "close"):
            setattr(os, self.func, lambda *a, **kw: self.call(self.func, a, kw))


def main() -> int:
    func, k, action, spool, counts_file = sys.argv[1:6]
    args = sys.argv[7:] if sys.argv[6] == "--" else sys.argv[6:]
    injector = Injector(func, int(k), action, spool)
    injector.install()
    atexit.register(lambda: Path(counts_file).write_text(str(injector.calls)))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from spoold.commands.cli import main as spoold_main

    return spoold_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
