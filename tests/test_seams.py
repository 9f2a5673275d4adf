"""The seams the layout made: each part tested on its own, on a real spool, without a daemon around it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Project

from spoold.config import Config, load_config
from spoold.daemon.committer import Committer, Finished
from spoold.daemon.recovery import Orphan, Recovery
from spoold.execution.protocol import encode, split_lines, start_request
from spoold.job import Job
from spoold.logs import EventLog
from spoold.outcomes import Settled
from spoold.paths import Folder, SpoolPaths
from spoold.spool.intake import Intake
from spoold.spool.lease import write_heartbeat
from spoold.spool.moves import Mover
from spoold.spool.node import Node, open_node, this_host


@pytest.fixture
def spool(project: Project) -> Iterator[tuple[Config, SpoolPaths, Node]]:
    config = load_config(project.config)
    paths = SpoolPaths(config.spool_dir)
    paths.create()
    node = open_node(paths, workers=1)
    try:
        yield config, paths, node
    finally:
        node.close()


def _dead_daemon_with(paths: SpoolPaths, job_id: str, doc: dict[str, object], host: str = "") -> Path:
    """A daemon folder whose owner is gone: its lock file is there, and no process holds it. Of this host
    unless `host` names another."""
    folder = paths.running / f"{host or this_host()}-4242-abcdef"
    folder.mkdir(parents=True)
    (folder / ".lock").touch()
    (folder / f"{job_id}.json").write_text(json.dumps(doc))
    return folder


def test_recovery_claims_a_dead_daemons_job_and_returns_its_orphaned_run_for_the_caller_to_write(
        spool: tuple[Config, SpoolPaths, Node]) -> None:
    config, paths, node = spool
    mover = Mover(paths)
    dead = _dead_daemon_with(paths, "orphan-1", {"class": "Echo", "params": ["x"], "attempts": 0,
                                                     "retry_attempts": 1})
    recovery = Recovery(paths, node.id, Intake(node, mover, EventLog(config.log_dir)), mover)

    [orphan] = recovery.recover_dead(config, time.time())

    assert orphan.dead_node == dead.name and orphan.job.id == "orphan-1"
    assert orphan.claimed == node.folder / "orphan-1.json" and orphan.claimed.exists(), "claimed into our folder"
    assert not dead.exists(), "the emptied dead folder is gone"
    assert orphan.job.doc["history"][-1]["error_type"] == "Orphaned" and orphan.job.attempts == 1
    assert orphan.settled.folder == Folder.MEDIUM and orphan.settled.log_status == ""
    assert not (config.log_dir / "background_jobs.log").exists(), "recovery decides; the daemon logs"


def test_a_dead_daemon_of_another_host_is_recovered_only_once_its_lease_has_passed_on_our_clock(
        spool: tuple[Config, SpoolPaths, Node]) -> None:
    config, paths, node = spool
    config = replace(config, heartbeat_seconds=0.1, lease_seconds=0.6)
    mover = Mover(paths)
    dead = _dead_daemon_with(paths, "orphan-2", {"class": "Echo", "params": ["x"]}, host="otherhost")
    write_heartbeat(dead, 7)
    recovery = Recovery(paths, node.id, Intake(node, mover, EventLog(config.log_dir)), mover)

    began = time.monotonic()
    assert recovery.recover_dead(config, time.time()) == [], "its lock is free, but its lease has not passed"
    write_heartbeat(dead, 8)  # it renewed: the lease starts again from when we saw that
    renewed = time.monotonic()
    assert recovery.recover_dead(config, time.time()) == []
    orphans: list[Orphan] = []
    while not orphans:
        orphans = recovery.recover_dead(config, time.time())
        if not orphans:
            time.sleep(0.05)
    assert time.monotonic() - renewed >= 0.6 and time.monotonic() - began >= 0.6
    assert [o.job.id for o in orphans] == ["orphan-2"] and not dead.exists()


def test_a_frozen_owner_past_its_lease_loses_each_new_claim_and_is_warned_about_once(
        spool: tuple[Config, SpoolPaths, Node], caplog: pytest.LogCaptureFixture) -> None:
    """Another host's node past its lease whose lock is still held (frozen, or a lock local to its host):
    its folder is emptied at every pass but left to it, and the warning is said once, not every pass."""
    import subprocess
    import sys

    config, paths, node = spool
    config = replace(config, heartbeat_seconds=0.1, lease_seconds=0.3)
    mover = Mover(paths)
    dead = _dead_daemon_with(paths, "frozen-1", {"class": "Echo", "params": ["x"]}, host="otherhost")
    write_heartbeat(dead, 1)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, filelock; lock = filelock.FileLock(sys.argv[1]); "
                               "lock.acquire(); print('held', flush=True); sys.stdin.read()", str(dead / ".lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        recovery = Recovery(paths, node.id, Intake(node, mover, EventLog(config.log_dir)), mover)
        adopted: list[str] = []
        deadline = time.monotonic() + 10
        while len(adopted) < 2 and time.monotonic() < deadline:
            found = [orphan.job.id for orphan in recovery.recover_dead(config, time.time())]
            if found == ["frozen-1"]:  # the woken owner's next claim lands there: taken at the next pass
                (dead / "frozen-2.json").write_text(json.dumps({"class": "Echo", "params": ["y"]}))
            adopted += found
            time.sleep(0.05)
        assert adopted == ["frozen-1", "frozen-2"] and dead.is_dir(), "emptied, but left to its owner"
        warnings = [r.getMessage() for r in caplog.records if "has not renewed its lease" in r.getMessage()]
        assert warnings == [f"node={dead.name} has not renewed its lease for 0.3s: taking its jobs over"]
    finally:
        holder.kill()
        holder.communicate()


def test_a_claim_its_dead_daemon_had_begun_to_move_out_is_recovered_as_its_job(
        spool: tuple[Config, SpoolPaths, Node]) -> None:
    config, paths, node = spool
    mover = Mover(paths)
    dead = _dead_daemon_with(paths, "orphan-3", {"class": "Echo", "params": ["x"]})
    os.rename(dead / "orphan-3.json", dead / ".orphan-3.json.moving")  # seized, then the daemon died
    recovery = Recovery(paths, node.id, Intake(node, mover, EventLog(config.log_dir)), mover)
    [orphan] = recovery.recover_dead(config, time.time())
    assert orphan.job.id == "orphan-3" and orphan.claimed == node.folder / "orphan-3.json"


def test_the_committer_keeps_a_commit_the_spool_refused_and_writes_it_once_the_spool_takes_it(
        spool: tuple[Config, SpoolPaths, Node]) -> None:
    config, paths, node = spool
    claimed = node.folder / "refused-1.json"
    claimed.write_text(json.dumps({"class": "Echo"}))
    written: list[Path] = []
    committer = Committer(Mover(paths), lambda item, target: written.append(target), lambda: None)
    os.rmdir(paths.done)  # the spool cannot take the result: a real failure of the real link()

    now = time.time()
    committer.finish(Finished(Job("refused-1", {"class": "Echo"}), claimed, Settled(Folder.DONE, "success"), 5, now),
                     config)
    assert written == [] and committer.busy and committer.refused_until > now, "held, and no new claims meanwhile"
    committer.retry_due(now + 0.1, config)
    assert written == [] and committer.busy, "not retried before its time"

    paths.done.mkdir()
    committer.retry_due(committer.refused_until, config)
    assert written == [paths.done / "refused-1.json"] and not claimed.exists() and not committer.busy


def test_a_large_request_survives_the_line_protocol_whole_however_it_is_cut() -> None:
    request = start_request("big-1", {"params": ["x" * 200_000]}, "/tmp/out", {"SPOOLD_JOB_ID": "big-1"})
    data = encode(request) + encode({"kill": "big-1"})
    lines: list[bytes] = []
    rest = b""
    for start in range(0, len(data), 65536):
        got, rest = split_lines(rest, data[start:start + 65536])
        lines += got
    assert rest == b"" and [json.loads(line) for line in lines] == [request, {"kill": "big-1"}]


@pytest.mark.parametrize("holder", ["ours", "another live daemon's"])
def test_recovery_drops_a_dead_daemons_copy_of_a_job_that_a_live_node_already_claimed_again(
        spool: tuple[Config, SpoolPaths, Node], holder: str) -> None:
    """A retry was linked into medium/ just before its daemon died; a daemon claimed that ready copy again
    before the stale claimed copy was found: the stale copy goes, and no second job is made of it."""
    config, paths, node = spool
    mover = Mover(paths)
    dead = _dead_daemon_with(paths, "retried-1", {"class": "Echo", "attempts": 1})
    other = open_node(paths, workers=1) if holder != "ours" else node
    try:
        (other.folder / "retried-1.json").write_text(json.dumps({"class": "Echo", "attempts": 1}))
        recovery = Recovery(paths, node.id, Intake(node, mover, EventLog(config.log_dir)), mover)
        assert recovery.recover_dead(config, time.time()) == []
        assert not dead.exists()
        assert sorted(p.name for p in paths.running.rglob("*.json")) == ["retried-1.json"]
    finally:
        if other is not node:
            (other.folder / "retried-1.json").unlink()
            other.close()
