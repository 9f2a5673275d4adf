"""A against B: the working tree against a git revision, alternating drains of the same no-op backlog.

    .venv/bin/python bench/ab.py REV [JOBS] [ISOLATION] [DURABILITY] [REPEATS]
    e.g. .venv/bin/python bench/ab.py HEAD 3000 worker fast 6

Each repeat drains JOBS no-op jobs once with REV's `spoold` package (checked out into a temporary
folder, put first on the project's PYTHONPATH) and once with the working tree's, so both see the same
machine at nearly the same moment; a shared machine's noise then shows as spread, not as a difference.
The two take turns at going first (REV first in even repeats): use an even REPEATS.
Prints jobs/s (start-up included) and CPU ms per job of the daemon (all its threads and its blank-file
helper process, and its main thread alone) and of every process, as bench/profile.py's accounting reads
them from /proc. Linux only.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from profile import accounting_run, make_project  # noqa: E402  (bench/profile.py, beside this file)


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", "-f", str(into), rev],
                   check=True, capture_output=True)
    return into / "spoold"


def drain(package: Path | None, jobs: int, isolation: str, durability: str) -> tuple[float, float, float, float]:
    root = Path(tempfile.mkdtemp(prefix="spoold-ab-"))
    try:
        config = make_project(root, isolation, durability, jobs)
        if package is not None:  # the project folder comes first on PYTHONPATH: this copy is imported
            shutil.copytree(package, root / "spoold", ignore=shutil.ignore_patterns("__pycache__"))
        began = time.monotonic()
        cpu = accounting_run(root, config, jobs)
        seconds = time.monotonic() - began
    finally:
        shutil.rmtree(root, ignore_errors=True)
    daemon = sum(ms for name, ms in cpu.items() if name.startswith("daemon"))
    return jobs / seconds, daemon, cpu.get("daemon: main thread", 0.0), sum(cpu.values())


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    rev = sys.argv[1]
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    isolation = sys.argv[3] if len(sys.argv) > 3 else "worker"
    durability = sys.argv[4] if len(sys.argv) > 4 else "fast"
    repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    work = Path(tempfile.mkdtemp(prefix="spoold-ab-rev-"))
    try:
        base = checkout(rev, work / "tree")
        rows: dict[str, list[tuple[float, float, float, float]]] = {rev: [], "working tree": []}
        for repeat in range(repeats):
            # ABBA: the drain that goes second follows the first one's removals, which on ext4 without a
            # journal slow its creates (bench/README.md, "The filesystem"), so neither side always goes second.
            order = [(rev, base), ("working tree", None)]
            for name, package in order if repeat % 2 == 0 else reversed(order):
                rows[name].append(drain(package, jobs, isolation, durability))
    finally:
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(work / "tree")],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{jobs} no-op jobs, {isolation}/{durability}, {repeats} alternated drains each (medians; jobs/s of each)")
    for name, results in rows.items():
        rates, daemon, main_thread, everything = zip(*results, strict=True)
        print(f"{name:>14}: {statistics.median(rates):6.0f} jobs/s {sorted(round(r) for r in rates)}; CPU ms/job: "
              f"daemon {statistics.median(daemon):.3f} (main thread {statistics.median(main_thread):.3f}), "
              f"all processes {statistics.median(everything):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
