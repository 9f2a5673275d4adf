"""What one scrape of a daemon's /metrics costs with 100,000 files in done/ (SPEC §10; spoold/spool/counts.py).

A real `spoold start` with metrics_port set, over a spool whose done/ holds N job files; scraped over HTTP:
the first scrape (done/ listed once), scrapes of an unchanged spool (median of 20), and scrapes while done/
changes before each one (a file added, as a busy daemon does; median of 20: a changed 100,000-file folder is
listed again only every few seconds), then how long until the count shows the added files. The plain
listing of done/ (os.scandir) is timed for comparison.

Usage: .venv/bin/python bench/metrics_scrape.py [N]   (default 100000)
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CONFIG = """spool_dir = "spool"
log_dir = "logs"
namespace = "jobs"
metrics_port = {port}
[allowed_jobs]
Echo = ["handle"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> tuple[float, bytes]:
    began = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        body = response.read()
    return time.perf_counter() - began, body


def done_count(body: bytes) -> int:
    for line in body.decode().splitlines():
        if line.startswith('spoold_jobs{state="done"}'):
            return int(float(line.split()[-1]))
    raise AssertionError("no spoold_jobs{state=\"done\"} in the scrape")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        (root / "bgjobs.toml").write_text(CONFIG.format(port=port))
        (root / "jobs").mkdir()
        (root / "jobs" / "__init__.py").write_text("class Echo:\n    def handle(self, *a):\n        return list(a)\n")
        done = root / "spool" / "done"
        done.mkdir(parents=True)
        for i in range(count):
            (done / f"20261201-000000-000000-{i:08x}.json").write_bytes(b"{}")
        then = time.time() - 60
        os.utime(done, (then, then))
        began = time.perf_counter()
        listed = sum(1 for entry in os.scandir(done) if entry.name.endswith(".json"))
        listing = time.perf_counter() - began
        daemon = subprocess.Popen([sys.executable, "-m", "spoold", "start", "--config", str(root / "bgjobs.toml")],
                                  cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    first, body = scrape(port)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the endpoint did not come up"
                    time.sleep(0.05)
            assert done_count(body) == listed == count, (done_count(body), listed, count)
            unchanged = [scrape(port)[0] for _ in range(20)]
            changing = []
            for i in range(20):
                (done / f"20261202-000000-000000-{i:08x}.json").write_bytes(b"{}")
                changing.append(scrape(port)[0])
                time.sleep(0.25)  # scrapes 4 times a second: far more often than any Prometheus does
            waited = time.monotonic()
            slowest = 0.0
            while (final := done_count((result := scrape(port))[1])) != count + 20:
                slowest = max(slowest, result[0])
                assert time.monotonic() - waited < 60, "the count never caught up"
                time.sleep(0.25)
            caught_up = time.monotonic() - waited
            slowest = max(slowest, result[0])
        finally:
            daemon.terminate()
            daemon.wait(30)
    ms = 1000.0
    print(f"done/ with {count:,} files; os.scandir of it: {listing * ms:.1f} ms")
    print(f"first scrape (done/ listed):               {first * ms:.1f} ms")
    print(f"unchanged spool, median of 20:             {statistics.median(unchanged) * ms:.1f} ms "
          f"(max {max(unchanged) * ms:.1f})")
    print(f"done/ changed before each, median of 20:   {statistics.median(changing) * ms:.1f} ms "
          f"(max {max(changing) * ms:.1f})")
    print(f"the count showed all {final:,} files {caught_up:.1f} s after the last change (the scrape that "
          f"listed done/ again: {slowest * ms:.1f} ms)")


if __name__ == "__main__":
    main()
