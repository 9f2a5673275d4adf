"""The facts about GlusterFS that spoold relies on across hosts (SHARED-FS-NOTES §2), probed through two mounts.

If these fail, the multi-host tests built on them mean nothing: the rig itself is broken, or the
volume options (tests/sharedfs.py) no longer give what the design assumes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import HERE, Project, wait_for
from filelock import FileLock, Timeout

pytest_plugins = ["sharedfs"]


def _create(path: Path, data: bytes = b"{}") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_a_rename_race_between_two_mounts_has_exactly_one_winner(shared_dir: list[Path]) -> None:
    a, b = shared_dir[:2]
    (a / "ready").mkdir()
    (a / "hostA").mkdir()
    (a / "hostB").mkdir()
    races = 40
    outcomes: list[tuple[str, str]] = []
    for n in range(races):
        _create(a / "ready" / f"{n}.json")
        os.listdir(b / "ready")  # B has seen it: both movers know the name
        start = threading.Barrier(2)
        results: dict[str, str] = {}

        def move(mount: Path, host: str, n: int = n, start: threading.Barrier = start,
                 results: dict[str, str] = results) -> None:
            start.wait()
            try:
                os.rename(mount / "ready" / f"{n}.json", mount / host / f"{n}.json")
                results[host] = "won"
            except OSError as e:
                results[host] = errno.errorcode.get(e.errno or 0, str(e))

        threads = [threading.Thread(target=move, args=(mount, host)) for mount, host in ((a, "hostA"), (b, "hostB"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcomes.append((results["hostA"], results["hostB"]))
    assert all(sorted(o) == ["ENOENT", "won"] for o in outcomes), outcomes
    for mount in (a, b):  # one copy of each, where its winner put it, seen the same way through both mounts
        placed = sorted(os.listdir(mount / "hostA") + os.listdir(mount / "hostB"))
        assert placed == sorted(f"{n}.json" for n in range(races))
        assert os.listdir(mount / "ready") == []


HOLD = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_filelock_taken_through_one_mount_is_held_through_the_other_and_freed_when_its_holder_dies(
        shared_dir: list[Path]) -> None:
    a, b = shared_dir[:2]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(a / "daemon.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Timeout):
            FileLock(b / "daemon.lock").acquire(timeout=0.2)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        died = time.monotonic()
        other = FileLock(b / "daemon.lock")
        other.acquire(timeout=5)
        freed_after = time.monotonic() - died
        other.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout:
            holder.stdout.close()
    assert freed_after < 2, f"the dead holder's lock was free through B only after {freed_after:.2f}s"


def test_a_file_created_through_one_mount_shows_in_the_others_listing_within_milliseconds(
        shared_dir: list[Path]) -> None:
    a, b = shared_dir[:2]
    delays = []
    for n in range(20):
        _create(a / f"{n}.json")
        made = time.monotonic()
        wait_for(lambda n=n: f"{n}.json" in os.listdir(b), 2, f"{n}.json listed through B")
        delays.append(time.monotonic() - made)
    assert statistics.median(delays) < 0.05 and max(delays) < 0.5, delays


IN_CREATE, IN_MOVED_TO, IN_CLOSE_WRITE, IN_NONBLOCK = 0x100, 0x80, 0x8, 0o4000


def _inotify_events(fd: int, wait: float) -> int:
    """Bytes of events read within `wait` seconds (0: the kernel reported nothing)."""
    got = 0
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            got += len(os.read(fd, 65536))
    return got


def test_inotify_through_one_mount_sees_nothing_of_the_other_mounts_writes(shared_dir: list[Path]) -> None:
    a, b = shared_dir[:2]
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(IN_NONBLOCK)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(b), IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) >= 0
        _create(a / "from-a.json")
        os.rename(a / "from-a.json", a / "moved-by-a.json")
        wait_for(lambda: "moved-by-a.json" in os.listdir(b), 2, "A's file listed through B")
        assert _inotify_events(fd, 0.5) == 0
        _create(b / "from-b.json")  # the watch itself works: B's own writes are reported
        assert _inotify_events(fd, 0.5) > 0
    finally:
        os.close(fd)


@pytest.fixture
def project_on_a(tmp_path: Path, shared_dir: list[Path]) -> Iterator[Project]:
    """An app whose spool is on host A's mount (its config and logs stay local)."""
    root = tmp_path / "app"
    shutil.copytree(HERE / "jobs", root / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    project = Project(root)
    project.spool = shared_dir[0] / "spool"
    try:
        yield project
    finally:
        project.reap()


def test_an_auto_daemon_on_one_host_picks_up_jobs_dropped_through_another_host_in_a_fraction_of_a_second(
        project_on_a: Project, shared_dir: list[Path]) -> None:
    project = project_on_a
    project.configure(rescan_seconds=60)  # the rescan is far off: only the poller can find the jobs
    text = project.config.read_text()
    project.config.write_text(text.replace('spool_dir = "spool"', f'spool_dir = "{project.spool}"'))
    daemon = project.start()
    spool_b = shared_dir[1] / "spool"
    wait_for(lambda: (spool_b / "medium").is_dir() and (spool_b / "tmp").is_dir(), 5, "the spool seen through B")
    time.sleep(0.3)  # past the daemon's first rescan
    dropped: dict[str, float] = {}
    for n in range(50):
        job_id = f"from-b-{n}"
        _create(spool_b / "tmp" / f"{job_id}.json", json.dumps({"class": "Echo", "params": [n]}).encode())
        os.rename(spool_b / "tmp" / f"{job_id}.json", spool_b / "medium" / f"{job_id}.json")
        dropped[job_id] = time.time()
        time.sleep(random.uniform(0.05, 0.15))  # drops land anywhere in the poll period
    wait_for(lambda: len(project.names("done")) == 50, 30, "all 50 jobs done")
    latencies = sorted(datetime.fromisoformat(project.doc("done", job_id)["started_at"]).timestamp() - at
                       for job_id, at in dropped.items())
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    print(f"pick-up latency across mounts over {len(latencies)} jobs: p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")
    code, out = project.stop(daemon)
    assert code == 0
    assert "observer: polling (spool on fuse.glusterfs)" in out
    assert p50 < 0.3 and p99 < 1.0, latencies


def test_a_name_another_host_renamed_or_deleted_still_opens_here_for_a_moment(shared_dir: list[Path]) -> None:
    """What H6 of docs/design.md rests on: B looked a file up, then A renamed or deleted it; for about a
    second B still finds it under its old name (lstat, open and read succeed, from caches), and only
    B's listing of the folder is right. A renamed file is the very file, with one link."""
    a, b = shared_dir[:2]
    (a / "medium").mkdir()
    (a / "node").mkdir()
    ghosts = 0
    for n in range(20):
        name = f"{n}.json"
        _create(a / "medium" / name, b"{}")
        os.lstat(b / "medium" / name)  # B has looked it up
        renamed = n % 2 == 0
        if renamed:
            os.rename(a / "medium" / name, a / "node" / name)
        else:
            os.unlink(a / "medium" / name)
        old = b / "medium" / name
        if os.path.lexists(old):
            fd = os.open(old, os.O_RDONLY)
            try:
                assert os.read(fd, 10) == b"{}"
            finally:
                os.close(fd)
            assert name not in os.listdir(b / "medium"), "the server's listing is right"
            if renamed:
                seen, real = os.lstat(old), os.lstat(b / "node" / name)
                assert (seen.st_ino, seen.st_nlink) == (real.st_ino, 1)
            ghosts += 1
    assert ghosts >= 16, f"only {ghosts} of 20 names were still found: the caches changed, see H6"


def test_recovery_adopts_a_dead_hosts_claim_that_a_cache_still_shows_in_its_ready_folder(
        project: Project, shared_dir: list[Path]) -> None:
    """A claims a job B has just looked at, and dies; B recovers it within the second its cache still
    shows the job in medium/. B must adopt the one copy under its own id, not delete it as the stale
    leftover of a later state (how a job was lost in the long cut scenario)."""
    from dataclasses import replace

    from spoold.config import load_config
    from spoold.daemon.recovery import Recovery
    from spoold.logs import EventLog
    from spoold.paths import SpoolPaths
    from spoold.spool.intake import Intake
    from spoold.spool.moves import Mover
    from spoold.spool.node import open_node, this_host

    a, b = (folder / "spool" for folder in shared_dir[:2])
    project.configure()
    config = replace(load_config(project.config), spool_dir=b)
    paths = SpoolPaths(b)
    paths.create()
    node = open_node(paths, workers=1)
    mover = Mover(paths)
    recovery = Recovery(paths, node.id, Intake(node, mover, EventLog(config.log_dir)), mover)
    try:
        for n in range(5):
            job_id = f"seen-{n}"
            _create(a / "medium" / f"{job_id}.json", json.dumps({"class": "Echo", "params": [n]}).encode())
            os.lstat(b / "medium" / f"{job_id}.json")  # B's intake looked at it
            dead = a / "running" / f"{this_host()}-4242-dead{n}"  # of B's host: dead once its lock is free
            dead.mkdir()
            (dead / ".lock").touch()
            os.rename(a / "medium" / f"{job_id}.json", dead / f"{job_id}.json")  # A claims it, then dies
            assert os.path.lexists(b / "medium" / f"{job_id}.json"), "no stale name to test against"
            orphans = recovery.recover_dead(config, time.time())
            assert [o.job.id for o in orphans] == [job_id], f"{job_id}: not adopted ({orphans})"
            assert orphans[0].claimed == node.folder / f"{job_id}.json" and orphans[0].claimed.exists()
            assert "source_name" not in orphans[0].job.doc
    finally:
        node.close()
