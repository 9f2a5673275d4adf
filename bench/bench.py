"""spoold against Huey and RQ, in one run, on the same jobs; see bench/README.md.

Run through `make bench` (or bench/run.sh), which provides the venv and a private redis-server
(BENCH_REDIS_PORT, BENCH_REDIS_PID). BENCH_SCALE=small for a quick run. Every process this script
starts is ended (by pid) on every exit path.

Where things are: processes.py (the processes started, ended by pid, and what is read of them), systems.py
(the base class, spoold's variants, the fork, spawn and file floors), peers.py (Huey and RQ), runs.py
(throughput, latency, scale), report.py (tables, targets, chart, files); this file, the entry point, runs them
in order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peers import RQ, Huey
from processes import PROCS, log
from report import REPO, fs_probe, header, machine_info, markdown, new_row, save, source_digest, targets, value
from runs import SCALES, Bench, run_latency, run_scale, run_throughput, scale_variants
from systems import FILE_FLOOR_LOOPS, HERE, KINDS, WORKERS, FileFloor, Floor, Spoold, System


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(143)


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
    report["machine"]["fs_probe_at_start"] = fs_probe(root)
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
    file_floors = [FileFloor(d, FILE_FLOOR_LOOPS) for d in ("fsync", "fast")]
    systems: list[System] = [*spoolds, Floor("fork", daemon_rss), *file_floors, spawn,
                             Huey(fast=False), Huey(fast=True), RQ()]
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
    report["machine"]["fs_probe_at_end"] = fs_probe(root)
    report["targets"] = targets(report)
    text = markdown(report)
    print(text)
    for path in save(report, text):
        log(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
