"""The reaper (spool/reaper.py): a commit's last unlink in a thread of its own. Real files in a real spool.

What it must never do: unlink a newer copy that took the name it was asked to remove (a retried job
claimed and seized again at once), keep a stopping daemon's folder from going, or lose track of a copy
it could not remove."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from conftest import Project

from spoold.config import load_config
from spoold.job import Job
from spoold.logs import EventLog
from spoold.paths import SpoolPaths
from spoold.spool.intake import Claim, Intake
from spoold.spool.moves import Mover
from spoold.spool.node import open_node
from spoold.spool.reaper import Reaper


def claim(node: Path, job_id: str, attempt: int) -> tuple[Job, Path]:
    claimed = node / f"{job_id}.json"
    doc = {"id": job_id, "class": "Echo", "method": "handle", "params": [], "attempts": attempt}
    claimed.write_text(json.dumps(doc))
    return Job(job_id, doc), claimed


def synced_files(folder: Path, count: int) -> list[Path]:
    """Files whose blocks are on disk: the kind whose unlink waits on the filesystem (ext4)."""
    folder.mkdir(parents=True)
    files = [folder / f".old-{n}.json.moving" for n in range(count)]
    for path in files:
        path.write_bytes(b"x" * 400)
    os.sync()
    return files


def behind(reaper: Reaper, folder: Path, count: int) -> list[Path]:
    """Keep the reaper busy: `count` synced files in `folder` handed to it; returns them."""
    files = synced_files(folder, count)
    for path in files:
        reaper.drop(path, "old", "done")
    return files


def test_a_retried_job_seized_again_at_once_keeps_its_new_copy(paths: SpoolPaths) -> None:
    """A job committed back to its ready folder and claimed again at once: its next seize renames onto the
    name the reaper still holds for the copy before. The reaper must remove the old copy, not the new one."""
    node = paths.running_of("node-1")
    for trial in range(3):
        reaper = Reaper(node)
        mover = Mover(paths, durable=False, reaper=reaper)
        behind(reaper, node / f"backlog-{trial}", 500)  # the reaper is behind when the seize comes
        job, claimed = claim(node, "again", 1)
        mover.commit(job, claimed, "medium")  # its seized copy waits in the reaper's queue
        os.rename(paths.job_file("medium", "again"), claimed)  # claimed again
        seized = mover.seize(claimed)
        assert reaper.close()
        assert seized.exists(), f"trial {trial}: the reaper removed the new seized copy, the job's only file"
        assert json.loads(seized.read_text())["attempts"] == 1
        seized.unlink()
        assert not any(p.is_file() for p in node.rglob("*")), "a copy the reaper was given stayed"


def test_close_removes_everything_queued_before_it_returns(paths: SpoolPaths) -> None:
    node = paths.running_of("node-1")
    reaper = Reaper(node)
    behind(reaper, node, 300)
    assert reaper.close()
    assert os.listdir(node) == []
    late = node / ".late.json.moving"
    late.write_text("{}")
    reaper.drop(late, "late", "done")  # after close: removed at once, in the caller's thread
    assert not late.exists()


def test_a_copy_that_cannot_be_removed_goes_to_the_movers_stale_list(paths: SpoolPaths) -> None:
    node = paths.running_of("node-1")
    node.mkdir(parents=True)
    stuck = node / ".stuck.json.moving"
    stuck.mkdir()  # unlink() refuses a folder: the one failure a test can make without mocks, even as root
    reaper = Reaper(node)
    mover = Mover(paths, durable=False, reaper=reaper)
    reaper.drop(stuck, "stuck", "done")
    assert reaper.close()
    assert mover.has_stale
    mover.remove_stale()
    assert mover.stale == [stuck] and reaper.failed == []  # kept, and tried again at every remove_stale
    stuck.rmdir()
    stuck.write_text("{}")
    mover.remove_stale()
    assert mover.stale == [] and not stuck.exists()


def test_wait_for_returns_at_once_for_a_name_it_does_not_hold(paths: SpoolPaths) -> None:
    node = paths.running_of("node-1")
    reaper = Reaper(node)
    files = behind(reaper, node, 500)
    done = threading.Event()

    def wait_for_other() -> None:
        reaper.wait_for(node / ".other.json.moving")
        done.set()

    threading.Thread(target=wait_for_other, daemon=True).start()
    assert done.wait(5)
    reaper.wait_for(files[-1])
    assert not files[-1].exists()
    assert reaper.close()


def test_a_commit_out_of_another_nodes_folder_removes_its_copy_at_once(paths: SpoolPaths) -> None:
    """Recovery commits a dead node's file and removes that node's folder right after: the copy must be
    gone by then (test_schedule's kill matrix left the dead daemon's folder behind when it was not)."""
    ours, dead = paths.running_of("node-1"), paths.running_of("node-dead")
    ours.mkdir(parents=True)
    dead.mkdir(parents=True)
    reaper = Reaper(ours)
    behind(reaper, ours / "backlog", 500)
    mover = Mover(paths, durable=False, reaper=reaper)
    job, claimed = claim(dead, "orphan", 1)
    mover.commit(job, claimed, "medium")
    assert os.listdir(dead) == [], "the dead node's copy was left to the reaper"
    dead.rmdir()
    assert reaper.close()


def test_a_retried_job_is_claimed_again_only_once_its_old_copy_is_gone(project: Project) -> None:
    """After a crash, an old copy left beside the new claim of the same id would be recovered as a second job."""
    config = load_config(project.config)
    paths = SpoolPaths(config.spool_dir)
    paths.create()
    node = open_node(paths, workers=1)
    try:
        reaper = Reaper(node.folder)
        mover = Mover(paths, durable=False, reaper=reaper)
        intake = Intake(node, mover, EventLog(config.log_dir))
        behind(reaper, node.folder / "backlog", 500)
        job, claimed = claim(node.folder, "retried", 1)
        job.doc.update({"class": "Echo", "method": "handle", "params": ["x"]})
        mover.commit(job, claimed, "medium")  # a retry: back to its ready folder, its copy queued
        taken = intake.take(config, paths.ready("medium"), "retried.json", 1e12)
        assert isinstance(taken, Claim) and taken.job.id == "retried"
        assert sorted(os.listdir(node.folder)) == [".heartbeat", ".info", ".lock", "backlog", "retried.json"], (
            "the old copy is still beside the new claim")
        assert reaper.close()
        taken.path.unlink()
        (node.folder / "backlog").rmdir()
    finally:
        node.close()
