"""How fast the dashboard answers over a large spool: 100,000 jobs in done/, 10,000 in failed/, a log of
200,000 lines. Every page and API call is timed over real HTTP against `spoold dashboard`, warm (median
of 5, after one call) and cold: the first call for the spool of a fresh dashboard process (its templates
compiled by one call to /login) after the page cache was dropped (needs root for /proc/sys/vm/drop_caches,
else the cold column says so).

Before the table, one dashboard answers every call once, as a dashboard that ran before a restart would
have (its disk cache, spoold/dashboard/diskcache.py, is then in place); `--no-disk-cache` leaves that out.

Usage: .venv/bin/python bench/dashboard_speed.py [DONE] [FAILED] [--no-disk-cache]   (`make bench-dashboard`)
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

CONFIG = """spool_dir = "spool"
log_dir = "logs"
namespace = "jobs"
[allowed_jobs]
Echo = ["handle"]
Raise = ["handle"]
"""


def job_id(moment: datetime, i: int) -> str:
    return f"{moment:%Y%m%d-%H%M%S-%f}-{i:08x}"


def fill(root: Path, done: int, failed: int) -> str:
    spool = root / "spool"
    for name in ("tmp", "high", "medium", "low", "scheduled", "running", "done", "failed", "rejected"):
        (spool / name).mkdir(parents=True)
    (root / "logs").mkdir()
    start = datetime.now(UTC) - timedelta(days=2)
    lines = []
    for i in range(done + failed):
        moment = start + timedelta(seconds=i * 172800 / (done + failed))
        ident = job_id(moment, i)
        ok = i >= failed
        doc = {"id": ident, "class": "Echo" if ok else "Raise", "method": "handle", "params": [str(i)],
               "status": "done" if ok else "failed", "attempts": 1, "created_at": moment.isoformat(),
               "finished_at": moment.isoformat(), "result": [str(i)] if ok else None,
               "error": None if ok else {"type": "RuntimeError", "message": f"boom {i}", "traceback": "Traceback..."},
               "history": [{"attempt": 1, "outcome": "success" if ok else "failure", "duration_ms": 12}]}
        (spool / ("done" if ok else "failed") / f"{ident}.json").write_text(json.dumps(doc))
        stamp = moment.isoformat()
        lines.append(f"{stamp} job={ident} class={doc['class']} method=handle attempt=1 status=started\n")
        status = "success" if ok else "failure error=RuntimeError"
        lines.append(f"{stamp} job={ident} class={doc['class']} method=handle attempt=1 status={status} "
                     f"duration_ms={10 + i % 50}\n")
    (root / "logs" / "background_jobs.log").write_text("".join(lines))
    (root / "bgjobs.toml").write_text(CONFIG)
    return job_id(start + timedelta(seconds=(done + failed - 1) * 172800 / (done + failed)), done + failed - 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
        assert response.status == 200, url
    return (time.perf_counter() - began) * 1000


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


class Server:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "spoold", "dashboard", "--port", str(self.port),
                                      "--config", str(root / "bgjobs.toml")], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/static/dashboard.css", timeout=1).read()
                return
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.1)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def main() -> None:
    numbers = [int(arg) for arg in sys.argv[1:] if arg.isdigit()]
    done = numbers[0] if numbers else 100_000
    failed = numbers[1] if len(numbers) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        newest = fill(root, done, failed)
        some_failed = sorted(os.listdir(root / "spool" / "failed"))[-1][:-5]
        paths = ["/", "/jobs?state=done", "/jobs?state=failed", "/jobs?state=failed&error=RuntimeError",
                 "/jobs?state=done&q=99999", f"/jobs/{newest}", f"/jobs/{some_failed}", "/errors", "/stats",
                 "/stats?window=604800", "/api/status", "/api/jobs?state=done&limit=50",
                 "/api/jobs?state=failed&class=Raise", f"/api/jobs/{newest}", "/api/stats?window=86400"]
        os.environ["XDG_CACHE_HOME"] = str(root / "cache")  # the dashboards' disk cache, kept across them
        if "--no-disk-cache" not in sys.argv:
            earlier = Server(root)  # a dashboard that ran before: what it left in its disk cache is reused
            for path in paths:
                get(earlier.url(path))
            earlier.stop()
        print(f"{done:,} jobs in done/, {failed:,} in failed/, {2 * (done + failed):,} log lines")
        print("| request | warm (median of 5) | cold (first call, page cache dropped) |\n|---|---|---|")
        for path in paths:
            cold: str
            if drop_caches():
                server = Server(root)
                get(server.url("/login"))  # the templates compiled: what is cold is the spool and the logs
                drop_caches()
                cold = f"{get(server.url(path)):.0f} ms"
                server.stop()
            else:
                cold = "needs root"
            server = Server(root)
            get(server.url(path))
            warm = statistics.median(get(server.url(path)) for _ in range(5))
            server.stop()
            print(f"| `{path}` | {warm:.0f} ms | {cold} |", flush=True)


if __name__ == "__main__":
    main()
