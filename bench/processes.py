"""The processes the bench starts, and what it reads of them while a run goes on.

Every process the harness starts goes through PROCS and is ended by pid (its descendants too) on any exit
path; children_cpu_seconds, pid_cpu_seconds and Monitor read their CPU time and memory (getrusage, /proc).
Monitor also keeps each main process's own CPU (its threads, not its children), read from /proc/PID/stat
while it runs and once more when it has exited but is not reaped yet (waitid WNOWAIT: its final figure).
This module imports none of the bench's others.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes --------------------------------------------------------------------------------------


class Processes:
    """Every process the harness starts, ended by pid (its descendants too) on any exit path."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal `proc`, wait for it; past `timeout`, SIGKILL it and what it started. Returns its exit code."""
        family = _descendants(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} still running {timeout:.0f}s after signal {sig}: SIGKILL")
            family += _descendants(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        _kill_leftovers(family)
        self.forget(proc)
        return proc.returncode

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> int | None:
        """Wait for a process that ends by itself; None when it did not within `timeout` (then stopped)."""
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc, signal.SIGTERM, timeout=10)
            return None
        self.forget(proc)
        return code

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.live):
            self.stop(proc, signal.SIGTERM, timeout=15)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return children


def _kill_leftovers(family: list[psutil.Process]) -> None:
    for child in family:
        with contextlib.suppress(psutil.Error):
            if child.is_running():  # same pid *and* same start time: never someone else's process
                child.kill()
    psutil.wait_procs(family, timeout=5)


PROCS = Processes()


# -- measuring --------------------------------------------------------------------------------------


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pid_cpu_seconds(pid: int | None) -> float:
    """user+sys of one process (all its threads, none of its children), from /proc/PID/stat: redis-server,
    or a daemon (then read while it runs, or as a zombie: see exited)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(pid: int) -> float:
    """pid_cpu_seconds, plus its helper processes that do the daemon's own work (spoold's blank-file
    helper, spoold/spool/blanks.py: the creates of its commits), read while they run."""
    total = pid_cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    for child in children:
        try:
            if b"spool/blanks.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                total += pid_cpu_seconds(int(child))
        except OSError:
            continue
    return total


def exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once `proc` has ended, without reaping it (waitid WNOWAIT): its /proc/PID/stat still holds
    its final CPU times until Popen reaps it."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere
        return proc.poll() is not None


def vm_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Monitor:
    """Counts the record file's lines and keeps the peak RSS, while the system under test runs.

    daemon peak = the largest VmHWM of the main processes (the daemon / consumer / each RQ worker);
    all peak = the largest sum of VmRSS over the main processes, their descendants and `extra` (redis).
    daemon CPU = the sum of the main processes' own user+sys (their threads, and spoold's blank-file
    helper, own_cpu_seconds; other children, the fork server and worker processes excluded): over their
    life, last read when each had exited and was not reaped yet (wait_lines and wait_exit never reap),
    else at the last sample (a process stopped by a signal);
    and per job, between the first record lines and the last (daemon_cpu_per_job_s).
    """

    FAST_SAMPLE_S = 0.05
    TREE_SAMPLE_S = 0.1

    def __init__(self, record: Path, main_pids: list[int], extra_pids: tuple[int, ...] = ()) -> None:
        self.record = record
        self.offset = 0
        self.count = 0
        self.main_pids = main_pids
        self.hwm_kb = dict.fromkeys(main_pids, 0)
        self.own_cpu_s = dict.fromkeys(main_pids, 0.0)
        self.final_cpu: set[int] = set()
        self.cpu_marks: list[tuple[int, float]] = []  # (record lines seen, daemon CPU s then): first and last job
        self.all_peak_kb = 0
        self.extra = [p for p in (_process(pid) for pid in extra_pids) if p is not None]
        self.mains = [p for p in (_process(pid) for pid in main_pids) if p is not None]
        self.first_line_at: float | None = None
        self._next_tree = 0.0

    def lines(self) -> int:
        try:
            with self.record.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return self.count
        self.offset += len(data)
        new = data.count(b"\n")
        if new and self.first_line_at is None:
            self.first_line_at = time.time()
        self.count += new
        return self.count

    def sample(self) -> None:
        for pid in self.main_pids:
            if pid not in self.final_cpu:
                self.hwm_kb[pid] = max(self.hwm_kb[pid], vm_kb(pid, "VmHWM:"))
                self.own_cpu_s[pid] = max(self.own_cpu_s[pid], own_cpu_seconds(pid))
        now = time.monotonic()
        if now < self._next_tree:
            return
        self._next_tree = now + self.TREE_SAMPLE_S
        seen: set[int] = set()
        total = 0
        for main in self.mains:
            with contextlib.suppress(psutil.Error):
                family = [main, *main.children(recursive=True)]
                for proc in family:
                    if proc.pid not in seen:
                        seen.add(proc.pid)
                        with contextlib.suppress(psutil.Error):
                            total += proc.memory_info().rss // 1024
        for proc in self.extra:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss // 1024
        self.all_peak_kb = max(self.all_peak_kb, total)

    def wait_lines(self, expected: int, deadline: float, procs: list[subprocess.Popen[bytes]]) -> str:
        """Until `expected` lines: "ok"; or "exited" (every process ended first) or "timeout".

        Marks the main processes' own CPU when the first lines appear and when the last one does
        (cpu_marks, for daemon_cpu_per_job_s)."""
        while True:
            self.sample()
            count = self.lines()
            if (count and not self.cpu_marks) or (count >= expected and len(self.cpu_marks) == 1):
                self.cpu_marks.append((count, sum(own_cpu_seconds(pid) for pid in self.main_pids)))
            if count >= expected:
                return "ok"
            if procs and all(self.ended(p) for p in procs):
                time.sleep(0.1)
                return "ok" if self.lines() >= expected else "exited"
            if time.monotonic() > deadline:
                return "timeout"
            time.sleep(0.02)

    def ended(self, proc: subprocess.Popen[bytes]) -> bool:
        """exited(proc), and then its own CPU read one last time (from its zombie), before anyone reaps it."""
        if not exited(proc):
            return False
        if proc.pid in self.own_cpu_s and proc.pid not in self.final_cpu and proc.returncode is None:
            self.own_cpu_s[proc.pid] = max(self.own_cpu_s[proc.pid], pid_cpu_seconds(proc.pid))
            self.final_cpu.add(proc.pid)
        return True

    def wait_exit(self, procs: list[subprocess.Popen[bytes]], deadline: float) -> bool:
        while not all(self.ended(p) for p in procs):
            self.sample()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        for proc in procs:
            proc.poll()  # reap now that the final figures are read
        return True

    @property
    def daemon_cpu_s(self) -> float:
        """The main processes' own CPU over their whole life (start-up and exit included)."""
        return sum(self.own_cpu_s.values())

    @property
    def daemon_cpu_per_job_s(self) -> float | None:
        """Their own CPU from the first job's record line to the last's, per job seen meanwhile: start-up
        and exit left out (at a few hundred jobs an interpreter's start-up would be most of it)."""
        if len(self.cpu_marks) < 2 or self.cpu_marks[1][0] <= self.cpu_marks[0][0]:
            return None
        (first, cpu0), (last, cpu1) = self.cpu_marks[:2]
        return (cpu1 - cpu0) / (last - first)

    @property
    def daemon_peak_mb(self) -> float | None:
        peak = max(self.hwm_kb.values(), default=0)
        return round(peak / 1024, 1) if peak else None

    @property
    def all_peak_mb(self) -> float | None:
        return round(self.all_peak_kb / 1024, 1) if self.all_peak_kb else None


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None
