"""Where drop-to-start goes at 10 jobs/s: in `run_background_job()` itself, or after it returned.

    .venv/bin/python bench/latency_split.py [ISOLATION] [DURABILITY] [JOBS] [--no-daemon]   (defaults: worker fsync 100)

Starts a real daemon on a throw-away project (bench/profile.py's), lets it idle, then submits JOBS
no-op jobs from another process, one every 100 ms, noting the time before and after each call; the
job body notes when it began (bench/benchjobs). Prints p50/p99 of call-to-start (what `make bench`
calls drop-to-start), p50 of the call itself, and p50 of return-to-start (negative when the job
started before the submitter had finished its last fsync), and with `fsync` the p50 of the call's two
fsyncs (the staged file's, then its ready folder's). `--no-daemon` submits with no daemon running
(nothing starts: only the call and its fsyncs are printed), to see what the daemon's presence costs the
call. Linux or macOS.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from profile import BIN, make_project  # noqa: E402  (bench/profile.py, beside this file)

SUBMITTER = """
import json, os, sys, time
from spoold import run_background_job
record, jobs = sys.argv[1], int(sys.argv[2])
run_background_job("BenchJob", "noop", [-1, record], config="bgjobs.toml")  # a first job warms the path
time.sleep(1.5)
fsyncs, real_fsync = [], os.fsync
def timed_fsync(fd):
    began = time.perf_counter()
    try:
        return real_fsync(fd)
    finally:
        fsyncs.append(time.perf_counter() - began)
os.fsync = timed_fsync  # a submit's fsyncs: its staged file's, then its ready folder's
calls = []
for seq in range(jobs):
    before = time.time()
    run_background_job("BenchJob", "noop", [seq, record], config="bgjobs.toml")
    calls.append((seq, before, time.time()))
    time.sleep(0.1)
time.sleep(0.5)
print(json.dumps({"calls": calls, "fsyncs": fsyncs}))
"""


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    with_daemon = "--no-daemon" not in sys.argv[1:]
    args = [arg for arg in sys.argv[1:] if arg != "--no-daemon"]
    isolation = args[0] if len(args) > 0 else "worker"
    durability = args[1] if len(args) > 1 else "fsync"
    jobs = int(args[2]) if len(args) > 2 else 100
    root = Path(tempfile.mkdtemp(prefix="spoold-latency-"))
    try:
        config = make_project(root, isolation, durability, 0)
        env = {**os.environ, "PYTHONPATH": str(root)}
        daemon = subprocess.Popen([str(BIN / "spoold"), "start", "--config", str(config)], cwd=root, env=env,
                                  stderr=subprocess.DEVNULL) if with_daemon else None
        try:
            record = root / "latency.txt"
            out = json.loads(subprocess.run([sys.executable, "-c", SUBMITTER, str(record), str(jobs)], cwd=root,
                                            env=env, capture_output=True, text=True, check=True).stdout)
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(30)
        lines = record.read_text().splitlines() if record.exists() else []
        began = {int(line.split()[0]): float(line.split()[1]) for line in lines}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    calls = [(seq, before, after) for seq, before, after in out["calls"] if seq in began or not with_daemon]
    call = [(after - before) * 1000 for _, before, after in calls]
    said = f"{isolation}/{durability}, {len(calls)} jobs at 10/s"
    if with_daemon:
        to_start = [(began[seq] - before) * 1000 for seq, before, _ in calls]
        after_return = [(began[seq] - after) * 1000 for seq, _, after in calls]
        said += (f": call-to-start p50 {quantile(to_start, 0.5):.2f} ms, p99 {quantile(to_start, 0.99):.2f} ms; "
                 f"the call itself p50 {statistics.median(call):.2f} ms; "
                 f"return-to-start p50 {statistics.median(after_return):.2f} ms")
    else:
        said += f", no daemon: the call itself p50 {statistics.median(call):.2f} ms"
    fsyncs = out["fsyncs"]
    if fsyncs:
        said += (f"; its fsyncs p50: the file {statistics.median(fsyncs[0::2]) * 1000:.2f} ms, "
                 f"its folder {statistics.median(fsyncs[1::2]) * 1000:.2f} ms")
    print(said)
    return 0


if __name__ == "__main__":
    sys.exit(main())
