"""The systems compared, one row of the table each: the base class, spoold's variants and the floors
(the fork and spawn floors, Floor; the file floor, FileFloor).

A System sets up a run folder, hands over one job, starts the workers and stops them. The peers (Huey, RQ)
are in peers.py; write_backlog writes the scale run's ready files the way spoold's submitter does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from processes import PROCS, Monitor

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
KINDS = ("noop", "sleep")
WORKERS = 2
FILE_FLOOR_LOOPS = 2  # the file floor's loops in parallel (floor.py file), as many as spoold's workers: README


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


class FileFloor(System):
    """The spool's own floor (floor.py file): spoold's file protocol per job, the body in-process, nothing else.

    Jobs are submitted as for spoold (run_background_job, into spool/medium/); `loops` loops run in
    parallel, each on its own share of the files.
    """

    family = "floor"
    latency = False

    def __init__(self, durability: str, loops: int = 1) -> None:
        self.durability, self.loops = durability, loops
        self.key = f"file-floor-{durability}"
        self.name = f"file floor {durability}"
        synced = durability == "fsync"
        self.notes = (f"{loops} loops in parallel, one job at a time each: claim rename, read, body in-process, "
                      "seize rename, tmp write" + (" + fsync" if synced else "") + ", link into done/"
                      + (" + folder fsync" if synced else "") + ", 2 unlinks")

    def setup(self, run_dir: Path, kind: str) -> None:
        super().setup(run_dir, kind)
        copy_jobs(run_dir)
        self.config = write_spoold_config(run_dir, {"durability": self.durability})

    def submit(self, kind: str, seq: int, record: Path) -> None:
        from spoold import run_background_job

        run_background_job("BenchJob", kind, [seq, str(record)], config=str(self.config))

    def launch(self, kind: str, *, batch: bool) -> list[subprocess.Popen[bytes]]:
        argv = [sys.executable, str(HERE / "floor.py"), "file", kind, str(self.run_dir / "spool"),
                str(self.run_dir / "record.txt"), self.durability, str(self.loops)]
        return [PROCS.start(argv, cwd=self.run_dir, env=self.env(), log_path=self.log_path())]

    def finish(self, procs: list[subprocess.Popen[bytes]], monitor: Monitor, *, batch: bool) -> str | None:
        monitor.wait_exit(procs, time.monotonic() + 30)
        code = PROCS.wait(procs[0], timeout=1)
        return None if code == 0 else f"floor.py file exited {code}"


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
        from spoold.spool.submit import build_job

        config = load_config(config_path)

        def document(seq: int) -> tuple[str, str, bytes]:
            job, folder = build_job(config, "BenchJob", "noop", [seq, str(record)], priority=None, delay=None,
                                    chain=None, now=datetime.now(UTC))
            return job.id, folder, dump_job(job)

        document(0)
        writer = "spoold.spool.submit.build_job"
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
