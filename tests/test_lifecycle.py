"""Runs, retries and crashes (SPEC §3, §6, §8): signals, timeouts, dead daemons, `--now`, order and reloads."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, job_lines, process_gone, read_pid, settled_events, wait_for


def outcomes(doc: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(h["outcome"], h["error_type"]) for h in doc["history"]]


def spool_files(project: Project) -> list[Path]:
    return sorted(p for p in project.spool.rglob("*") if p.is_file()) if project.spool.exists() else []


# -- §6 signals: SIGTERM ---------------------------------------------------------------------------


def test_sigterm_lets_a_short_running_job_finish_and_claims_nothing_new(project: Project, tmp_path: Path) -> None:
    project.configure(workers=1, shutdown_grace_seconds=5)
    marker = tmp_path / "sleep.pid"
    daemon = project.start()
    job_id = project.submit("Sleep", "handle", ["1", str(marker)])
    read_pid(marker)
    waiting = project.submit("Echo", "handle", ["later"])  # queued behind the only worker
    code, out = project.stop(daemon)
    assert code == 0, out
    assert project.has("done", job_id)
    doc = project.doc("done", job_id)
    assert doc["result"] == 1.0 and doc["attempts"] == 1
    assert outcomes(doc) == [("success", None)]
    assert project.events(job_id) == ["started", "success"]
    assert project.names("medium") == [f"{waiting}.json"]
    assert project.events(waiting) == []
    assert project.doc("medium", waiting)["attempts"] == 0
    assert project.daemon_folders() == []


def test_sigterm_puts_a_long_job_back_as_interrupted_and_kills_its_child(project: Project, tmp_path: Path) -> None:
    project.configure(shutdown_grace_seconds=1)
    marker = tmp_path / "sleep.pid"
    daemon = project.start()
    job_id = project.submit("Sleep", "handle", ["30", str(marker)])
    child = read_pid(marker)
    began = time.monotonic()
    code, out = project.stop(daemon)
    assert code == 0, out
    assert time.monotonic() - began < 4
    assert project.names("medium") == [f"{job_id}.json"]
    assert project.names("running") == [] and project.names("failed") == [] and project.names("done") == []
    doc = project.doc("medium", job_id)
    assert doc["status"] == "ready" and doc["attempts"] == 1
    assert outcomes(doc) == [("interrupted", None)]
    assert doc["history"][0]["pid"] == child
    assert "error" not in doc
    assert doc.get("failed_runs", 0) == 0
    assert project.events(job_id) == ["started", "interrupted"]
    wait_for(lambda: process_gone(child), 5, f"child {child} gone")


def test_an_interrupted_run_spends_no_retry(project: Project, tmp_path: Path) -> None:
    project.configure(retry_attempts=1, shutdown_grace_seconds=0.5, extra='SleepThenFail = ["handle"]')
    marker = tmp_path / "first-run.pid"
    daemon = project.start()
    job_id = project.submit("SleepThenFail", "handle", [str(marker)])
    read_pid(marker)
    code, out = project.stop(daemon)
    assert code == 0, out
    assert project.has("medium", job_id)
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    doc = project.doc("failed", job_id)
    assert doc["attempts"] == 3
    assert outcomes(doc) == [("interrupted", None), ("failure", "RuntimeError"), ("failure", "RuntimeError")]
    assert project.events(job_id) == ["started", "interrupted", "started", "retrying", "started", "failure"]


# -- §2 nothing is lost: a daemon killed mid-run ------------------------------------------------------


def test_a_job_of_a_killed_daemon_is_recovered_requeued_and_finished(project: Project, tmp_path: Path) -> None:
    project.configure(retry_attempts=1)
    marker = tmp_path / "sleep.pid"
    first = project.start()
    job_id = project.submit("Sleep", "handle", ["1", str(marker)])
    read_pid(marker)
    [dead_folder] = project.daemon_folders()
    assert (dead_folder / f"{job_id}.json").exists()
    first.kill()
    first.wait(timeout=10)
    second = project.start()
    wait_for(lambda: project.has("done", job_id), 15, "recovered job in done/")
    doc = project.doc("done", job_id)
    assert doc["attempts"] == 2
    assert outcomes(doc) == [("failure", "Orphaned"), ("success", None)]
    assert doc["history"][0]["node"] == dead_folder.name
    assert settled_events(project, job_id, 4) == ["started", "recovered", "started", "success"]
    [recovered] = [line for line in job_lines(project, job_id) if "status=recovered" in line]
    assert " error=Orphaned" in recovered and " attempt=1 " in recovered
    assert not dead_folder.exists()
    assert project.names("running") == []
    code, out = project.stop(second)
    assert code == 0, out


def test_a_recovered_job_with_no_retries_left_fails_as_orphaned(project: Project, tmp_path: Path) -> None:
    project.configure(retry_attempts=0)
    marker = tmp_path / "sleep.pid"
    first = project.start()
    job_id = project.submit("Sleep", "handle", ["1", str(marker)])
    read_pid(marker)
    [dead_folder] = project.daemon_folders()
    first.kill()
    first.wait(timeout=10)
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.names("failed") == [f"{job_id}.json"]
    doc = project.doc("failed", job_id)
    assert doc["status"] == "failed" and doc["attempts"] == 1
    assert doc["error"]["type"] == "Orphaned"
    assert outcomes(doc) == [("failure", "Orphaned")]
    assert project.events(job_id) == ["started", "recovered", "failure"]
    assert all(" error=Orphaned" in line for line in job_lines(project, job_id)[1:])
    assert not dead_folder.exists()


# -- §3 error types: Timeout, Crashed, results that are not JSON ------------------------------------


@pytest.mark.parametrize("limit", ["max_execution_time", "timeout_seconds"])
def test_a_job_past_its_time_limit_fails_as_timeout_and_its_grandchild_is_killed(
        project: Project, tmp_path: Path, limit: str) -> None:
    pid_file = tmp_path / "grandchild.pid"
    doc_in: dict[str, Any] = {"class": "SpawnGrandchild", "params": [str(pid_file)]}
    if limit == "max_execution_time":
        project.configure(max_execution_time=1)
    else:
        doc_in["timeout_seconds"] = 1
    project.drop("medium", "limited.json", doc_in)
    began = time.monotonic()
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - began < 10
    assert project.names("failed") == ["limited.json"]
    doc = project.doc("failed", "limited")
    assert doc["error"]["type"] == "Timeout"
    assert outcomes(doc) == [("failure", "Timeout")]
    assert doc["history"][0]["duration_ms"] >= 1000
    assert project.events("limited") == ["started", "failure"]
    assert " error=Timeout" in job_lines(project, "limited")[-1]
    grandchild = read_pid(pid_file)
    wait_for(lambda: process_gone(grandchild), 5, f"grandchild {grandchild} gone")


def test_a_child_killed_by_a_signal_fails_as_crashed_naming_sigkill(project: Project) -> None:
    job_id = project.submit("KillSelf")
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    doc = project.doc("failed", job_id)
    assert doc["error"]["type"] == "Crashed"
    assert "SIGKILL" in doc["error"]["message"]
    assert outcomes(doc) == [("failure", "Crashed")]
    assert project.events(job_id) == ["started", "failure"]
    assert " error=Crashed" in job_lines(project, job_id)[-1]


def test_a_result_that_is_not_json_is_a_type_error_failure(project: Project) -> None:
    job_id = project.submit("NotSerializable")
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.names("done") == []
    doc = project.doc("failed", job_id)
    assert doc["error"]["type"] == "TypeError"
    assert "result" not in doc
    assert outcomes(doc) == [("failure", "TypeError")]
    assert project.events(job_id) == ["started", "failure"]


# -- §3 retries ----------------------------------------------------------------------------------------


def test_a_failing_job_waits_in_scheduled_between_retries_then_succeeds(project: Project, tmp_path: Path) -> None:
    project.configure(retry_attempts=3, retry_delay_seconds=1)
    counter = tmp_path / "runs"
    daemon = project.start()
    job_id = project.submit("FailTimes", "handle", [str(counter), "2"])
    wait_for(lambda: project.has("scheduled", job_id), 10, "first retry waiting in scheduled/")
    waiting = project.doc("scheduled", job_id)
    assert waiting["status"] == "scheduled" and waiting["attempts"] == 1
    assert outcomes(waiting) == [("failure", "RuntimeError")]
    run_at = datetime.fromisoformat(waiting["run_at"])
    assert run_at.utcoffset() is not None
    assert run_at - datetime.fromisoformat(waiting["history"][-1]["finished_at"]) == timedelta(seconds=1)
    wait_for(lambda: project.has("done", job_id), 15, "job in done/ after two retries")
    doc = project.doc("done", job_id)
    assert doc["attempts"] == 3 and doc["result"] == 3
    assert [h["outcome"] for h in doc["history"]] == ["failure", "failure", "success"]
    assert "run_at" not in doc
    assert settled_events(project, job_id, 6) == ["started", "retrying", "started", "retrying", "started", "success"]
    code, out = project.stop(daemon)
    assert code == 0, out


def test_a_job_that_always_raises_fails_after_its_retries_with_the_error(project: Project) -> None:
    project.configure(retry_attempts=2, retry_delay_seconds=0)
    job_id = project.submit("Raise", "handle", ["RuntimeError", "always"])
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.names("failed") == [f"{job_id}.json"]
    doc = project.doc("failed", job_id)
    assert doc["status"] == "failed" and doc["attempts"] == 3
    assert set(doc["error"]) == {"type", "message", "traceback"}
    assert doc["error"]["type"] == "RuntimeError" and doc["error"]["message"] == "always"
    assert "RuntimeError: always" in doc["error"]["traceback"]
    assert outcomes(doc) == [("failure", "RuntimeError")] * 3
    assert project.events(job_id) == ["started", "retrying", "started", "retrying", "started", "failure"]
    failed_runs = [line for line in job_lines(project, job_id) if "status=started" not in line]
    assert len(failed_runs) == 3 and all(" error=RuntimeError" in line for line in failed_runs)
    errors_log = job_lines(project, job_id, errors=True)
    assert [line.split(" status=")[1].split()[0] for line in errors_log] == ["retrying", "retrying", "failure"]
    assert "Traceback" in "\n".join(project.log_lines(errors=True))


# -- §6 `--now` --------------------------------------------------------------------------------------------


def test_run_job_now_runs_the_job_here_and_files_it_in_done(project: Project) -> None:
    done = project.run_job("Echo", "handle", "a,b", "--now")
    assert done.returncode == 0, done.stderr
    job_id, result = done.stdout.splitlines()
    assert json.loads(result) == ["a", "b"]
    assert project.names("done") == [f"{job_id}.json"]
    doc = project.doc("done", job_id)
    assert doc["result"] == ["a", "b"] and doc["attempts"] == 1
    assert project.events(job_id) == ["started", "success"]
    assert project.daemon_folders() == []


def test_run_job_now_exits_1_and_files_a_failing_job_in_failed(project: Project) -> None:
    failed = project.run_job("Raise", "handle", "--now")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    job_id = failed.stdout.splitlines()[0]
    assert "RuntimeError: boom" in failed.stderr
    assert project.names("failed") == [f"{job_id}.json"]
    assert project.doc("failed", job_id)["error"]["type"] == "RuntimeError"
    assert project.events(job_id) == ["started", "failure"]
    assert project.daemon_folders() == []


def test_run_job_now_with_a_retry_delay_spends_its_budget_and_keeps_every_run_in_its_history(project: Project) -> None:
    # Before the daemon's run life cycle was shared, a delayed retry came back as "scheduled", which reset
    # the budget: a job that always failed was retried without end, none of its runs on disk.
    project.configure(retry_attempts=2, retry_delay_seconds=0.2)
    failed = project.run_job("Raise", "handle", "--now", timeout=30)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    job_id = failed.stdout.splitlines()[0]
    doc = project.doc("failed", job_id)
    assert doc["attempts"] == 3 and doc["failed_runs"] == 3
    assert [h["outcome"] for h in doc["history"]] == ["failure"] * 3
    assert [h["attempt"] for h in doc["history"]] == [1, 2, 3]
    assert project.events(job_id) == ["started", "retrying", "started", "retrying", "started", "failure"]
    assert project.daemon_folders() == []


def test_run_job_now_between_attempts_keeps_its_running_copy_up_to_date(project: Project) -> None:
    project.configure(retry_attempts=1, retry_delay_seconds=3)
    proc = project.start_run_job("Raise", "handle", "--now")
    [claimed] = wait_for(lambda: [p for folder in project.daemon_folders() for p in folder.glob("*.json")
                                  if json.loads(p.read_text()).get("history")], 10, "the first run on disk")
    doc = json.loads(claimed.read_text())
    assert doc["status"] == "scheduled" and doc["attempts"] == 1 and doc["history"][0]["outcome"] == "failure"
    code, _ = project.stop(proc)
    assert code == 128 + signal.SIGTERM
    assert project.names("scheduled") == [claimed.name], "stopped while it waits: back to scheduled/ for a daemon"


def test_sigterm_during_a_now_run_puts_the_job_back_in_its_ready_folder(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "sleep.pid"
    proc = project.start_run_job("Sleep", "handle", f"30,{marker}", "--now")
    child = read_pid(marker)  # once the job's child has started
    code, out = project.stop(proc)
    assert code == 128 + signal.SIGTERM, out
    job_id = out.splitlines()[0]
    assert project.names("medium") == [f"{job_id}.json"], "put back for a daemon, not left in running/now.*"
    doc = project.doc("medium", job_id)
    assert doc["status"] == "ready" and [h["outcome"] for h in doc["history"]] == ["interrupted"]
    assert project.events(job_id) == ["started", "interrupted"]
    assert project.daemon_folders() == []
    wait_for(lambda: process_gone(child), 5, "the job's child is stopped")


@pytest.mark.parametrize(("class_name", "method", "named"),
                         [("Forbidden", "handle", "'Forbidden'"), ("Echo", "_secret", "'_secret'"),
                          ("Echo", "nope", "Echo.nope")])
def test_run_job_now_refuses_a_disallowed_job_and_writes_nothing(project: Project, class_name: str, method: str,
                                                                 named: str) -> None:
    refused = project.run_job(class_name, method, "--now")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert named in line and "allowed" in line
    assert spool_files(project) == []
    assert project.log_lines() == []


# -- workers and order -----------------------------------------------------------------------------------


def test_with_one_worker_two_jobs_never_overlap(project: Project) -> None:
    project.configure(workers=1)
    first = project.submit("Sleep", "handle", ["0.5"])
    second = project.submit("Sleep", "handle", ["0.5"])
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    runs = sorted((datetime.fromisoformat(h["started_at"]), datetime.fromisoformat(h["finished_at"]))
                  for job_id in (first, second) for h in project.doc("done", job_id)["history"])
    assert len(runs) == 2
    (_, first_end), (second_start, _) = runs
    assert first_end <= second_start


def test_ready_jobs_run_high_then_medium_then_low(project: Project, tmp_path: Path) -> None:
    project.configure(workers=1)
    sentinel = tmp_path / "order"
    for priority in ("low", "medium", "high"):
        job_id = project.submit("WriteSentinel", "handle", [str(sentinel), priority], priority=priority)
        assert project.has(priority, job_id)
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    assert sentinel.read_text().splitlines() == ["high", "medium", "low"]


def test_within_one_folder_the_oldest_job_runs_first(project: Project, tmp_path: Path) -> None:
    project.configure(workers=1)
    sentinel = tmp_path / "order"
    for name in ("a", "b", "c"):
        project.submit("WriteSentinel", "handle", [str(sentinel), name], priority="medium")
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    assert sentinel.read_text().splitlines() == ["a", "b", "c"]


# -- §6 SIGHUP ------------------------------------------------------------------------------------------------


def test_sighup_refuses_a_broken_config_and_applies_a_valid_one(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "not-listed.ran"
    with pytest.raises(ValueError, match="NotListed"):
        project.submit("NotListed", "handle", [str(marker)])
    daemon = project.start()

    project.configure(workers='"two"')
    daemon.send_signal(signal.SIGHUP)
    project.drop("medium", "after-bad-reload.json", {"class": "Echo", "params": ["still"]})
    wait_for(lambda: project.has("done", "after-bad-reload"), 10, "a job still runs after a refused reload")
    assert daemon.poll() is None

    project.configure(extra='NotListed = ["handle"]')
    daemon.send_signal(signal.SIGHUP)
    project.drop("medium", "after-good-reload.json", {"class": "Echo", "params": ["barrier"]})
    wait_for(lambda: project.has("done", "after-good-reload"), 10, "a job runs after the reload")
    job_id = project.submit("NotListed", "handle", [str(marker)])
    wait_for(lambda: project.has("done", job_id), 10, "the newly allowed class runs")
    assert marker.read_text() == "ran"
    assert settled_events(project, job_id, 2) == ["started", "success"]

    code, out = project.stop(daemon)
    assert code == 0, out
    [refused] = [line for line in out.splitlines() if "reload refused" in line]
    assert str(project.config) in refused and "workers" in refused
    assert "configuration reloaded" in out


# -- §4, §6 a bad config: exit 2, one line naming the file and the key ---------------------------------------


@pytest.mark.parametrize("command", [("start",), ("submit", "Echo", "handle", "a"),
                                     ("run_job.py", "Echo", "handle", "a")])
def test_a_bad_config_exits_2_with_one_line_naming_the_file_and_key(project: Project, command: tuple[str, ...]) -> None:
    project.configure(workers='"two"')
    if command[0] == "run_job.py":
        result = project.run_job(*command[1:])
    else:
        result = project.cli(*command, "--config", str(project.config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert str(project.config) in line
    assert "workers" in line and "'two'" in line
    assert spool_files(project) == []
    assert project.daemon_folders() == []
