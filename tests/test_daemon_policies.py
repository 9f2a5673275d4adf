"""Retention, priority aging, cancelling a running job, and recovery of a dead operator command."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from conftest import Project, process_gone, read_pid, wait_for

from spoold.spool.node import this_host


def _age(path: Path, days: float) -> None:
    old = time.time() - days * 86400
    os.utime(path, (old, old))


def test_the_daemon_deletes_finished_jobs_past_their_retention_and_keeps_the_rest(project: Project) -> None:
    project.set_keys(keep_done_days=2, keep_failed_days=5)
    old_done = project.drop("done", "old-done.json", {"class": "Echo", "status": "done"})
    new_done = project.drop("done", "new-done.json", {"class": "Echo", "status": "done"})
    old_failed = project.drop("failed", "old-failed.json", {"class": "Echo", "status": "failed"})
    kept_failed = project.drop("failed", "kept-failed.json", {"class": "Echo", "status": "failed"})
    old_rejected = project.drop("rejected", "old-rejected.json", b"garbage")
    reason = project.drop("rejected", "old-rejected.reason", "bad JSON\n")
    _age(old_done, 3)
    _age(new_done, 1)
    _age(old_failed, 6)
    _age(kept_failed, 4)
    _age(old_rejected, 6)
    result = project.drain()
    assert result.returncode == 0, result.stdout
    assert project.names("done") == ["new-done.json"]
    assert project.names("failed") == ["kept-failed.json"]
    assert project.names("rejected") == [] and not reason.exists()


def test_zero_keep_days_keep_finished_jobs_forever(project: Project) -> None:
    project.set_keys(keep_done_days=0)
    ancient = project.drop("done", "ancient.json", {"class": "Echo", "status": "done"})
    _age(ancient, 4000)
    assert project.drain().returncode == 0
    assert project.names("done") == ["ancient.json"]


def _flood(project: Project, stop: threading.Event, marker: Path) -> None:
    n = 0
    while not stop.is_set():
        project.submit("SlowSentinel", "handle", [str(marker), f"high-{n}"], priority="high")
        n += 1
        time.sleep(0.04)


def _ran_during_the_flood(order: list[str]) -> bool:
    """The low job ran, and high jobs after it: the flood was still on."""
    return "low" in order and any(name.startswith("high-") for name in order[order.index("low") + 1:])


def _run_flood_with_one_old_low_job(project: Project, aging: float) -> list[str]:
    project.configure(workers=1)
    project.set_keys(priority_aging_seconds=aging)
    marker = project.root / "order.txt"
    for n in range(10):  # a backlog of high jobs (0.1 s each) first, then the low one, then a flood at 25/s
        project.submit("SlowSentinel", "handle", [str(marker), f"high-pre-{n}"], priority="high")
    project.submit("SlowSentinel", "handle", [str(marker), "low"], priority="low")
    daemon = project.start()
    stop = threading.Event()
    flooder = threading.Thread(target=_flood, args=(project, stop, marker))
    flooder.start()
    try:
        if aging:  # the flood lasts until the aged low job has run in it (6 s at most)
            wait_for(lambda: marker.exists() and _ran_during_the_flood(marker.read_text().split()), 6,
                     "the low job run during the flood")
        else:
            time.sleep(6)  # a sleep: that the low job does NOT run takes the whole flood to show
    finally:
        stop.set()
        flooder.join()
    project.stop(daemon)
    return marker.read_text().split()


def test_without_aging_a_flood_of_high_jobs_keeps_an_old_low_job_waiting(project: Project) -> None:
    order = _run_flood_with_one_old_low_job(project, 0)
    assert "low" not in order
    assert project.names("low") != []


def test_with_aging_an_old_low_job_runs_during_a_flood_of_high_jobs(project: Project) -> None:
    order = _run_flood_with_one_old_low_job(project, 1)
    assert "low" in order
    later_high = [name for name in order[order.index("low") + 1:] if name.startswith("high-")]
    assert later_high, "the low job ran only once the flood was over"


def test_a_cancel_marker_stops_the_running_child_and_the_job_fails_as_cancelled(project: Project) -> None:
    project.configure(retry_attempts=3, rescan_seconds=60)  # the watch on the daemon's folder must see it
    daemon = project.start()
    marker = project.root / "pid"
    job_id = project.submit("Sleep", "handle", ["30", str(marker)])
    pid = read_pid(marker)  # once the child has started
    folder = project.daemon_folders()[0]
    (folder / f".{job_id}.cancel").touch()
    wait_for(lambda: project.has("failed", job_id), 10, "cancelled into failed/")
    doc = project.doc("failed", job_id)
    assert doc["error"]["type"] == "Cancelled"
    assert doc["history"][-1]["outcome"] == "failure" and doc["history"][-1]["error_type"] == "Cancelled"
    wait_for(lambda: project.events(job_id) == ["started", "cancelled"], 5, "started, cancelled")
    wait_for(lambda: not (folder / f".{job_id}.cancel").exists(), 5, "marker removed")
    wait_for(lambda: process_gone(pid), 5, "child gone")
    assert project.stop(daemon)[0] == 0


def test_a_file_left_by_a_dead_operator_command_goes_back_where_its_status_says(project: Project) -> None:
    dead = project.spool / "running" / f"cli.{this_host()}-1-abcdef"
    dead.mkdir(parents=True)
    doc = {"class": "Echo", "status": "failed", "attempts": 2, "priority": "low",
           "error": {"type": "RuntimeError", "message": "x", "traceback": ""}}
    (dead / "op.json").write_text(json.dumps(doc))
    (dead / "waiting.json").write_text(json.dumps({"class": "Echo", "status": "ready", "priority": "low"}))
    result = project.drain()
    assert result.returncode == 0, result.stdout
    assert project.doc("failed", "op")["attempts"] == 2
    assert "recovered" not in project.events("op")
    assert project.doc("done", "waiting")["attempts"] == 1
    assert not dead.exists()


RETRY_RULES = """
[retry_on]
ConnectionError = { retry_attempts = 1, retry_delay_seconds = 0 }
Timeout = { retry_attempts = 1, retry_delay_seconds = 0 }
"""


def test_a_retry_on_rule_matches_along_the_mro_and_timeout_by_name(project: Project) -> None:
    project.configure(retry_attempts=0, max_execution_time=1, extra=RETRY_RULES)
    refused = project.submit("Raise", "handle", ["ConnectionRefusedError", "no route"])
    slow = project.submit("Sleep", "handle", ["5"])
    plain = project.submit("Raise", "handle", ["RuntimeError", "once"])
    assert project.drain().returncode == 0
    assert project.events(refused) == ["started", "retrying", "started", "failure"]
    assert project.events(slow) == ["started", "retrying", "started", "failure"]
    assert project.events(plain) == ["started", "failure"]
    history = project.doc("failed", refused)["history"]
    assert [h["error_type"] for h in history] == ["ConnectionRefusedError", "ConnectionRefusedError"]
    assert project.doc("failed", slow)["error"]["type"] == "Timeout"


def test_files_left_in_tmp_by_dead_writers_are_reaped_after_36_hours(project: Project) -> None:
    """A writer killed mid-write leaves a part file in tmp/: never run, removed once old (docs/design.md, F1)."""
    old = project.drop("tmp", ".dead-writer.part", b'{"class": "Ec')
    fresh = project.drop("tmp", ".live-writer.part", b'{"class": "Echo"}')
    old_time = time.time() - 37 * 3600
    os.utime(old, (old_time, old_time))
    assert project.drain().returncode == 0
    assert not old.exists() and fresh.exists()
    assert project.names("done") == [] and project.names("rejected") == []
