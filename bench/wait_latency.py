"""How soon wait_for_job() returns once its job lands in done/ (SPEC §7: it watches, it never polls).

1. Without a daemon: another process commits the job as a daemon does (link the finished document into
   done/, unlink the ready copy) and prints CLOCK_MONOTONIC right after the link; the waiter notes the
   same clock when wait_for_job() returns. `rescan_seconds` is 60, so only a file event can wake it.
2. With a real daemon (`spoold start`): from submit to result, and from the job's `finished_at` (stamped
   before the daemon's commit and its fsyncs) to the return.
Usage: .venv/bin/python bench/wait_latency.py [N]   (`make bench-wait`)
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from spoold import run_background_job, wait_for_job

CONFIG = """\
spool_dir = "spool"
log_dir = "logs"
namespace = "latencyjobs"
rescan_seconds = 60
workers = 1
[allowed_jobs]
Echo = ["handle"]
"""
JOBS = "class Echo:\n    def handle(self, *args):\n        return list(args)\n"
# Reads "STAGED TARGET SOURCE" lines; after a short pause (the waiter is blocked by then) commits like a daemon.
COMMITTER = """
import os, sys, time
for line in sys.stdin:
    staged, target, source = line.split()
    time.sleep(0.05)
    os.link(staged, target)
    moved = time.monotonic()
    os.unlink(source)
    print(moved, flush=True)
"""


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"p50 {statistics.median(ms):.2f} ms  p90 {pick(0.9):.2f}  p99 {pick(0.99):.2f}  max {ms[-1]:.2f}"


def without_daemon(root: Path, count: int) -> list[float]:
    config = root / "bgjobs.toml"
    spool = root / "spool"
    committer = subprocess.Popen([sys.executable, "-c", COMMITTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
    assert committer.stdin is not None and committer.stdout is not None
    latencies = []
    try:
        for i in range(count):
            job_id = run_background_job("Echo", "handle", [i], config=config)
            source = spool / "medium" / f"{job_id}.json"
            staged = spool / "tmp" / f".{job_id}.part"
            staged.write_text(json.dumps({**json.loads(source.read_text()), "status": "done", "result": i}))
            (spool / "done").mkdir(exist_ok=True)
            committer.stdin.write(f"{staged} {spool / 'done' / source.name} {source}\n")
            committer.stdin.flush()
            assert wait_for_job(job_id, timeout=10, config=config) == i
            returned = time.monotonic()
            latencies.append(returned - float(committer.stdout.readline()))
            staged.unlink()
    finally:
        committer.stdin.close()
        committer.wait(10)
    return latencies


def with_daemon(root: Path, count: int) -> tuple[list[float], list[float]]:
    config = root / "bgjobs.toml"
    daemon = subprocess.Popen([sys.executable, "-m", "spoold", "start", "--config", str(config)], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    round_trips, after_finish = [], []
    try:
        deadline = time.monotonic() + 20
        while not any((root / "spool" / "running").glob("*/.info")):
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        for i in range(count):
            started = time.monotonic()
            job_id = run_background_job("Echo", "handle", [i], config=config)
            assert wait_for_job(job_id, timeout=20, config=config) == [i]
            round_trips.append(time.monotonic() - started)
            now = time.time()
            doc = json.loads((root / "spool" / "done" / f"{job_id}.json").read_text())
            after_finish.append(now - datetime.fromisoformat(doc["finished_at"]).timestamp())
            time.sleep(0.02)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(30)
    return round_trips, after_finish


def main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 200
    with tempfile.TemporaryDirectory(prefix="spoold-wait-") as tmp:
        root = Path(tmp)
        (root / "bgjobs.toml").write_text(CONFIG, encoding="utf-8")
        (root / "latencyjobs").mkdir()
        (root / "latencyjobs" / "__init__.py").write_text(JOBS, encoding="utf-8")
        print(f"{count} waits each, spool under {tempfile.gettempdir()}")
        print(f"link into done/ -> wait_for_job returns (no daemon):   {summary(without_daemon(root, count))}")
        round_trips, after_finish = with_daemon(root, count)
        print(f"submit -> result, real daemon (durability fsync):      {summary(round_trips)}")
        print(f"finished_at -> wait_for_job returns, real daemon:      {summary(after_finish)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
