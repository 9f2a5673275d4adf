"""spoold against Huey and RQ, in one run, on the same jobs; see bench/README.md.

Run through `make bench` (or bench/run.sh), which provides the venv and a private redis-server
(BENCH_REDIS_PORT, BENCH_REDIS_PID). BENCH_SCALE=small for a quick run. Every process this script
starts is ended (by pid) on every exit path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
VENV_BIN = Path(sys.executable).parent
KINDS = ("noop", "sleep")
KIND_LABEL = {"noop": "no-op", "sleep": "sleep 10 ms"}
WORKERS = 2

SCALES: dict[str, dict[str, Any]] = {
    # jobs per throughput run; latency samples and their rate; the scale run's backlogs and measuring window;
    # the spawn floor's (smaller) runs; the time budget after which the remaining runs are skipped.
    "full": {"noop": 5000, "sleep": 1000, "latency_jobs": 150, "latency_rate": 10.0,
             "scale_files": 100_000, "scale_base": 1000, "scale_window": 300, "scale_later": (1000, 2000),
             "scale_limit_s": 90,
             "spawn_floor": {"noop": 500, "sleep": 100}, "budget_s": 16 * 60},
    "small": {"noop": 300, "sleep": 100, "latency_jobs": 30, "latency_rate": 10.0,
              "scale_files": 10_000, "scale_base": 1000, "scale_window": 100, "scale_later": (1000, 1500),
              "scale_limit_s": 45,
              "budget_s": 5 * 60},
    "tiny": {"noop": 40, "sleep": 20, "latency_jobs": 10, "latency_rate": 10.0,
             "scale_files": 500, "scale_base": 100, "scale_window": 30, "scale_later": (100, 200),
             "scale_limit_s": 20,
             "budget_s": 3 * 60},
}


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


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(143)


# -- measuring --------------------------------------------------------------------------------------


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pid_cpu_seconds(pid: int | None) -> float:
    """user+sys of one process we did not start as a child (redis-server), from /proc/PID/stat."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    """

    FAST_SAMPLE_S = 0.05
    TREE_SAMPLE_S = 0.1

    def __init__(self, record: Path, main_pids: list[int], extra_pids: tuple[int, ...] = ()) -> None:
        self.record = record
        self.offset = 0
        self.count = 0
        self.main_pids = main_pids
        self.hwm_kb = dict.fromkeys(main_pids, 0)
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
            self.hwm_kb[pid] = max(self.hwm_kb[pid], vm_kb(pid, "VmHWM:"))
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
        """Until `expected` lines: "ok"; or "exited" (every process ended first) or "timeout"."""
        while True:
            self.sample()
            if self.lines() >= expected:
                return "ok"
            if procs and all(p.poll() is not None for p in procs):
                time.sleep(0.1)
                return "ok" if self.lines() >= expected else "exited"
            if time.monotonic() > deadline:
                return "timeout"
            time.sleep(0.02)

    def wait_exit(self, procs: list[subprocess.Popen[bytes]], deadline: float) -> bool:
        while any(p.poll() is None for p in procs):
            self.sample()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

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


@dataclass
class Record:
    """What the job bodies wrote: first start and end per seq (warm-up jobs have seq < 0)."""

    starts: dict[int, float] = field(default_factory=dict)
    ends: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0

    @classmethod
    def read(cls, path: Path) -> Record:
        record = cls()
        with contextlib.suppress(FileNotFoundError), path.open() as handle:
            for line in handle:
                parts = line.split()
                if len(parts) != 4:
                    continue
                seq, start, end = int(parts[0]), float(parts[1]), float(parts[2])
                if seq in record.starts:
                    record.duplicates += 1
                    continue
                record.starts[seq], record.ends[seq] = start, end
        return record


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- the systems ------------------------------------------------------------------------------------


class System:
    """One row of the table: how to set up a run folder, hand over one job, start and stop the workers."""

    key = ""
    name = ""
    family = ""  # spoold | peer | floor
    notes = ""
    latency = True

    def setup(self, run_dir: Path, kind: str) -> None:
        self.run_dir = run_dir

    def submit(self, kind: str, seq: int, record: Path) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """After the last submit of a batch (before the workers start)."""

    def launch(self, kind: str, *, batch: bool) -> list[subprocess.Popen[bytes]]:
        raise NotImplementedError

    def finish(self, procs: list[subprocess.Popen[bytes]], monitor: Monitor, *, batch: bool) -> str | None:
        """Stop (or wait for) the workers once every job has started; an error message, or None."""
        for proc in procs:
            PROCS.stop(proc, signal.SIGTERM, timeout=30)
        return None

    def extra_pids(self) -> tuple[int, ...]:
        return ()

    def jobs(self, kind: str, default: int) -> int:
        """How many jobs this row's throughput runs use (the scale's size unless the row says fewer)."""
        return default

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.run_dir)
        env.pop("BGJOBS_CONFIG", None)
        return env

    def log_path(self) -> Path:
        return self.run_dir / "system.log"


def copy_jobs(run_dir: Path) -> None:
    shutil.copytree(HERE / "benchjobs", run_dir / "benchjobs", ignore=shutil.ignore_patterns("__pycache__"))


