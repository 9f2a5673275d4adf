"""The floors: the least a runner can do per job, measured like the real systems.

    python floor.py fork|spawn KIND SPOOL RECORD RSS_MB [INFLIGHT]
    python floor.py file KIND SPOOL RECORD fsync|fast [LOOPS]

fork and spawn, the process-per-job floors: for every file in SPOOL/ready (sorted, listed once):
rename it into SPOOL/running/, start a child that runs the same job body as everyone
(benchjobs.common), reap it, rename the file into SPOOL/done/; INFLIGHT (default 2) children at a time.

- fork:  the parent first grows to RSS_MB (the daemon's size), so each fork copies the page tables
         of a process that big; the child runs the body and leaves with os._exit(0).
- spawn: posix_spawn of a fresh `python -c ...` (no site tweaks), the shape of spoold's
         process-per-job mode (a new interpreter per job), minus everything the daemon adds.

file, the spool's own floor: spoold's file protocol for one job at a time and nothing else, the body
run in-process (no child, no pipe, no log, no event line). SPOOL is a spoold spool the jobs were
submitted to with run_background_job; for every file in SPOOL/medium (sorted, listed once), the steps
spoold takes (spool/intake.py Intake.take; spool/moves.py Mover.commit; spool/fsio.py publish_many,
write_tmp, fsync_dir), in its order:

    rename(medium/ID.json, running/NODE/ID.json)                 the claim
    open, read, close of the claimed copy; json.loads            the job's params (spoold reads it too)
    the body
    rename(running/NODE/ID.json, running/NODE/.ID.json.moving)   the seize (Mover.seize)
    open(tmp/.RANDOM.part, O_EXCL), write, [fsync], close        the result document (write_tmp)
    [open(running/NODE/), fsync, close]                          the claim made durable first (moves.ClaimLog)
    link(tmp/.RANDOM.part, done/ID.json)                         no-replace publish
    [open(done/), fsync, close]                                  the folder fsync, one per job here
    unlink(tmp/.RANDOM.part), unlink(running/NODE/.ID.json.moving)

[...] only with fsync. The result is the document spoold writes for a done job (the job plus status,
times, a one-attempt history; indented JSON, about 670 bytes for a bench job). LOOPS (default 1)
loops run in parallel processes, loop i taking every LOOPS-th file: each claims only its own share.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchjobs import common

SPAWN_CODE = "import sys; from benchjobs import common; common.BODIES[sys.argv[1]](int(sys.argv[2]), sys.argv[3])"


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def process_floor(mode: str, kind: str, spool: Path, record: str, rss_mb: float, inflight: int) -> int:
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


def file_loop(kind: str, spool: str, names: list[str], durable: bool, node: str) -> None:
    """spoold's file protocol for each of `names` in turn (see the module's docstring), nothing more."""
    body = common.BODIES[kind]
    ready, tmp, done = f"{spool}/medium/", f"{spool}/tmp/", f"{spool}/done/"
    running = f"{spool}/running/{node}/"
    for name in names:
        claimed = running + name
        os.rename(ready + name, claimed)
        fd = os.open(claimed, os.O_RDONLY)
        try:
            data = os.read(fd, 65536)  # spoold's read size; a bench job is 256 bytes
        finally:
            os.close(fd)
        doc = json.loads(data)
        started = datetime.now(UTC).isoformat()
        body(*doc["params"])
        finished = datetime.now(UTC).isoformat()
        doc.update(status="done", attempts=1, started_at=started, finished_at=finished,
                   history=[{"attempt": 1, "started_at": started, "finished_at": finished, "duration_ms": 0,
                             "outcome": "success", "error_type": None, "node": node, "pid": os.getpid()}],
                   result=None)
        result = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
        seized = f"{running}.{name}.moving"
        os.rename(claimed, seized)
        staged = f"{tmp}.{secrets.token_hex(8)}.part"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, result)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if durable:  # the claim is durable before the result is (spoold: moves.ClaimLog)
            fd = os.open(running, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.link(staged, done + name)
        if durable:
            fd = os.open(done, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.unlink(staged)
        os.unlink(seized)


def file_floor(kind: str, spool: Path, durability: str, loops: int) -> int:
    if durability not in ("fsync", "fast"):
        raise SystemExit(f"floor.py file: durability must be fsync or fast, not {durability!r}")
    names = sorted(n for n in os.listdir(spool / "medium") if n.endswith(".json"))
    for folder in ("tmp", "done"):
        (spool / folder).mkdir(exist_ok=True)
    pids = []
    for index in range(1, loops):  # the other loops, in their own processes
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                node = f"floor-{os.getpid()}"
                (spool / "running" / node).mkdir(parents=True)
                file_loop(kind, str(spool), names[index::loops], durability == "fsync", node)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    node = f"floor-{os.getpid()}"
    (spool / "running" / node).mkdir(parents=True)
    file_loop(kind, str(spool), names[0::loops], durability == "fsync", node)
    failed = [pid for pid in pids if os.waitpid(pid, 0)[1] != 0]
    return 1 if failed else 0


def main() -> int:
    mode, kind, spool, record = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    if mode == "file":
        return file_floor(kind, spool, sys.argv[5], int(sys.argv[6]) if len(sys.argv) > 6 else 1)
    inflight = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    return process_floor(mode, kind, spool, record, float(sys.argv[5]), inflight)


if __name__ == "__main__":
    sys.exit(main())
