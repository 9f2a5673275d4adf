"""Does a fsync's completion wait for a CPU? A submit's folder fsync beside a process that computes.

    .venv/bin/python bench/fsync_wake.py [SPIN_MS] [READERS] [CALLS]   (defaults: 1.5 1 50)

What `bench/latency_split.py` shows a submitter, without spoold: a writer stages a file, fsyncs it,
links it into a folder, tells READERS other processes (a byte on a pipe each), then fsyncs the folder,
one file every 100 ms. Each reader, told, renames the file away (as a daemon's claim does; the first
one wins) and then computes for SPIN_MS. Prints the medians of the writer's two fsyncs with the readers
idle (SPIN_MS 0) and computing. Were a fsync's completion independent of the CPUs, the second figure
would not move; on this project's 2-vCPU VM the folder fsync took 0.30-0.35 ms beside idle readers and
1.9 ms beside one or two computing for 1.5 ms, though one of the two CPUs was free with one reader.
Files live under $TMPDIR. Linux or macOS.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READER = """
import os, sys, time
ready, claimed, spin = sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000
while line := sys.stdin.buffer.readline():
    name = line.strip().decode()
    try:
        os.rename(os.path.join(ready, name), os.path.join(claimed, name + "." + str(os.getpid())))
    except FileNotFoundError:
        pass  # another reader took it
    end = time.perf_counter() + spin
    while time.perf_counter() < end:
        pass
"""


def run(root: Path, spin_ms: float, readers: int, calls: int) -> tuple[float, float]:
    tmp, ready, claimed = root / "tmp", root / "ready", root / "claimed"
    for folder in (tmp, ready, claimed):
        folder.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", READER, str(ready), str(claimed), str(spin_ms)],
                              stdin=subprocess.PIPE) for _ in range(readers)]
    files, folders = [], []
    try:
        time.sleep(0.3)
        for n in range(calls):
            staged = tmp / f"{n}.part"
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"x" * 300)
            began = time.perf_counter()
            os.fsync(fd)
            files.append(time.perf_counter() - began)
            os.close(fd)
            os.link(staged, ready / f"{n}.json")
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(f"{n}.json\n".encode())
                proc.stdin.flush()
            folder = os.open(ready, os.O_RDONLY)
            began = time.perf_counter()
            os.fsync(folder)
            folders.append(time.perf_counter() - began)
            os.close(folder)
            os.unlink(staged)
            time.sleep(0.1)
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
    return statistics.median(files) * 1000, statistics.median(folders) * 1000


def main() -> int:
    spin_ms = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    readers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    calls = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    for spin in (0.0, spin_ms):
        root = Path(tempfile.mkdtemp(prefix="spoold-fsync-wake-"))
        try:
            file_ms, folder_ms = run(root, spin, readers, calls)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"{readers} reader(s) computing {spin:g} ms after each claim: fsync p50 of the file {file_ms:.2f} ms, "
              f"of its folder {folder_ms:.2f} ms ({calls} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
