"""Throughput of 1, 2 and 3 hosts on one GlusterFS volume against one host on local disk, and the
drop-to-start latency across hosts (issue 12, point 5). Hosts, daemons and jobs as in tests/multihost.py
(2 daemons x 2 workers per host, heartbeat 1 s, lease 6 s, observer auto, the default-cache volume with
network namespaces of tests/sharedfs.py); everything runs on this one machine, so the hosts share its cores.

    .venv/bin/python bench/multihost.py [--jobs 600] [--latency-jobs 150]

Throughput: the jobs (no-op Record jobs) are dropped first, then the daemons start; jobs/s from the moment
every daemon has joined to the last one in done/. Latency: jobs dropped through the first host at about
10/s while every daemon runs, `started_at` (written by the host that ran it) minus the drop time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from multihost import Cluster  # noqa: E402
from sharedfs import Host, Rig  # noqa: E402


def throughput(root: Path, hosts: list[Host], relative: str, jobs: int) -> float:
    cluster = Cluster(root, hosts, relative, seconds=0.0, long_every=0)
    try:
        cluster.submit(jobs, prefix="t-")
        cluster.start_all()
        began = time.monotonic()
        cluster.wait_done(jobs, 600)
        rate = jobs / (time.monotonic() - began)
        cluster.stop_all()
        return rate
    finally:
        cluster.close()


def latency(root: Path, hosts: list[Host], relative: str, jobs: int) -> tuple[float, float, float]:
    from spoold import run_background_job

    cluster = Cluster(root, hosts, relative, seconds=0.0, long_every=0)
    try:
        cluster.start_all()
        time.sleep(2)
        dropped = {}
        for n in range(jobs):
            job_id = run_background_job("Record", "handle", [str(cluster.records), f"l-{n}", "0"],
                                        config=cluster.configs[hosts[0].name])
            dropped[job_id] = time.time()
            time.sleep(0.1)
        cluster.wait_done(jobs, 120)
        cluster.stop_all()
        done = cluster.spool() / "done"
        delays = sorted(datetime.fromisoformat(json.loads((done / f"{i}.json").read_text())["started_at"]).timestamp()
                        - at for i, at in dropped.items())
        return statistics.median(delays), delays[int(0.99 * (len(delays) - 1))], delays[-1]
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--latency-jobs", type=int, default=150)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spoold-multihost-"))
    rig = Rig()
    try:
        rig.start()
        volume = rig.volume(partition=True)
        local = Host("local", root / "localdisk")
        local.mount.mkdir()
        rows = [("1 host, local disk", throughput(root / "local", [local], "spool", args.jobs))]
        for count in (1, 2, 3):
            relative = f"bench-{os.getpid()}-{count}"
            volume.folders(relative)
            rows.append((f"{count} host(s), GlusterFS", throughput(root / f"g{count}", volume.hosts[:count],
                                                                  f"{relative}/spool", args.jobs)))
            shutil.rmtree(volume.hosts[0].mount / relative, ignore_errors=True)
        relative = f"bench-{os.getpid()}-latency"
        volume.folders(relative)
        p50, p99, worst = latency(root / "lat", volume.hosts, f"{relative}/spool", args.latency_jobs)
        shutil.rmtree(volume.hosts[0].mount / relative, ignore_errors=True)
    finally:
        rig.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.jobs} no-op jobs, 2 daemons x 2 workers per host, {os.cpu_count()} cores shared by every host")
    for label, rate in rows:
        print(f"  {label:24} {rate:7.1f} jobs/s")
    print(f"drop-to-start across 3 hosts ({args.latency_jobs} jobs dropped through hostA at ~10/s): "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms")


if __name__ == "__main__":
    main()
