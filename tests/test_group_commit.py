"""Group commit (issue 5): jobs that finish together share one folder fsync, and each one still
commits, or fails, on its own. Real files in a real spool; os.fsync is only counted, never replaced."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import Project, wait_for

from spoold.daemon.loop import COMMIT_WINDOW
from spoold.errors import LostClaim
from spoold.job import Job
from spoold.paths import SpoolPaths
from spoold.spool.moves import Mover


def claimed_jobs(paths: SpoolPaths, ids: list[str]) -> list[tuple[Job, Path, str]]:
    node = paths.running_of("node-1")
    node.mkdir(parents=True)
    items = []
    for job_id in ids:
        claimed = node / f"{job_id}.json"
        doc = {"id": job_id, "class": "Echo", "method": "handle", "params": [], "status": "done"}
        claimed.write_text(json.dumps(doc))
        items.append((Job(job_id, doc), claimed, "done"))
    return items


def test_jobs_finishing_together_share_one_fsync_of_their_folder(paths: SpoolPaths,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "?")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    items = claimed_jobs(paths, ["a", "b", "c"])
    results = Mover(paths).commit_many(items)
    assert results == [paths.job_file("done", job_id) for job_id in ("a", "b", "c")]
    assert sorted(p.name for p in paths.done.iterdir()) == ["a.json", "b.json", "c.json"]
    assert list(paths.running_of("node-1").iterdir()) == [], "every claimed copy removed"
    assert list(paths.tmp.iterdir()) == []
    if os.path.exists("/proc/self/fd"):
        assert synced.count(str(paths.done)) == 1, synced  # one folder fsync for the three
        assert len(synced) == 4  # and each file's own


def test_the_files_of_a_group_are_fsynced_together_not_one_after_the_other(paths: SpoolPaths,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A journaling filesystem commits fsyncs that arrive together in one journal commit (fsio._fsync_together)."""
    real_fsync = os.fsync
    active, most, lock = [0], [0], threading.Lock()

    def overlapping_fsync(fd: int) -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.02)  # long enough that fsyncs issued together are seen together
        real_fsync(fd)
        with lock:
            active[0] -= 1

    monkeypatch.setattr(os, "fsync", overlapping_fsync)
    ids = [f"j{n}" for n in range(8)]
    results = Mover(paths).commit_many(claimed_jobs(paths, ids))
    assert results == [paths.job_file("done", job_id) for job_id in ids]
    assert most[0] >= 2, "the staged files were fsynced one at a time"
    assert list(paths.tmp.iterdir()) == [] and list(paths.running_of("node-1").iterdir()) == []


def test_in_a_group_a_lost_claim_or_a_taken_name_touches_only_its_own_job(paths: SpoolPaths) -> None:
    items = claimed_jobs(paths, ["a", "b", "c"])
    items[0][1].unlink()  # a's claim was taken from us
    paths.job_file("done", "b").write_text("{}")  # b's name is taken in done/
    results = Mover(paths).commit_many(items)
    assert isinstance(results[0], LostClaim)
    assert isinstance(results[1], Path) and results[1].name != "b.json"  # a fresh id, the old name kept
    assert json.loads(results[1].read_text())["source_name"] == "b.json"
    assert results[2] == paths.job_file("done", "c")
    assert paths.job_file("done", "b").read_text() == "{}", "never replaced"
    assert list(paths.running_of("node-1").iterdir()) == []


def test_a_group_that_cannot_be_written_leaves_every_claim_in_place(paths: SpoolPaths) -> None:
    items = claimed_jobs(paths, ["a", "b"])
    paths.tmp.rmdir()  # nowhere to stage: each job fails with its own OSError
    results = Mover(paths).commit_many(items)
    assert all(isinstance(r, OSError) for r in results)
    assert sorted(p.name for p in paths.running_of("node-1").iterdir()) == ["a.json", "b.json"]
    assert list(paths.done.iterdir()) == []


@pytest.mark.parametrize("isolation", ["process", "worker"])
def test_one_kill_re_runs_at_most_what_the_commit_window_allows(project: Project, isolation: str) -> None:
    """A SIGKILL re-runs what was running and what had finished but was not committed yet: at most
    workers + COMMIT_WINDOW × workers - 1 per kill (docs/design.md, C2), plus in worker isolation the one
    job per worker waiting in its pipe (M14), each one recorded as an Orphaned run of the killed daemon."""
    workers, kills, jobs = 2, 6, 400
    project.configure(workers=workers, retry_attempts=50, extra='RecordRun = ["handle"]')
    project.set_keys(isolation=f'"{isolation}"')
    record = project.root / "runs.txt"
    ids = [project.submit("RecordRun", params=[str(record)]) for _ in range(jobs)]
    rng = random.Random(14)
    killed: list[str] = []
    for _ in range(kills):
        daemon = project.start()
        mark = f"-{daemon.pid}-"
        killed += wait_for(lambda: [f.name for f in project.daemon_folders() if mark in f.name], 10,  # noqa: B023
                           "the new daemon's folder")
        wait_for(lambda: record.exists(), 10, "a first run")
        time.sleep(rng.uniform(0.2, 0.6))
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=10)
    assert project.drain(timeout=120).returncode == 0
    runs = Counter(line.split()[0] for line in record.read_text().splitlines())
    assert sorted(project.names("done")) == sorted(f"{job_id}.json" for job_id in ids)
    assert set(runs) == set(ids)
    orphaned: Counter[str] = Counter()  # per killed daemon: the jobs it held when it died
    for job_id, count in runs.items():
        held = [run["node"] for run in project.doc("done", job_id)["history"] if run["error_type"] == "Orphaned"]
        assert count - 1 <= len(held), f"{job_id} ran {count} times, {len(held)} Orphaned runs recorded"
        orphaned.update(held)
    assert set(orphaned) <= set(killed)
    bound = workers + COMMIT_WINDOW * workers - 1 + (workers if isolation == "worker" else 0)
    assert max(orphaned.values(), default=0) <= bound, f"per kill: {dict(orphaned)}, bound {bound}"