BENCH_CONFIG = """\
# written by bench/bench.py
spool_dir = "spool"
log_dir = "logs"
namespace = "benchjobs"
workers = {workers}
retry_attempts = 0
keep_done_days = 0
{extra}
[allowed_jobs]
BenchJob = ["noop", "sleep"]
"""


def write_spoold_config(run_dir: Path, keys: dict[str, str]) -> Path:
    extra = "".join(f'{key} = "{value}"\n' for key, value in keys.items())
    path = run_dir / "bgjobs.toml"
    path.write_text(BENCH_CONFIG.format(workers=WORKERS, extra=extra), encoding="utf-8")
    return path


class Spoold(System):
    family = "spoold"

    def __init__(self, isolation: str, durability: str) -> None:
        self.isolation, self.durability = isolation, durability
        self.key = f"spoold-{isolation}-{durability}"
        self.name = f"spoold {isolation}/{durability}"
        self.keys: dict[str, str] | None = None  # the config keys that select this variant, once probed
        self.unavailable: str | None = None

    def probe(self, root: Path) -> None:
        """Which config keys select the variant: `spoold start --drain` on an empty spool must exit 0.

        A key the daemon does not know (exit 2 naming it) makes the row n/a; a missing `isolation`
        key is fine for the process variant (process-per-job is then the only mode).
        """
        attempts = [{"isolation": self.isolation, "durability": self.durability}]
        if self.isolation == "process":
            attempts.append({"durability": self.durability})
        error = ""
        for keys in attempts:
            if "isolation" not in keys and "`isolation` is an unknown" not in error:
                break  # `isolation` exists but refuses "process": do not run some other mode under this name
            run_dir = root / f"probe-{self.key}-{len(keys)}"
            run_dir.mkdir()
            copy_jobs(run_dir)
            config = write_spoold_config(run_dir, keys)
            try:
                done = subprocess.run([str(VENV_BIN / "spoold"), "start", "--drain", "--config", str(config)],
                                      cwd=run_dir, env={**os.environ, "PYTHONPATH": str(run_dir)},
                                      capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                self.unavailable = "probe failed: `spoold start --drain` on an empty spool did not exit in 60 s"
                return
            if done.returncode == 0:
                self.keys = keys
                if "isolation" not in keys:
                    self.notes = "no `isolation` key yet: process-per-job is the only mode"
                return
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            error = lines[-1] if lines else f"exit {done.returncode}"
            named = [key for key in keys if f"{key}:" in error or f"'{key}'" in error]
            if not named:
                self.unavailable = f"probe failed: {error.strip()[:160]}"
                return  # not a problem with our keys: report it as is
            error = f"`{named[0]}` " + ("is an unknown config key" if "unknown key" in error else
                                        f"= \"{keys[named[0]]}\" is refused")
        self.unavailable = f"not implemented: {error}"

    def setup(self, run_dir: Path, kind: str) -> None:
        super().setup(run_dir, kind)
        copy_jobs(run_dir)
        self.drain_exit_at: float | None = None
        assert self.keys is not None
        self.config = write_spoold_config(run_dir, self.keys)

    def submit(self, kind: str, seq: int, record: Path) -> None:
        from spoold import run_background_job

        run_background_job("BenchJob", kind, [seq, str(record)], config=str(self.config))

    def launch(self, kind: str, *, batch: bool) -> list[subprocess.Popen[bytes]]:
        argv = [str(VENV_BIN / "spoold"), "start", "--config", str(self.config)]
        if batch:
            argv.append("--drain")
        return [PROCS.start(argv, cwd=self.run_dir, env=self.env(), log_path=self.log_path())]

    def finish(self, procs: list[subprocess.Popen[bytes]], monitor: Monitor, *, batch: bool) -> str | None:
        (daemon,) = procs
        if batch:  # --drain: it exits by itself once nothing is ready or running
            exited = monitor.wait_exit(procs, time.monotonic() + 60)
            code = PROCS.wait(daemon, timeout=0 if exited else 1)
            self.drain_exit_at = time.time()
            return None if code == 0 else f"spoold start --drain exited {code}"
        code = PROCS.stop(daemon, signal.SIGTERM, timeout=30)
        return None if code == 0 else f"spoold exited {code} after SIGTERM"


class Floor(System):
    """The bare loop (floor.py): what any process-per-job runner must pay at the least."""

    family = "floor"
    latency = False

    def __init__(self, mode: str, rss_mb: Callable[[], float], *, limit: dict[str, int] | None = None) -> None:
        self.mode = mode
        self.rss_mb = rss_mb
        self.limit = limit or {}
        self.key = f"{mode}-floor"
        if mode == "fork":
            self.name = "fork floor"
            self.notes = "rename in, fork a child of the daemon's size, reap, rename out"
        else:
            self.name = "spawn floor"
            self.notes = "the same with a fresh `python -c` per job instead of fork"

    def jobs(self, kind: str, default: int) -> int:
        return min(default, self.limit.get(kind, default))

    def setup(self, run_dir: Path, kind: str) -> None:
        super().setup(run_dir, kind)
        copy_jobs(run_dir)
        self.spool = run_dir / "spool"
        for name in ("tmp", "ready"):
            (self.spool / name).mkdir(parents=True)

    def submit(self, kind: str, seq: int, record: Path) -> None:
        staged = self.spool / "tmp" / f"{seq:07d}.json"
        staged.write_text(json.dumps({"seq": seq, "kind": kind, "record": str(record)}))
        os.rename(staged, self.spool / "ready" / staged.name)

    def launch(self, kind: str, *, batch: bool) -> list[subprocess.Popen[bytes]]:
        record = self.run_dir / "record.txt"
        argv = [sys.executable, str(HERE / "floor.py"), self.mode, kind, str(self.spool), str(record),
                f"{self.rss_mb():.1f}", str(WORKERS)]
        return [PROCS.start(argv, cwd=self.run_dir, env=self.env(), log_path=self.log_path())]

    def finish(self, procs: list[subprocess.Popen[bytes]], monitor: Monitor, *, batch: bool) -> str | None:
        monitor.wait_exit(procs, time.monotonic() + 30)
        code = PROCS.wait(procs[0], timeout=1)
        return None if code == 0 else f"floor.py exited {code}"


class Huey(System):
    family = "peer"

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.key = "huey-fast" if fast else "huey"
        self.name = "Huey fast-poll" if fast else "Huey"
        self.options = ["-d", "0.001", "-m", "0.01"] if fast else []
        self.notes = ("SqliteHuey, `-k process -w 2`" +
                      (" `-d 0.001 -m 0.01` (poll every 1-10 ms)" if fast else " (default polling 0.1-10 s)"))

    def setup(self, run_dir: Path, kind: str) -> None:
        super().setup(run_dir, kind)
        copy_jobs(run_dir)
        self.db = run_dir / "huey.db"
        os.environ["BENCH_HUEY_DB"] = str(self.db)
        from benchjobs import hueytasks

        hueytasks.use_database(str(self.db))
        self.tasks = hueytasks.TASKS

    def submit(self, kind: str, seq: int, record: Path) -> None:
        self.tasks[kind](seq, str(record))

    def env(self) -> dict[str, str]:
        return {**super().env(), "BENCH_HUEY_DB": str(self.db)}

    def launch(self, kind: str, *, batch: bool) -> list[subprocess.Popen[bytes]]:
        argv = [str(VENV_BIN / "huey_consumer"), "benchjobs.hueytasks.huey", "-k", "process", "-w", str(WORKERS),
                *self.options]
        return [PROCS.start(argv, cwd=self.run_dir, env=self.env(), log_path=self.log_path())]

    def finish(self, procs: list[subprocess.Popen[bytes]], monitor: Monitor, *, batch: bool) -> str | None:
        (consumer,) = procs
        PROCS.stop(consumer, signal.SIGINT, timeout=30)  # SIGINT is Huey's graceful shutdown
        return None


class RQ(System):
    family = "peer"
    name = "RQ"
    key = "rq"
    notes = "2 × `rq worker` (fork per job), local redis-server"

    def __init__(self) -> None:
        port = os.environ.get("BENCH_REDIS_PORT")
        self.unavailable = None if port else "no redis-server (run through `make bench`)"
        self.url = f"redis://127.0.0.1:{port}/0"
        self.redis_pid = int(os.environ["BENCH_REDIS_PID"]) if os.environ.get("BENCH_REDIS_PID") else None

    def setup(self, run_dir: Path, kind: str) -> None:
        super().setup(run_dir, kind)
        copy_jobs(run_dir)
        from benchjobs import rqtasks
        from redis import Redis
        from rq import Queue

        self.redis = Redis.from_url(self.url)
        self.redis.flushdb()
        self.queue = Queue("bench", connection=self.redis)
        self.tasks = rqtasks.TASKS

    def submit(self, kind: str, seq: int, record: Path) -> None:
        self.queue.enqueue(self.tasks[kind], seq, str(record))

    def extra_pids(self) -> tuple[int, ...]:
        return (self.redis_pid,) if self.redis_pid else ()

    def launch(self, kind: str, *, batch: bool) -> list[subprocess.Popen[bytes]]:
        procs = []
        for n in range(WORKERS):
            argv = [str(VENV_BIN / "rq"), "worker", "-u", self.url, "-n", f"bench-{os.getpid()}-{n}-{time.time_ns()}",
                    *(["--burst"] if batch else []), "bench"]
            procs.append(PROCS.start(argv, cwd=self.run_dir, env=self.env(), log_path=self.log_path()))
        return procs

    def finish(self, procs: list[subprocess.Popen[bytes]], monitor: Monitor, *, batch: bool) -> str | None:
        if batch:  # --burst: each worker leaves once the queue is empty
            monitor.wait_exit(procs, time.monotonic() + 30)
            for proc in procs:
                PROCS.wait(proc, timeout=1)
        else:
            for proc in procs:  # SIGTERM is RQ's warm shutdown
                PROCS.stop(proc, signal.SIGTERM, timeout=30)
        self.redis.flushdb()
        return None


# -- runs -------------------------------------------------------------------------------------------


@dataclass
class Budget:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


class Bench:
    def __init__(self, scale: str, root: Path) -> None:
        self.scale = scale
        self.sizes = SCALES[scale]
        self.root = root
        self.budget = Budget(float(os.environ.get("BENCH_BUDGET_S", self.sizes["budget_s"])))
        self.counter = 0

    def run_dir(self, system: System, what: str) -> Path:
        self.counter += 1
        path = self.root / f"{self.counter:02d}-{system.key}-{what}"
        path.mkdir()
        return path

    def cleanup(self, path: Path) -> None:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(path, ignore_errors=True)

    def throughput(self, system: System, kind: str, n: int) -> dict[str, Any]:
        """All n jobs handed over first; then the workers start; jobs/s = n / (last job end - start)."""
        run_dir = self.run_dir(system, kind)
        result: dict[str, Any] = {"jobs": n}
        try:
            system.setup(run_dir, kind)
            record = run_dir / "record.txt"
            t_submit = time.perf_counter()
            for seq in range(n):
                system.submit(kind, seq, record)
            system.flush()
            result["submit_s"] = round(time.perf_counter() - t_submit, 3)
            os.sync()  # the submitters' writes are not the workers' cost
            time.sleep(0.2)
            extra = system.extra_pids()
            cpu0 = children_cpu_seconds() + sum(pid_cpu_seconds(pid) for pid in extra)
            t0 = time.time()
            procs = system.launch(kind, batch=True)
            monitor = Monitor(record, [p.pid for p in procs], extra)
            deadline = time.monotonic() + min(max(60.0, n * 0.1), max(30.0, self.budget.left()))
            state = monitor.wait_lines(n, deadline, procs)
            error = system.finish(procs, monitor, batch=True)
            cpu = children_cpu_seconds() + sum(pid_cpu_seconds(pid) for pid in extra) - cpu0
            got = Record.read(record)
            done = [s for s in got.starts if s >= 0]
            if state != "ok" or len(done) < n:
                raise RuntimeError(f"{state}: {len(done)} of {n} jobs started; {error or ''} {tail(system.log_path())}")
            last_end = max(got.ends[s] for s in done)
            elapsed = last_end - t0
            result.update(
                ok=True, seconds=round(elapsed, 3), jobs_per_s=round(n / elapsed, 1),
                first_start_s=round(min(got.starts[s] for s in done) - t0, 3),
                cpu_ms_per_job=round(cpu * 1000 / n, 2),
                daemon_peak_rss_mb=monitor.daemon_peak_mb, all_peak_rss_mb=monitor.all_peak_mb,
                duplicates=got.duplicates, error=error)
            if getattr(system, "drain_exit_at", None):
                result["drain_exit_s"] = round(system.drain_exit_at - t0, 3)  # type: ignore[attr-defined]
        except Exception as e:  # one failed row must not lose the others
            result.update(ok=False, error=f"{type(e).__name__}: {e}"[:600])
            log(f"{system.name} {kind}: FAILED {result['error']}")
            traceback.print_exc(file=sys.stderr)
        finally:
            PROCS.stop_all()
            self.cleanup(run_dir)
        return result

    def latency(self, system: System, m: int, rate: float) -> dict[str, Any]:
        """Workers idle and warmed up; m no-ops handed over one at a time at `rate` per second."""
        run_dir = self.run_dir(system, "latency")
        result: dict[str, Any] = {"jobs": m, "rate_per_s": rate}
        try:
            system.setup(run_dir, "noop")
            record = run_dir / "record.txt"
            procs = system.launch("noop", batch=False)
            monitor = Monitor(record, [p.pid for p in procs], system.extra_pids())
            for seq in (-1, -2):  # warm-up: the workers are up and have imported the job module
                system.submit("noop", seq, record)
            if monitor.wait_lines(2, time.monotonic() + 60, procs) != "ok":
                raise RuntimeError(f"warm-up jobs did not run; {tail(system.log_path())}")
            time.sleep(1.0)
            drops: dict[int, float] = {}
            t_start = time.monotonic()
            for seq in range(m):
                pause = t_start + seq / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                drops[seq] = time.time()
                system.submit("noop", seq, record)
                monitor.sample()
            state = monitor.wait_lines(m + 2, time.monotonic() + 60, procs)
            error = system.finish(procs, monitor, batch=False)
            got = Record.read(record)
            waits = [(got.starts[s] - drops[s]) * 1000 for s in drops if s in got.starts]
            if state != "ok" or len(waits) < m:
                raise RuntimeError(f"{state}: {len(waits)} of {m} jobs started; {error or ''}")
            result.update(ok=True, p50_ms=round(percentile(waits, 0.50), 2), p90_ms=round(percentile(waits, 0.90), 2),
                          p99_ms=round(percentile(waits, 0.99), 2), max_ms=round(max(waits), 2),
                          mean_ms=round(sum(waits) / len(waits), 2), error=error)
        except Exception as e:
            result.update(ok=False, error=f"{type(e).__name__}: {e}"[:600])
            log(f"{system.name} latency: FAILED {result['error']}")
            traceback.print_exc(file=sys.stderr)
        finally:
            PROCS.stop_all()
            self.cleanup(run_dir)
        return result

    def scale_run(self, system: Spoold, backlog: int, window: int,
                  later: tuple[int, int] | None = None) -> dict[str, Any]:
        """`backlog` ready no-ops, then `spoold start`: time to the first start, jobs/s over the first
        `window` jobs (the start-up scan of the backlog runs meanwhile), jobs/s over jobs `later` (from,
        to: past the start-up, at almost the whole backlog), the daemon's peak RSS; then SIGTERM."""
        run_dir = self.run_dir(system, f"scale{backlog}")
        result: dict[str, Any] = {"backlog": backlog, "window": window}
        try:
            system.setup(run_dir, "noop")
            record = run_dir / "record.txt"
            t_write = time.perf_counter()
            result["writer"] = write_backlog(system.config, record, backlog)
            os.sync()
            result["write_s"] = round(time.perf_counter() - t_write, 1)
            time.sleep(0.5)
            t0 = time.time()
            procs = system.launch("noop", batch=False)
            monitor = Monitor(record, [p.pid for p in procs])
            limit_s = min(self.sizes["scale_limit_s"], max(20.0, self.budget.left() - 30))
            later = later if later is not None and backlog >= later[1] else None
            state = monitor.wait_lines(max(window, later[1] if later else 0), time.monotonic() + limit_s, procs)
            t_stop = time.time()
            error = system.finish(procs, monitor, batch=False)
            result["stop_s"] = round(time.time() - t_stop, 2)
            every = sorted(Record.read(record).starts.values())
            if later is not None and len(every) >= later[1]:
                span = every[later[1] - 1] - every[later[0]]
                result.update(later=list(later), later_jobs_per_s=round((later[1] - later[0] - 1) / span, 1))
            starts = every[:window]
            if len(starts) < 2:
                raise RuntimeError(f"{state}: {len(starts)} of {window} jobs started in {limit_s:.0f} s; "
                                   f"{error or ''} {tail(system.log_path())}")
            result.update(ok=True, started=len(starts), first_start_s=round(starts[0] - t0, 3),
                          daemon_peak_rss_mb=monitor.daemon_peak_mb, all_peak_rss_mb=monitor.all_peak_mb,
                          error=error)
            if len(starts) == window:
                result["jobs_per_s"] = round((window - 1) / (starts[-1] - starts[0]), 1)
            else:  # cut off at the time limit: the rate over the time it had, not over the jobs it managed
                result.update(partial=True, measured_s=round(t_stop - starts[0], 1),
                              jobs_per_s=round(len(starts) / (t_stop - starts[0]), 1))
                log(f"{system.name} scale {backlog}: only {len(starts)} of {window} jobs started in {limit_s:.0f} s")
        except Exception as e:
            result.update(ok=False, error=f"{type(e).__name__}: {e}"[:600])
            log(f"{system.name} scale {backlog}: FAILED {result['error']}")
            traceback.print_exc(file=sys.stderr)
        finally:
            PROCS.stop_all()
            self.cleanup(run_dir)
        return result


def write_backlog(config_path: Path, record: Path, count: int) -> str:
    """`count` ready no-op jobs as run_background_job writes them, minus the per-file fsync (one sync after).

    Falls back to the minimal document a person would drop if spoold's internals moved.
    """
    spool = config_path.parent / "spool"
    tmp = spool / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        from spoold.config import load_config
        from spoold.job import dump_job
        from spoold.submit import build_job

        config = load_config(config_path)

        def document(seq: int) -> tuple[str, str, bytes]:
            job, folder = build_job(config, "BenchJob", "noop", [seq, str(record)], priority=None, delay=None,
                                    chain=None, now=datetime.now(UTC))
            return job.id, folder, dump_job(job)

        document(0)
        writer = "spoold.submit.build_job"
    except Exception:
        def document(seq: int) -> tuple[str, str, bytes]:
            doc = {"class": "BenchJob", "method": "noop", "params": [seq, str(record)], "priority": "medium"}
            return f"bench-{seq:07d}", "medium", json.dumps(doc).encode()

        writer = "minimal dropped documents"
    for seq in range(count):
        job_id, folder, data = document(seq)
        staged = tmp / f".bench-{seq}.part"
        staged.write_bytes(data)
        target = spool / folder
        if seq == 0:
            target.mkdir(parents=True, exist_ok=True)
        os.rename(staged, target / f"{job_id}.json")
    return writer


def tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "log: " + " | ".join(text[-lines:])


# -- report -----------------------------------------------------------------------------------------


def machine_info(root: Path) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_gb = round(vm_meminfo("MemTotal:") / 1024 / 1024, 1)
    versions = {}
    for dist in ("huey", "rq", "redis", "psutil", "spoold", "watchdog"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
        versions["redis-server"] = next((w[2:] for w in out.split() if w.startswith("v=")), out.strip())
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "spoold"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += "+uncommitted" if dirty else ""
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "cpu_model": cpu_model, "nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "mem_gb": mem_gb, "kernel": platform.release(), "python": platform.python_version(),
            "filesystem": fs_type(root), "spoold_commit": commit, "spoold_source": source_digest(),
            "versions": versions}


def source_digest() -> str:
    """A short hash of spoold/*.py as they are now: the bench runs the working tree, whatever its state."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "spoold").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def vm_meminfo(key: str) -> int:
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def fs_type(path: Path) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            mount = parts[1]
            inside = mount == "/" or str(path) == mount or str(path).startswith(mount + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


def fmt(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return "—"
    if digits is None:
        digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "—"
    r = a / b
    return f"{r:.2f}" if r < 10 else f"{r:.1f}"


def value(row: dict[str, Any], part: str, key: str) -> float | None:
    run = row.get(part) or {}
    return run.get(key) if run.get("ok") else None


def ratio_cell(row: dict[str, Any], peer: dict[str, Any] | None, latency: bool = True) -> str:
    if peer is None or row["status"] != "ok":
        return "—"
    jobs = " / ".join(ratio(value(row, k, "jobs_per_s"), value(peer, k, "jobs_per_s")) for k in KINDS)
    if not latency:
        return jobs
    p50 = ratio(value(row, "latency", "p50_ms"), value(peer, "latency", "p50_ms"))
    return f"{jobs}; p50 {p50}"


def table(report: dict[str, Any]) -> str:
    rows = report["rows"]
    by_key = {row["key"]: row for row in rows}
    peers = {"RQ": by_key.get("rq"), "Huey": by_key.get("huey"), "Huey fast-poll": by_key.get("huey-fast")}
    head = ["system", "jobs/s no-op", "jobs/s sleep 10 ms", "p50 ms", "p99 ms", "CPU ms/job no-op / sleep",
            "peak RSS MB daemon / all", *(f"÷ {name}" for name in peers), "÷ fork floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | " + " | ".join([row["status"]] + ["—"] * (len(head) - 2)) + " |")
            continue
        cpu = " / ".join(fmt(value(row, k, "cpu_ms_per_job"), 2) for k in KINDS)
        daemon = max((value(row, k, "daemon_peak_rss_mb") or 0 for k in KINDS), default=0) or None
        everything = max((value(row, k, "all_peak_rss_mb") or 0 for k in KINDS), default=0) or None
        cells = [row["name"], fmt(value(row, "noop", "jobs_per_s")), fmt(value(row, "sleep", "jobs_per_s")),
                 fmt(value(row, "latency", "p50_ms"), 1), fmt(value(row, "latency", "p99_ms"), 1), cpu,
                 f"{fmt(daemon, 1)} / {fmt(everything, 1)}"]
        is_spoold = row["family"] == "spoold"
        cells += [ratio_cell(row, peer) if is_spoold else "—" for peer in peers.values()]
        floor = by_key.get("fork-floor")
        cells.append(ratio_cell(row, floor, latency=False) if is_spoold and "process" in row["key"] else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scale_table(report: dict[str, Any]) -> str:
    head = ["spoold variant", "ready backlog", "first job started after s", "jobs/s over the first jobs",
            "daemon peak RSS MB", "throughput vs 1,000 backlog", "jobs/s later (vs 1,000 backlog)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for entry in report["scale_runs"]:
        base = entry["runs"][0] if entry["runs"] else {}
        for run in entry["runs"]:
            if not run.get("ok"):
                error = str(run.get("error", ""))[:80]
                lines.append(f"| {entry['name']} | {run['backlog']:,} | failed: {error} | — | — | — | — |")
                continue
            base_rate = base.get("jobs_per_s") if base.get("ok") else None
            later = (f"{fmt(run['later_jobs_per_s'])}, jobs {run['later'][0] + 1:,}–{run['later'][1]:,} "
                     f"({ratio(run['later_jobs_per_s'], base_rate)})" if run.get("later_jobs_per_s") else "—")
            lines.append(f"| {entry['name']} | {run['backlog']:,} | {fmt(run['first_start_s'], 2)} | "
                         f"{fmt(run['jobs_per_s'])} ({window_note(run)}) | {fmt(run['daemon_peak_rss_mb'], 1)} | "
                         f"{ratio(run['jobs_per_s'], base_rate)} | {later} |")
    return "\n".join(lines)


def window_note(run: dict[str, Any]) -> str:
    if run.get("partial"):
        return f"only {run['started']} of the first {run['window']:,} started in {run['measured_s']:g} s"
    return f"first {run['window']:,}"


def header(report: dict[str, Any]) -> str:
    m = report["machine"]
    s = report["sizes"]
    return (f"spoold bench, {m['date']}, scale {report['scale']}: {m['cpu_model']}, {m['nproc']} CPUs, "
            f"{m['mem_gb']} GB, Linux {m['kernel']}, Python {m['python']}, spool on {m['filesystem']}; "
            f"spoold {m['spoold_commit']}, Huey {m['versions'].get('huey')}, RQ {m['versions'].get('rq')}, "
            f"redis-server {m['versions'].get('redis-server')}. {WORKERS} workers each; {s['noop']:,} no-ops, "
            f"{s['sleep']:,} × sleep 10 ms; latency: {s['latency_jobs']} no-ops at {s['latency_rate']:g}/s "
            f"to idle workers. Load average before: {m['loadavg_at_start'][0]:g}"
            + (f", after: {m['loadavg_at_end'][0]:g}." if "loadavg_at_end" in m else "."))


def svg_chart(report: dict[str, Any]) -> str:
    rows = report["rows"]
    panels: list[tuple[str, str, str]] = [("jobs/s, no-op", "noop", "jobs_per_s"),
                                          ("jobs/s, sleep 10 ms", "sleep", "jobs_per_s"),
                                          ("p50 drop-to-start ms (lower is better)", "latency", "p50_ms")]
    colors = {"spoold": "#2b6cb0", "peer": "#dd6b20", "floor": "#a0aec0"}
    label_w, panel_w, bar_h, gap, top = 150, 250, 16, 6, 54
    height = top + len(rows) * (bar_h + gap) + 40
    width = label_w + len(panels) * (panel_w + 30) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="8" y="18" font-size="13" font-weight="bold">spoold vs Huey and RQ '
           f'({report["scale"]} run, {report["machine"]["date"][:10]}, {report["machine"]["nproc"]} CPUs, '
           f'{WORKERS} workers each)</text>']
    for i, row in enumerate(rows):
        y = top + i * (bar_h + gap)
        out.append(f'<text x="{label_w - 6}" y="{y + bar_h - 4}" text-anchor="end">{esc(row["name"])}</text>')
    for p, (title, part, key) in enumerate(panels):
        x0 = label_w + p * (panel_w + 30)
        values = [value(r, part, key) or 0 for r in rows]
        top_value = max(values, default=0) or 1
        out.append(f'<text x="{x0}" y="{top - 12}" font-weight="bold">{esc(title)}</text>')
        out.append(f'<line x1="{x0}" y1="{top - 4}" x2="{x0}" y2="{height - 30}" stroke="#333"/>')
        for i, (row, v) in enumerate(zip(rows, values, strict=True)):
            y = top + i * (bar_h + gap)
            w = max(1.0, v / top_value * (panel_w - 50)) if v else 0
            out.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colors[row["family"]]}"/>')
            missing = "n/a" if row["status"] != "ok" else "—"
            out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + bar_h - 4}">{fmt(v) if v else missing}</text>')
    legend_y = height - 12
    for j, (family, label) in enumerate((("spoold", "spoold"), ("peer", "peers"), ("floor", "floors"))):
        x = label_w + j * 90
        out.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colors[family]}"/>')
        out.append(f'<text x="{x + 16}" y="{legend_y}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_atomic(path: Path, text: str) -> None:
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)


def save(report: dict[str, Any], markdown: str) -> list[Path]:
    """full: latest.* and a dated JSON; small: latest-small.*; tiny (a smoke test of the harness): nothing."""
    if report["scale"] == "tiny":
        return []
    RESULTS.mkdir(exist_ok=True)
    stem = "latest" if report["scale"] == "full" else f"latest-{report['scale']}"
    data = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    written = [RESULTS / f"{stem}.json", RESULTS / f"{stem}.svg", RESULTS / f"{stem}.md"]
    write_atomic(written[0], data)
    write_atomic(written[1], svg_chart(report))
    write_atomic(written[2], markdown)
    if report["scale"] == "full":
        dated = RESULTS / f"{report['machine']['date'][:19].replace(':', '')}.json"
        write_atomic(dated, data)
        written.append(dated)
    return written


# -- main -------------------------------------------------------------------------------------------


def main() -> int:
    scale = os.environ.get("BENCH_SCALE", "full") or "full"
    if scale not in SCALES:
        print(f"bench: BENCH_SCALE must be one of {', '.join(SCALES)}, got {scale!r}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.path.insert(0, str(HERE))
    root = Path(tempfile.mkdtemp(prefix="spoold-bench-"))
    try:
        return run_all(scale, root)
    except KeyboardInterrupt:
        log("interrupted: stopping what is running")
        return 130
    finally:
        PROCS.stop_all()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)


def run_all(scale: str, root: Path) -> int:
    bench = Bench(scale, root)
    sizes = bench.sizes
    report: dict[str, Any] = {"scale": scale, "sizes": sizes, "workers": WORKERS, "machine": machine_info(root),
                              "rows": [], "scale_runs": [], "notes": []}
    log(header(report))

    spoolds = [Spoold(i, d) for i in ("process", "worker") for d in ("fsync", "fast")]
    for variant in spoolds:
        variant.probe(root)
        log(f"{variant.name}: {'config ' + json.dumps(variant.keys) if variant.keys else variant.unavailable}")

    def daemon_rss() -> float:  # the fork floor's parent grows to the size of spoold's process-mode daemon
        sizes_mb = [value(r, k, "daemon_peak_rss_mb") for r in report["rows"] if r["key"].startswith("spoold-process")
                    for k in KINDS]
        known = [s for s in sizes_mb if s]
        return max(known) if known else 40.0

    spawn = Floor("spawn", daemon_rss, limit=sizes.get("spawn_floor"))
    systems: list[System] = [*spoolds, Floor("fork", daemon_rss), spawn, Huey(fast=False), Huey(fast=True), RQ()]
    rows = {s.key: new_row(s) for s in systems}
    report["rows"] = [rows[s.key] for s in systems]
    runnable = [s for s in systems if rows[s.key]["status"] == "ok"]

    # Most informative first, so that a spent time budget costs the least: the spawn floor (an extra) last.
    for system in (s for s in runnable if s is not spawn):
        run_throughput(bench, system, rows[system.key])
    for system in (s for s in runnable if s.latency):
        run_latency(bench, system, rows[system.key])
    for variant in scale_variants(spoolds):
        report["scale_runs"].append(run_scale(bench, variant))
    if spawn in runnable:
        run_throughput(bench, spawn, rows[spawn.key])
    for row in report["rows"]:
        errors = [str((row.get(p) or {}).get("error", "")) for p in KINDS]
        if row["status"] == "ok" and not any((row.get(p) or {}).get("ok") for p in (*KINDS, "latency")):
            skipped = all(e.startswith("skipped") for e in errors)
            row["status"] = ("skipped (time budget spent)" if skipped
                             else "failed: " + "; ".join(e[:100] for e in errors))
    report["machine"]["spoold_source_at_end"] = source_digest()
    if report["machine"]["spoold_source_at_end"] != report["machine"]["spoold_source"]:
        report["notes"] = ["spoold's source files changed while the bench ran: rows may mix versions"]
        log("WARNING: " + report["notes"][0])

    report["elapsed_s"] = round(time.monotonic() - bench.budget.started, 1)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    markdown = "\n\n".join([header(report), table(report), legend(report), scale_table(report)]) + "\n"
    print(markdown)
    for path in save(report, markdown):
        log(f"wrote {path.relative_to(REPO)}")
    return 0


def new_row(system: System) -> dict[str, Any]:
    unavailable = getattr(system, "unavailable", None)
    return {"key": system.key, "name": system.name, "family": system.family, "notes": system.notes,
            "status": f"n/a ({unavailable})" if unavailable else "ok", "config": getattr(system, "keys", None)}


def run_throughput(bench: Bench, system: System, row: dict[str, Any]) -> None:
    for kind in KINDS:
        n = system.jobs(kind, bench.sizes[kind])
        if bench.budget.left() < 30:
            row[kind] = {"ok": False, "error": "skipped: time budget spent"}
            continue
        log(f"throughput: {system.name}, {n:,} × {KIND_LABEL[kind]}")
        run = bench.throughput(system, kind, n)
        row[kind] = run
        if run.get("ok"):
            log(f"  {run['jobs_per_s']:,} jobs/s, {run['cpu_ms_per_job']} CPU ms/job, "
                f"daemon {run['daemon_peak_rss_mb']} MB, all {run['all_peak_rss_mb']} MB")


def run_latency(bench: Bench, system: System, row: dict[str, Any]) -> None:
    jobs, rate = bench.sizes["latency_jobs"], bench.sizes["latency_rate"]
    if bench.budget.left() < 30:
        row["latency"] = {"ok": False, "error": "skipped: time budget spent"}
        return
    log(f"latency: {system.name}, {jobs} no-ops at {rate:g}/s")
    run = bench.latency(system, jobs, rate)
    row["latency"] = run
    if run.get("ok"):
        log(f"  p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms")


def scale_variants(spoolds: list[Spoold]) -> list[Spoold]:
    """One per isolation mode that runs here, with the default durability (fsync) when it can."""
    chosen: dict[str, Spoold] = {}
    for variant in spoolds:
        if variant.keys is not None and (variant.isolation not in chosen or variant.durability == "fsync"):
            chosen.setdefault(variant.isolation, variant)
    return list(chosen.values())


def run_scale(bench: Bench, variant: Spoold) -> dict[str, Any]:
    sizes = bench.sizes
    entry: dict[str, Any] = {"key": variant.key, "name": variant.name, "runs": []}
    for backlog in (sizes["scale_base"], sizes["scale_files"]):
        if bench.budget.left() < 45:
            entry["runs"].append({"backlog": backlog, "window": sizes["scale_window"], "ok": False,
                                  "error": "skipped: time budget spent"})
            continue
        log(f"scale: {variant.name}, {backlog:,} ready files, first {sizes['scale_window']} jobs")
        run = bench.scale_run(variant, backlog, sizes["scale_window"], tuple(sizes["scale_later"]))
        entry["runs"].append(run)
        if run.get("ok"):
            log(f"  first start after {run['first_start_s']} s, {run['jobs_per_s']} jobs/s, "
                f"later {run.get('later_jobs_per_s', '—')} jobs/s, "
                f"daemon {run['daemon_peak_rss_mb']} MB (backlog written in {run['write_s']} s)")
    return entry


def legend(report: dict[str, Any]) -> str:
    spawn: dict[str, Any] = next((r for r in report["rows"] if r["key"] == "spawn-floor"), {})
    counts = " / ".join(f"{(spawn.get(k) or {}).get('jobs', 0):,}" for k in KINDS)
    sizes = " / ".join(f"{report['sizes'][k]:,}" for k in KINDS)
    note = f"spawn floor: {counts} jobs (its rate is steady; fewer keep the run short). " if counts != sizes else ""
    warning = "".join(f"**{n}.** " for n in report.get("notes", []))
    return (f"{warning}{note}"
            "jobs/s: jobs ÷ (last job's end − workers' launch), every job handed over first. p50/p99: drop-to-start "
            "(the submitter's clock before handing the job over → the job body's first line). CPU: user+sys of the "
            "workers' whole process tree (+ redis-server for RQ) ÷ jobs (no-op / sleep). RSS: the daemon's (each RQ "
            "worker's, Huey's consumer's) peak VmHWM / the peak sum over the whole tree (+ redis). ÷ PEER: this row's "
            "jobs/s ÷ the peer's (no-op / sleep; above 1 = faster), then p50 ÷ the peer's (below 1 = starts sooner). "
            "÷ fork floor: jobs/s ÷ the bare fork loop's (process-per-job modes only).")


if __name__ == "__main__":
    sys.exit(main())
