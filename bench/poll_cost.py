"""What one look of the polling observer costs, with 0 and with 100,000 files in done/ (issue 12).

    .venv/bin/python bench/poll_cost.py [--done 100000] [--polls 2000] [--spool DIR]

The Poller (spoold/daemon/watcher.py) lists high/, medium/, low/, scheduled/ and the daemon's folder by
name, so done/ should not change its cost. For scale, one snapshot of watchdog's PollingObserver
(a stat of every file of the tree, every period) is timed on the same spool. CPU is this process's
(user + system); on a FUSE mount the client daemon's share is not in it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from watchdog.utils.dirsnapshot import DirectorySnapshot

from spoold.daemon.watcher import Poller, Waker, _Hints
from spoold.paths import READY, SpoolPaths


def cost_per_poll(paths: SpoolPaths, polls: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per poll, medians of 5 runs of `polls` polls."""
    folders = [*(paths.ready(p) for p in READY), paths.scheduled, paths.root / "running" / "bench-node"]
    folders[-1].mkdir(parents=True, exist_ok=True)
    waker = Waker()
    try:
        poller = Poller(folders, _Hints(waker, folders))
        cpu, wall = [], []
        for _ in range(5):
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(polls):
                poller.poll()
            cpu.append((time.process_time() - c0) / polls * 1e6)
            wall.append((time.perf_counter() - w0) / polls * 1e6)
        return statistics.median(cpu), statistics.median(wall)
    finally:
        waker.close()


def snapshot_cost(root: Path) -> float:
    """CPU ms of one recursive snapshot of the spool, as watchdog's PollingObserver takes each period."""
    c0 = time.process_time()
    DirectorySnapshot(str(root), recursive=True)
    return (time.process_time() - c0) * 1e3


def fill_done(paths: SpoolPaths, count: int) -> None:
    done = paths.root / "done"
    done.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (done / f"job-{n:06d}.json").write_bytes(b'{"class": "Echo", "status": "done"}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--done", type=int, default=100_000, help="files in done/ for the second figure")
    parser.add_argument("--polls", type=int, default=2000, help="polls per run (5 runs, median)")
    parser.add_argument("--spool", type=Path, help="where to build the spool (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.spool) as tmp:
        paths = SpoolPaths(Path(tmp) / "spool")
        paths.create()
        for priority in READY:  # a few jobs waiting, as in a live spool
            for n in range(10):
                (paths.ready(priority) / f"{priority}-{n}.json").write_bytes(b"{}")
        rows = []
        for done in (0, args.done):
            fill_done(paths, done)
            cpu, wall = cost_per_poll(paths, args.polls)
            rows.append((done, cpu, wall, snapshot_cost(paths.root)))
    print(f"{'files in done/':>15} {'CPU per poll':>13} {'wall per poll':>14} {'CPU at 5 polls/s':>17}"
          f" {'PollingObserver snapshot':>25}")
    for done, cpu, wall, snapshot in rows:
        print(f"{done:>15,} {cpu:>10.1f} µs {wall:>11.1f} µs {cpu * 5 / 1e4:>15.3f} % {snapshot:>22.1f} ms")


if __name__ == "__main__":
    main()
