"""Leases between hosts (SPEC §11): a heartbeat per daemon, a lease timed by the checker's own clock, and
a daemon that fences itself. Real daemons on one spool; "another host" is a daemon in a UTS namespace of
its own (tests/hosts.py), its monotonic clock shifted by a time namespace.

Its wall clock is not shifted: faketime, the one way to shift it for a single process, breaks Python's
own timed waits (with its fake monotonic clock `threading.Event.wait(0.2)` waits the whole offset; without
it `time.sleep` fails with EINVAL; libfaketime 0.9.10 here). Leases never read a wall clock or an mtime
(a heartbeat is a counter), which test_a_heartbeat_is_judged_by_its_counter_never_by_its_mtime checks.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HERE, Project, process_gone, read_pid, wait_for

from spoold.spool.lease import HEARTBEAT_NAME, LeaseBook, write_heartbeat
from spoold.spool.node import this_host

HEARTBEAT, LEASE_SECONDS = 0.3, 2.4  # a daemon fences itself 0.6 s before its lease ends
LEASE = {"heartbeat_seconds": str(HEARTBEAT), "lease_seconds": str(LEASE_SECONDS)}


def leased(project: Project, **keys: str) -> None:
    project.configure(workers=1, retry_attempts=2, shutdown_grace_seconds=1, rescan_seconds=0.2)
    project.set_keys(**(LEASE | keys))


def folder_of(project: Project, job_id: str) -> Path | None:
    """The daemon folder holding the job's claim (or its seized copy) now."""
    for folder in project.daemon_folders():
        if (folder / f"{job_id}.json").exists() or (folder / f".{job_id}.json.moving").exists():
            return folder
    return None


