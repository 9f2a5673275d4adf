"""Job classes for the test suite, named for what they do (copied into each test's project as `jobs`)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class Echo:
    def handle(self, *args: Any, **kwargs: Any) -> Any:
        return {"args": list(args), "kwargs": kwargs} if kwargs else list(args)

    def shout(self, text: str) -> str:
        print(f"shouting {text}")
        return text.upper()

    def _secret(self) -> str:
        return "never"


class Sleep:
    def handle(self, seconds: str | float, marker: str = "") -> float:
        if marker:
            Path(marker).write_text(str(os.getpid()))
        time.sleep(float(seconds))
        return float(seconds)


class Raise:
    def handle(self, kind: str = "RuntimeError", message: str = "boom") -> None:
        error = {"ConnectionRefusedError": ConnectionRefusedError, "ValueError": ValueError}.get(kind, RuntimeError)
        raise error(message)


class KillSelf:
    def handle(self, last_words: str = "") -> None:
        if last_words:
            print(last_words, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class WriteSentinel:
    """Appends one line per run to a file, so a test can count executions."""

    def handle(self, path: str, text: str = "ran") -> str:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
        return text


class SpawnGrandchild:
    """Starts a long `sleep` in the same process group, records its pid, then outlives its time limit."""

    def handle(self, pid_file: str, seconds: str = "60") -> None:
        grandchild = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({float(seconds)})"])
        Path(pid_file).write_text(str(grandchild.pid))
        time.sleep(float(seconds))


class FailTimes:
    """Fails the first N runs (counted in a file), then succeeds."""

    def handle(self, counter: str, failures: str = "1") -> int:
        path = Path(counter)
        runs = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(runs))
        if runs <= int(failures):
            raise RuntimeError(f"run {runs} fails")
        return runs


class NotSerializable:
    def handle(self) -> object:
        return object()


class NotListed:
    """Exists in the namespace but is not in [allowed_jobs]: writes its marker file if it ever runs."""

    def handle(self, path: str) -> None:
        Path(path).write_text("ran", encoding="utf-8")


class SleepThenFail:
    """Sleeps on its first run (its pid in `marker`) so a test can interrupt it; raises on every later run."""

    def handle(self, marker: str, seconds: str = "30") -> None:
        path = Path(marker)
        if not path.exists():
            path.write_text(str(os.getpid()))
            time.sleep(float(seconds))
            return
        raise RuntimeError("fails after the interruption")


class SlowSentinel:
    """WriteSentinel that then takes `seconds`: keeps a worker busy for a known time whatever the start cost."""

    def handle(self, path: str, text: str = "ran", seconds: str = "0.1") -> str:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
        time.sleep(float(seconds))
        return text


class Allocate:
    """Holds `megabytes` of memory for a moment: exceeds a small memory_limit_mb."""

    def handle(self, megabytes: str) -> int:
        block = bytearray(int(megabytes) * 1024 * 1024)
        return len(block) // (1024 * 1024)


class KillParent:
    """A poison job: kills the daemon that runs it, every time (its parent, or the fork server's parent)."""

    def handle(self) -> None:
        parent = os.getppid()
        if b"spoold.execution.forkserver" in Path(f"/proc/{parent}/cmdline").read_bytes():
            parent = int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(parent, signal.SIGKILL)
        time.sleep(5)


class WhoAmI:
    """Reports its pid, its parent's pid and whether the job namespace was imported before it started."""

    def handle(self) -> dict[str, int]:
        return {"pid": os.getpid(), "ppid": os.getppid()}


class RecordRun:
    """One line per run, from the job's own view: its id (SPOOLD_JOB_ID), pid, start and end times."""

    def handle(self, path: str, seconds: str = "0") -> str:
        started = time.time()
        time.sleep(float(seconds))
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.environ['SPOOLD_JOB_ID']} {os.getpid()} {started:.6f} {time.time():.6f}\n")
        return os.environ["SPOOLD_JOB_ID"]


class BlockResultFile:
    """Puts a folder where its result file would go, in `scratch`: a child that still wrote one could not,
    and would end as a crash. Says whether its output goes to a pipe."""

    def handle(self, scratch: str) -> dict[str, bool]:
        os.mkdir(os.path.join(scratch, os.environ["SPOOLD_JOB_ID"] + ".result"))
        return {"output_is_a_pipe": stat.S_ISFIFO(os.fstat(1).st_mode)}


class LeaveChatter:
    """Starts a process in a session of its own (so it outlives the job's group) that goes on printing to
    the job's output after the job ended, then writes `done_file`; returns at once."""

    def handle(self, done_file: str, seconds: str = "1.5") -> int:
        script = ("import sys, time, pathlib\n"
                  f"end = time.time() + {float(seconds)}\n"
                  "while time.time() < end:\n"
                  "    print('still here', flush=True); time.sleep(0.02)\n"
                  f"pathlib.Path({done_file!r}).write_text('survived')\n")
        return subprocess.Popen([sys.executable, "-c", script], start_new_session=True).pid
