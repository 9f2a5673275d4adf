"""What a job child costs: RSS, page faults, modules loaded, and launch delay, per start method.

Runs a real daemon (`spoold start --drain`) on a temporary spool with N probe jobs whose child
reports its own VmRSS, minor faults, sys.modules size and the time its job code began; the launch
delay is that time minus the `started_at` the daemon stamped.
Usage: .venv/bin/python bench/child_cost.py [N]   (`make bench-child`)
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime
from pathlib import Path

PROBE = '''
import resource, sys, time

class Probe:
    def handle(self):
        began = time.time()
        rss = 0
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return {"began": began, "rss_kb": rss, "minflt": resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
                "modules": len(sys.modules)}
'''


def measure(method: str, isolation: str, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "probejobs").mkdir()
        (root / "probejobs" / "__init__.py").write_text(textwrap.dedent(PROBE))
        (root / "bgjobs.toml").write_text(textwrap.dedent(f'''
            namespace = "probejobs"
            workers = 1
            start_method = "{method}"
            isolation = "{isolation}"
            durability = "fast"
            [allowed_jobs]
            Probe = ["handle"]
        '''))
        cli = Path(sys.executable).with_name("spoold")
        for _ in range(count):
            subprocess.run([str(cli), "submit", "--config", str(root / "bgjobs.toml"), "Probe", "handle"],
                           check=True, capture_output=True)
        subprocess.run([str(cli), "start", "--drain", "--config", str(root / "bgjobs.toml")], check=True,
                       capture_output=True, timeout=600)
        rows = []
        for path in (root / "spool" / "done").glob("*.json"):
            doc = json.loads(path.read_text())
            started = datetime.fromisoformat(doc["started_at"]).timestamp()
            rows.append((doc["result"]["began"] - started, doc["result"]["rss_kb"], doc["result"]["minflt"],
                         doc["result"]["modules"]))
        assert len(rows) == count, f"{len(rows)} of {count} done"
        rows = rows[2:]  # the first jobs pay for the server's start
        return {"launch_ms_p50": 1000 * statistics.median(r[0] for r in rows),
                "rss_kb_p50": statistics.median(r[1] for r in rows),
                "minflt_p50": statistics.median(r[2] for r in rows),
                "modules": statistics.median(r[3] for r in rows)}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    for method, isolation in (("forkserver", "process"), ("spawn", "process"), ("forkserver", "worker")):
        row = measure(method, isolation, count)
        print(f"{method:10} {isolation:8} launch p50 {row['launch_ms_p50']:7.2f} ms  RSS {row['rss_kb_p50']:7.0f} kB"
              f"  minflt {row['minflt_p50']:6.0f}  modules {row['modules']:4.0f}")


if __name__ == "__main__":
    main()
