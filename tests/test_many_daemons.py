"""Several daemons on one spool (issue 4 §3): each job claimed once, crashes requeue, pauses keep claims."""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

from conftest import Project, wait_for


def submit_counted(project: Project, count: int, sentinel: Path) -> list[str]:
    """Jobs that each append their own name to `sentinel`, so executions can be counted per job."""
    return [project.submit("WriteSentinel", "handle", [str(sentinel), f"job{n}"]) for n in range(count)]


def executions(sentinel: Path) -> collections.Counter[str]:
    return collections.Counter(sentinel.read_text().split()) if sentinel.exists() else collections.Counter()


def test_four_daemons_run_every_job_exactly_once(project: Project) -> None:
    sentinel = project.root / "ran.txt"
    ids = submit_counted(project, 160, sentinel)
    daemons = [project.start() for _ in range(4)]
    wait_for(lambda: len(project.names("done")) == len(ids), 90, "all jobs done")
    for daemon in daemons:
        assert project.stop(daemon)[0] == 0
    assert project.names("done") == sorted(f"{job_id}.json" for job_id in ids)
    counts = executions(sentinel)
    assert len(counts) == len(ids) and set(counts.values()) == {1}
    nodes = {project.doc("done", job_id)["history"][0]["node"] for job_id in ids}
    assert len(nodes) > 1, "only one daemon did any work"


def test_a_daemon_killed_halfway_loses_nothing_and_its_jobs_finish_elsewhere(project: Project) -> None:
    project.configure(retry_attempts=1)  # the jobs running at the kill fail once, as Orphaned
    sentinel = project.root / "ran.txt"
    ids = submit_counted(project, 120, sentinel)
    daemons = [project.start() for _ in range(3)]
    wait_for(lambda: len(project.names("done")) >= len(ids) // 3, 60, "a third done")
    daemons[0].kill()
    daemons[0].wait(timeout=10)
    replacement = project.start()
    wait_for(lambda: len(project.names("done")) == len(ids), 90, "all jobs done")
    for daemon in (*daemons[1:], replacement):
        assert project.stop(daemon)[0] == 0
    assert project.names("done") == sorted(f"{job_id}.json" for job_id in ids)
    counts = executions(sentinel)
    assert set(counts) == {f"job{n}" for n in range(len(ids))}
    assert max(counts.values()) <= 2  # only a job running at the kill may have run twice
    assert project.names("running") == [] and len(project.daemon_folders()) == 0


def test_a_paused_daemon_keeps_its_jobs_and_finishes_them_once_resumed(project: Project) -> None:
    sentinel = project.root / "ran.txt"
    paused = project.start()
    job_id = project.submit("SlowSentinel", "handle", [str(sentinel), "slow", "1"])
    wait_for(lambda: project.names("running") == [f"{job_id}.json"], 10, "claimed")
    paused.send_signal(signal.SIGSTOP)
    try:
        other = project.start()
        time.sleep(3)  # a sleep, for a non-event: in several rescans the other daemon must not take the job
        assert project.names("running") == [f"{job_id}.json"]
        assert not project.has("done", job_id)
    finally:
        paused.send_signal(signal.SIGCONT)
    wait_for(lambda: project.has("done", job_id), 10, "finished after SIGCONT")
    assert executions(sentinel) == {"slow": 1}
    assert project.doc("done", job_id)["attempts"] == 1
    for daemon in (paused, other):
        assert project.stop(daemon)[0] == 0


def test_a_daemon_whose_claim_was_moved_away_never_writes_the_job_back(project: Project) -> None:
    daemon = project.start()
    job_id = project.submit("Sleep", "handle", ["1"])
    wait_for(lambda: project.names("running") == [f"{job_id}.json"], 10, "claimed")
    [folder] = project.daemon_folders()
    held = project.spool / "failed" / f"{job_id}.json"
    (folder / f"{job_id}.json").rename(held)  # a person takes it away mid-run
    before = held.read_bytes()
    time.sleep(2)  # a sleep: past the 1 s run, the refused write-back leaves nothing on disk to wait for
    assert not project.has("done", job_id) and held.read_bytes() == before
    assert [name for name in ("high", "medium", "low", "scheduled", "done") if project.has(name, job_id)] == []
    assert project.stop(daemon)[0] == 0
    assert "success" not in project.events(job_id)


