"""The floors: the least a process-per-job runner can do per job, measured like the real systems.

    python floor.py fork|spawn KIND SPOOL RECORD RSS_MB [INFLIGHT]

For every file in SPOOL/ready (sorted, listed once): rename it into SPOOL/running/, start a child
that runs the same job body as everyone (benchjobs.common), reap it, rename the file into
SPOOL/done/; INFLIGHT (default 2) children at a time.

- fork:  the parent first grows to RSS_MB (the daemon's size), so each fork copies the page tables
         of a process that big; the child runs the body and leaves with os._exit(0).
- spawn: posix_spawn of a fresh `python -c ...` (no site tweaks), the shape of spoold's
         process-per-job mode (a new interpreter per job), minus everything the daemon adds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchjobs import common

SPAWN_CODE = "import sys; from benchjobs import common; common.BODIES[sys.argv[1]](int(sys.argv[2]), sys.argv[3])"


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    mode, kind, spool, record, rss_mb = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], float(sys.argv[5])
    inflight = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    body = common.BODIES[kind]
    ballast = b""
    if mode == "fork":
        extra = max(0.0, rss_mb - current_rss_mb())
        ballast = b"\1" * int(extra * 1024 * 1024)  # written, so resident
    ready, running, done = spool / "ready", spool / "running", spool / "done"
    running.mkdir(exist_ok=True)
    done.mkdir(exist_ok=True)
    names = sorted(os.listdir(ready))
    children: dict[int, str] = {}
    environ = dict(os.environ)

    def start(name: str) -> None:
        os.rename(ready / name, running / name)
        seq = int(name.split(".")[0])
        if mode == "fork":
            pid = os.fork()
            if pid == 0:
                try:
                    body(seq, record)
                finally:
                    os._exit(0)
        else:
            pid = os.posix_spawn(sys.executable, [sys.executable, "-c", SPAWN_CODE, kind, str(seq), record], environ)
        children[pid] = name

    queue = iter(names)
    for name in queue:
        start(name)
        if len(children) >= inflight:
            break
    for name in queue:
        pid, _status = os.wait()
        finished = children.pop(pid)
        os.rename(running / finished, done / finished)
        start(name)
    while children:
        pid, _status = os.wait()
        finished = children.pop(pid)
        os.rename(running / finished, done / finished)
    del ballast
    return 0


if __name__ == "__main__":
    sys.exit(main())
