"""A batch of N jobs through run_background_jobs() against N run_background_job() calls, per durability mode.

Each run gets a fresh spool in a temporary folder (on $TMPDIR's filesystem) and a `bgjobs.toml` with
`durability` set; no daemon runs, so only the submitting side is measured. Every run is repeated and
the median (and the best) is reported; the spool is checked to hold exactly N job files afterwards.
Usage: .venv/bin/python bench/submit_batch.py [N] [REPEATS]  (TMPDIR picks the filesystem)   (`make bench-submit`)
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from spoold import run_background_job, run_background_jobs

CONFIG = """\
spool_dir = "spool"
log_dir = "logs"
durability = "{durability}"
[allowed_jobs]
Echo = ["handle"]
"""


def job_files(spool: Path) -> int:
    return sum(1 for _ in spool.rglob("*.json"))


def one_run(durability: str, count: int, *, batch: bool) -> float:
    """Seconds to submit `count` jobs on a fresh spool, one way or the other."""
    with tempfile.TemporaryDirectory(prefix="spoold-submit-") as tmp:
        config = Path(tmp) / "bgjobs.toml"
        config.write_text(CONFIG.format(durability=durability), encoding="utf-8")
        run_background_job("Echo", "handle", ["warm-up"], config=config)  # config read, folders made
        started = time.perf_counter()
        if batch:
            run_background_jobs([("Echo", "handle", [str(i)]) for i in range(count)], config=config)
        else:
            for i in range(count):
                run_background_job("Echo", "handle", [str(i)], config=config)
        elapsed = time.perf_counter() - started
        assert job_files(Path(tmp) / "spool") == count + 1, "not every job was written"
        return elapsed


def main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 1000
    repeats = int(argv[2]) if len(argv) > 2 else 7
    print(f"{count} jobs per run, {repeats} runs of each way taken in turns, spool under {tempfile.gettempdir()}")
    print(f"{'durability':<11} {'way':<28} {'median s':>9} {'best s':>8} {'jobs/s':>8} {'per job':>9}")
    for durability in ("fsync", "fast"):
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeats):  # in turns, so a busy moment of the machine hits both ways alike
            for batch in (False, True):
                runs[batch].append(one_run(durability, count, batch=batch))
        medians = {batch: statistics.median(times) for batch, times in runs.items()}
        for batch, times in runs.items():
            way = "run_background_jobs (1 call)" if batch else f"run_background_job x {count}"
            print(f"{durability:<11} {way:<28} {medians[batch]:>9.3f} {min(times):>8.3f} "
                  f"{count / medians[batch]:>8.0f} {medians[batch] / count * 1e6:>7.0f}us")
        print(f"{durability:<11} {'batch speed-up (medians)':<28} {medians[False] / medians[True]:>8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