def start_as_host(project: Project, host: str, *, clock_offset: int = 0) -> subprocess.Popen[str]:
    """A daemon that sees itself on machine `host`, its monotonic clock `clock_offset` seconds off."""
    command = [sys.executable, "-m", "spoold", "start", "--config", str(project.config)]
    unshare = ["unshare", "--uts", "--fork"]
    if clock_offset:
        unshare += ["--time", "--monotonic", str(clock_offset), "--boottime", str(clock_offset)]
    proc = subprocess.Popen([*unshare, sys.executable, str(HERE / "hosts.py"), host, "--", *command],
                            cwd=project.root, env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    project.procs.append(proc)
    wait_for(lambda: any(f.name.startswith(f"{host}-") for f in project.daemon_folders()), 10, f"{host}'s folder")
    return proc


def test_a_daemon_renews_its_heartbeat_and_its_id_starts_with_the_host_name(project: Project) -> None:
    leased(project)
    project.start()
    [folder] = project.daemon_folders()
    assert folder.name.startswith(f"{this_host()}-")
    first = (folder / HEARTBEAT_NAME).read_text()
    wait_for(lambda: (folder / HEARTBEAT_NAME).read_text() != first, 2, "a renewal")
    assert int((folder / HEARTBEAT_NAME).read_text()) > int(first)


def test_a_dead_daemon_of_another_host_is_recovered_only_past_its_lease(project: Project) -> None:
    leased(project)
    local = project.start()
    marker = project.root / "pid"
    other = start_as_host(project, "otherhost")
    [remote] = [f for f in project.daemon_folders() if f.name.startswith("otherhost-")]
    local.send_signal(signal.SIGSTOP)  # so the other host takes the job
    job_id = project.submit("Sleep", "handle", ["30", str(marker)])
    read_pid(marker)
    assert folder_of(project, job_id) == remote
    local.send_signal(signal.SIGCONT)
    time.sleep(0.5)  # the local daemon has seen the other's heartbeat change since it woke up
    os.killpg(other.pid, signal.SIGKILL)  # the host dies: its daemon, fork server and job at once
    killed = time.monotonic()
    wait_for(lambda: folder_of(project, job_id) != remote, 10, "the orphan taken over")
    taken = time.monotonic() - killed
    # Its lock was free at once, but a lock may be local to a host: only the lease counts.
    assert taken >= LEASE_SECONDS - HEARTBEAT, f"taken over after {taken:.2f}s, before the lease of {LEASE_SECONDS}s"
    wait_for(lambda: "recovered" in project.events(job_id), 5, "its recovered line")  # logged after the move


def test_a_heartbeat_is_judged_by_its_counter_never_by_its_mtime(tmp_path: Path) -> None:
    """On GlusterFS a file's mtime is its writer's clock: a host minutes off writes mtimes minutes off."""
    folder = tmp_path / "otherhost-1-abcdef"
    folder.mkdir()
    book = LeaseBook(lease_seconds=1.0)
    write_heartbeat(folder, 1)
    os.utime(folder / HEARTBEAT_NAME, (time.time() + 600, time.time() + 600))  # ten minutes ahead
    assert not book.expired(folder, now=100.0)
    os.utime(folder / HEARTBEAT_NAME, (0, 0))  # 1970: still the same counter, nothing changed
    assert not book.expired(folder, now=100.9)
    assert book.expired(folder, now=101.0), "unchanged for a lease of our own clock"
    write_heartbeat(folder, 2)
    os.utime(folder / HEARTBEAT_NAME, (0, 0))
    assert not book.expired(folder, now=101.5), "a new counter, whatever its mtime, starts the lease again"
    assert book.expired(folder, now=102.5)


def test_a_host_whose_monotonic_clock_is_far_off_is_neither_taken_for_dead_nor_takes_others_for_dead(
        project: Project) -> None:
    leased(project)
    project.configure(workers=2, retry_attempts=2, shutdown_grace_seconds=1, rescan_seconds=0.2)
    project.set_keys(**LEASE)
    project.start()
    start_as_host(project, "skewedhost", clock_offset=3600)  # its monotonic clock an hour ahead
    ids = [project.submit("Sleep", "handle", ["0.3"]) for _ in range(20)]
    wait_for(lambda: all(project.has("done", job_id) for job_id in ids), 30, "every job done")
    time.sleep(2 * LEASE_SECONDS)  # two leases more, both daemons idle and renewing
    lines = project.log_lines()
    assert not [line for line in lines if "status=recovered" in line]
    runs = {job_id: project.events(job_id).count("started") for job_id in ids}
    assert set(runs.values()) == {1}, runs
    hosts = {project.doc("done", job_id)["history"][-1]["node"].split("-")[0] for job_id in ids}
    assert hosts == {this_host(), "skewedhost"}, "both hosts ran jobs"


def test_a_frozen_daemon_loses_its_jobs_after_its_lease_and_writes_nothing_for_them_when_it_wakes(
        project: Project) -> None:
    leased(project)
    marker = project.root / "pid"
    frozen = project.start()
    job_id = project.submit("Sleep", "handle", ["1.5", str(marker)])
    read_pid(marker)
    [old] = project.daemon_folders()
    frozen.send_signal(signal.SIGSTOP)  # its job's child runs on, and finishes while it is frozen
    other = project.start()
    wait_for(lambda: project.has("done", job_id), 20, "the job done by the other daemon")
    time.sleep(0.5)
    frozen.send_signal(signal.SIGCONT)
    wait_for(lambda: not old.exists(), 10, "the frozen daemon's old folder gone once it woke")
    wait_for(lambda: {"recovered", "success"} <= set(project.events(job_id)), 5, "its lines")  # logged after moves
    events = project.events(job_id)
    assert events.count("success") == 1 and "recovered" in events, events
    history = project.doc("done", job_id)["history"]
    assert history[-1]["node"] != old.name and history[0]["error_type"] == "Orphaned"
    # It fenced itself and joined again as a new daemon, which runs jobs.
    wait_for(lambda: len(project.daemon_folders()) == 2, 10, "the woken daemon joined again")
    later = project.submit("Echo", "handle", ["after"])
    wait_for(lambda: project.has("done", later), 10, "a job after the wake-up")
    assert project.stop(other)[0] == 0
    code, out = project.stop(frozen)
    assert code == 0 and re.search(r"lease of \S+ lost", out), out


def test_a_daemon_that_cannot_renew_its_lease_stops_its_job_before_the_lease_ends(project: Project) -> None:
    leased(project)
    marker = project.root / "pid"
    daemon = project.start()
    job_id = project.submit("Sleep", "handle", ["30", str(marker)])
    child = read_pid(marker)
    [folder] = project.daemon_folders()
    (folder / HEARTBEAT_NAME).unlink()
    (folder / HEARTBEAT_NAME).mkdir()  # a real failure of the real rename: the renewal cannot replace it
    (folder / HEARTBEAT_NAME / "x").touch()
    broken = time.monotonic()
    wait_for(lambda: process_gone(child), LEASE_SECONDS + 2, "the job's child killed")
    stopped = time.monotonic() - broken
    assert stopped < LEASE_SECONDS, f"the job ran {stopped:.2f}s after the last renewal, past the lease"
    # Its claim was left for the others: the daemon, joined again, recovers it (same host, lock free).
    # The `recovered` line is written just after the take-over's move: wait for both.
    wait_for(lambda: "recovered" in project.events(job_id)
             and (project.has("done", job_id) or folder_of(project, job_id) not in (None, folder)), 10,
             "the job taken over, and its recovered line")
    code, out = project.stop(daemon)
    assert code == 0 and "lease of" in out


@pytest.fixture(autouse=True)
def _namespaces_work() -> None:
    """The other-host tests need root and unshare; say so loudly rather than skip."""
    assert shutil.which("unshare"), "unshare (util-linux) is missing"
    assert os.geteuid() == 0, "these tests make UTS and time namespaces: run them as root"
