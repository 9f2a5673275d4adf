"""The peers spoold is compared with, as the bench runs them: Huey (SqliteHuey) and RQ (on run.sh's redis-server)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from processes import PROCS, Monitor
from systems import VENV_BIN, WORKERS, System, copy_jobs


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
