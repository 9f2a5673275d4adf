"""A job submitted by each of the three front doors runs in a child and lands in done/."""

from __future__ import annotations

import json
import time

from conftest import Project, wait_for


def test_a_submitted_job_runs_and_lands_in_done_with_its_result(project: Project) -> None:
    job_id = project.submit("Echo", "handle", ["a", "b"])
    assert project.has("medium", job_id)
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    doc = project.doc("done", job_id)
    assert doc["result"] == ["a", "b"]
    assert doc["status"] == "done" and doc["attempts"] == 1
    assert [h["outcome"] for h in doc["history"]] == ["success"]
    assert project.events(job_id) == ["started", "success"]


def test_a_running_daemon_picks_up_a_job_at_once(project: Project) -> None:
    daemon = project.start()
    job_id = project.submit("Echo", "shout", ["hi"])
    wait_for(lambda: project.has("done", job_id), 10)
    doc = project.doc("done", job_id)
    assert doc["result"] == "HI"
    assert "shouting hi" in doc["output"]
    code, _ = project.stop(daemon)
    assert code == 0


def test_run_job_py_prints_the_id_and_path_and_wait_prints_the_result(project: Project) -> None:
    daemon = project.start()
    done = project.run_job("Echo", "handle", "x,y", "--wait")
    assert done.returncode == 0, done.stderr
    job_id, path, result = done.stdout.splitlines()
    assert path.endswith(f"{job_id}.json")
    assert json.loads(result) == ["x", "y"]
    failed = project.run_job("Raise", "handle", "ValueError,nope", "--wait")
    assert failed.returncode == 1
    assert "ValueError: nope" in failed.stderr
    project.stop(daemon)


def test_a_rotated_event_log_is_followed_by_a_fresh_file(project: Project) -> None:
    """The daemon keeps its log open; a log moved away (logrotate) is replaced within about a second."""
    daemon = project.start()
    first = project.submit("Echo", "handle", ["one"])
    wait_for(lambda: project.events(first) == ["started", "success"], 10, "first job logged")
    rotated = project.logs / "background_jobs.log.1"
    (project.logs / "background_jobs.log").rename(rotated)
    time.sleep(1.2)  # past the daemon's once-a-second look at the name: a sleep, as it looks only when it writes
    second = project.submit("Echo", "handle", ["two"])
    wait_for(lambda: project.events(second) == ["started", "success"], 10, "logged in a fresh background_jobs.log")
    old = rotated.read_text(encoding="utf-8")
    assert f"job={first} " in old and f"job={second} " not in old
    project.stop(daemon)
