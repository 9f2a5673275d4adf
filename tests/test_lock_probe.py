"""Probing another daemon's lock while it leaves (spool/node.py, try_lock_dead): real processes, real locks.

A daemon leaving the spool removes its lock file, then its folder. A prober that looked at the lock file
just before, then opened it just after, made a new one; for another host's folder (where the lease, not
the lock, decides) it let go and left that file behind, and the leaving daemon's folder stayed
(test_multihost[cut] found two such folders, holding only `.lock`, after every daemon had stopped)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from spoold.spool.node import LOCK_NAME, try_lock_dead

OWNER = r"""
import os, sys, time
from pathlib import Path
from spoold.spool.node import LOCK_NAME, spool_lock
root, seconds = Path(sys.argv[1]), float(sys.argv[2])
left, n, end = 0, 0, time.monotonic() + seconds
while time.monotonic() < end:
    folder, staging = root / f"node-{n}", root / f".staging-{n}"
    n += 1
    staging.mkdir()  # as open_node: made under a hidden name, which probers pass by, then shown whole
    lock = spool_lock(staging / LOCK_NAME)
    lock.acquire()
    (staging / ".info").write_text("{}")
    os.rename(staging, folder)
    for name in sorted(os.listdir(folder), key=lambda name: name == LOCK_NAME):  # as Node.close: .lock last
        (folder / name).unlink(missing_ok=True)
    # Node.close tries its rmdir for about a second. It cannot remove a lock file a prober made meanwhile:
    # over GlusterFS its own client still remembers, for a second, that it removed that name (its unlink
    # finds nothing), so here it does not try.
    for attempt in range(20):
        try:
            folder.rmdir()
            break
        except FileNotFoundError:
            break  # removed for us (Node.close takes that as done too)
        except OSError:
            time.sleep(0.05)
    else:
        left += 1
    lock.release(force=True)
print(n, left)
"""


def test_a_probe_of_a_leaving_daemons_lock_never_leaves_a_lock_file_behind(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path), "4"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    probes = 0
    while owner.poll() is None:
        for entry in os.scandir(tmp_path):
            if entry.name.startswith("."):
                continue  # as node.other_nodes: a folder still being made
            lock = try_lock_dead(Path(entry.path))
            if lock is not None:
                lock.release(force=True)  # as for another host's folder whose lease has not ended
            probes += 1
        time.sleep(0)
    out, err = owner.communicate()
    assert owner.returncode == 0, err
    cycles, left = map(int, out.split())
    assert cycles > 500 and probes > 500, (cycles, probes)
    assert left == 0, f"{left} of {cycles} folders could not be removed: a probe made their lock file again"
    assert [p.name for p in tmp_path.iterdir()] == []
    assert not list(tmp_path.glob(f"*/{LOCK_NAME}"))
