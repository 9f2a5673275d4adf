"""The backlog target's run alone, several times: is a ratio one `make bench` printed more than noise?

    bench/.venv/bin/python bench/scale_repeat.py [REPEATS] [ISOLATION] [DURABILITY]   (defaults: 4 worker fsync)
    bench/fresh-fs.sh bench/.venv/bin/python bench/scale_repeat.py 6    # the same on a fresh ext4

Each repeat is `make bench`'s scale run twice (runs.py, `Bench.scale_run`, at the full sizes): 1,000 ready
no-ops, then 100,000, each drained by a fresh daemon, with jobs/s measured over the first 300 jobs (and
over jobs 1,001-2,000 of the large backlog). Prints each repeat's two rates and their ratio, then the
ratios' median and range. Uses bench/.venv (bench/run.sh makes it); no peers, no redis. Linux.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from processes import PROCS  # noqa: E402  (bench/, beside this file)
from runs import SCALES, Bench  # noqa: E402
from systems import Spoold  # noqa: E402


def main() -> int:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    isolation = sys.argv[2] if len(sys.argv) > 2 else "worker"
    durability = sys.argv[3] if len(sys.argv) > 3 else "fsync"
    sizes = SCALES["full"]
    root = Path(tempfile.mkdtemp(prefix="spoold-scale-repeat-"))
    ratios: list[float] = []
    try:
        bench = Bench("full", root)
        variant = Spoold(isolation, durability)
        variant.probe(root)
        if variant.keys is None:
            print(f"{variant.name}: {variant.unavailable}", file=sys.stderr)
            return 1
        window, later = sizes["scale_window"], tuple(sizes["scale_later"])
        for n in range(repeats):
            small = bench.scale_run(variant, sizes["scale_base"], window)
            large = bench.scale_run(variant, sizes["scale_files"], window, later)
            if not (small.get("ok") and large.get("ok")):
                print(f"repeat {n + 1}: failed: {small.get('error') or large.get('error')}")
                continue
            ratio = large["jobs_per_s"] / small["jobs_per_s"]
            ratios.append(ratio)
            print(f"repeat {n + 1}: {sizes['scale_base']:,} files {small['jobs_per_s']:g} jobs/s, "
                  f"{sizes['scale_files']:,} files {large['jobs_per_s']:g} jobs/s (first {window}), ratio {ratio:.2f}; "
                  f"jobs {later[0] + 1:,}-{later[1]:,}: {large.get('later_jobs_per_s', '—')} jobs/s", flush=True)
    finally:
        PROCS.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    if ratios:
        print(f"{variant.name}: ratio median {statistics.median(ratios):.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} repeats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
