"""`log_format = "json"` (SPEC §8): the same events as one JSON object per line, in both logs, written by a
real daemon; and every reader of the logs (the dashboard) reads both formats, also in one file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from conftest import Project, read_pid, wait_for
from starlette.testclient import TestClient

from spoold.config import load_config
from spoold.dashboard.access import Access
from spoold.dashboard.app import create_app
from spoold.dashboard.context import Dashboard
from spoold.dashboard.serve import allowed_hosts
from spoold.dashboard.stats import Rollup, error_entries, job_errors, job_events
from spoold.logs import parse_event_line

RUN_KEYS = ["ts", "job", "class", "method", "attempt", "status"]


def client(project: Project) -> TestClient:
    dashboard = Dashboard(load_config(project.config), Access())
    return TestClient(create_app(dashboard, allowed_hosts=allowed_hosts("127.0.0.1")), base_url="http://127.0.0.1")


def objects(path: Path) -> list[dict[str, Any]]:
    """Every line of the file as a JSON object: one that is not one fails the test."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        value = json.loads(line)
        assert isinstance(value, dict), f"{path.name}:{number} is not an object: {line}"
        found.append(value)
    return found


def by_job(entries: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry["job"] == job_id]


def test_a_json_daemon_writes_one_object_per_line_in_both_logs(project: Project, tmp_path: Path) -> None:
    project.configure(retry_attempts=1)
    project.set_keys(log_format='"json"')
    ok = project.submit("Echo", "handle", ["a b\nc"])
    flaky = project.submit("FailTimes", "handle", [str(tmp_path / "runs"), "1"])
    bad = project.submit("Raise", "handle", ["ValueError", "no good"])
    project.drop("high", "broken.json", "{not json")
    assert project.drain().returncode == 0

    events = objects(project.logs / "background_jobs.log")
    for entry in events:
        assert list(entry)[:2] == ["ts", "job"] and isinstance(entry["ts"], str) and "status" in entry
    assert [(e["status"], e["attempt"]) for e in by_job(events, ok)] == [("started", 1), ("success", 1)]
    success = by_job(events, ok)[1]
    assert list(success) == [*RUN_KEYS, "duration_ms"] and isinstance(success["duration_ms"], int)
    assert (success["class"], success["method"]) == ("Echo", "handle")
    assert [e["status"] for e in by_job(events, flaky)] == ["started", "retrying", "started", "success"]
    retrying = by_job(events, flaky)[1]
    assert list(retrying) == [*RUN_KEYS, "duration_ms", "error"] and retrying["error"] == "RuntimeError"
    assert [e["status"] for e in by_job(events, bad)] == ["started", "retrying", "started", "failure"]
    assert by_job(events, bad)[-1]["error"] == "ValueError"
    [rejected] = by_job(events, "broken")
    assert list(rejected) == ["ts", "job", "status", "reason"] and rejected["reason"].startswith("bad JSON")

    errors = objects(project.logs / "background_jobs_errors.log")
    assert sorted((e["job"], e["status"]) for e in errors) == sorted(
        [(flaky, "retrying"), (bad, "retrying"), (bad, "failure"), ("broken", "rejected")])
    for entry in errors:
        if entry["job"] == "broken":
            assert entry == rejected, "a rejection's reason is already a key: nothing is added"
        else:
            assert entry["traceback"].startswith("Traceback (most recent call last):")
            without = {k: v for k, v in entry.items() if k != "traceback"}
            assert without in events, "the same object as in the events log, plus its traceback"
    assert "ValueError: no good" in by_job(errors, bad)[-1]["traceback"]


def test_an_interrupted_and_a_recovered_run_are_json_too(project: Project, tmp_path: Path) -> None:
    project.configure(shutdown_grace_seconds=0, retry_attempts=1)  # a recovered run counts as a failed one
    project.set_keys(log_format='"json"')
    marker = tmp_path / "sleep.pid"
    daemon = project.start()
    interrupted = project.submit("Sleep", "handle", ["30", str(marker)])
    read_pid(marker)
    code, out = project.stop(daemon)
    assert code == 0, out
    assert [e["status"] for e in by_job(objects(project.logs / "background_jobs.log"), interrupted)] == [
        "started", "interrupted"]
    project.cli("cancel", interrupted, "--config", str(project.config))

    marker.unlink()
    daemon = project.start()
    orphan = project.submit("Sleep", "handle", ["1", str(marker)])
    child = read_pid(marker)
    daemon.kill()  # SIGKILL: its job is orphaned, and found by the next daemon
    daemon.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)
    later = project.start()
    wait_for(lambda: [e["status"] for e in by_job(objects(project.logs / "background_jobs.log"), orphan)] == [
        "started", "recovered", "started", "success"], 20, "recovered, then run again")
    project.stop(later)
    [recovered] = [e for e in by_job(objects(project.logs / "background_jobs.log"), orphan)
                   if e["status"] == "recovered"]
    assert recovered["error"] == "Orphaned" and "reason" not in recovered
    [entry] = by_job(objects(project.logs / "background_jobs_errors.log"), orphan)
    assert entry["status"] == "recovered" and "died while it ran" in entry["reason"]
    assert {k: v for k, v in entry.items() if k != "reason"} == recovered


def test_the_dashboard_shows_a_json_logs_events_errors_and_stats(project: Project) -> None:
    project.configure(retry_attempts=1)
    project.set_keys(log_format='"json"')
    ok = project.submit("Echo", "handle", ["x"])
    bad = project.submit("Raise", "handle", ["RuntimeError", "boom"])
    assert project.drain().returncode == 0
    web = client(project)
    page = web.get(f"/jobs/{bad}").text
    assert "log: started" in page and "log: retrying" in page and "log: failure" in page
    assert page.count('<details class="attempt-error">') == 2 and "RuntimeError: boom" in page
    assert "log: success" in web.get(f"/jobs/{ok}").text
    stats = {c["class"]: c for c in web.get("/api/stats").json()["classes"]}
    assert (stats["Echo"]["runs"], stats["Echo"]["failures"]) == (1, 0)
    assert (stats["Raise"]["runs"], stats["Raise"]["failures"]) == (2, 2)
    errors = web.get("/errors?q=boom").text
    assert "status=failure" in errors and "RuntimeError: boom" in errors
    assert "&#34;traceback&#34;" not in errors, "a JSON entry shows as a text one: the line, then its traceback"


def logged(project: Project, job_id: str) -> list[tuple[str, bool]]:
    """(status, written as JSON) of the job's lines in the events log, in order."""
    path = project.logs / "background_jobs.log"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [(event.fields["status"], line.startswith("{")) for line in lines
            if (event := parse_event_line(line)) is not None and event.fields.get("job") == job_id]


def test_a_log_that_switched_format_at_a_reload_reads_as_one(project: Project) -> None:
    daemon = project.start()
    text_ok = project.submit("Echo", "handle", ["before"])
    text_bad = project.submit("Raise", "handle", ["RuntimeError", "text boom"])
    for job_id in (text_ok, text_bad):
        wait_for(lambda job_id=job_id: len(logged(project, job_id)) == 2, 10, "the text lines")
    project.set_keys(log_format='"json"')
    daemon.send_signal(signal.SIGHUP)

    def a_json_run() -> str | None:  # the reload is acted on at the loop's next pass: run jobs until it shows
        job_id = project.submit("Echo", "handle", ["after"])
        wait_for(lambda: len(logged(project, job_id)) == 2, 10, "its lines")
        return job_id if logged(project, job_id) == [("started", True), ("success", True)] else None

    json_ok = wait_for(a_json_run, 10, "a run logged as JSON after SIGHUP")
    json_bad = project.submit("Raise", "handle", ["RuntimeError", "json boom"])
    wait_for(lambda: logged(project, json_bad) == [("started", True), ("failure", True)], 10, "the JSON failure")
    code, out = project.stop(daemon)
    assert code == 0, out

    lines = (project.logs / "background_jobs.log").read_text(encoding="utf-8").splitlines()
    kinds = ["json" if line.startswith("{") else "text" for line in lines]
    assert kinds[0] == "text" and kinds == sorted(kinds, key=lambda kind: kind == "json"), "text, then JSON"
    assert all(parse_event_line(line) is not None for line in lines)
    for job_id, status in ((text_ok, "success"), (json_ok, "success"), (text_bad, "failure"), (json_bad, "failure")):
        assert [e.fields["status"] for e in job_events(project.logs, job_id)] == ["started", status]
    errors = {event.fields["job"]: text for event, text in error_entries(project.logs, limit_bytes=1 << 20)}
    assert errors.keys() == {text_bad, json_bad}
    assert "RuntimeError: text boom" in errors[text_bad] and "RuntimeError: json boom" in errors[json_bad]
    first, *traceback = errors[json_bad].splitlines()
    assert first.split(" ", 1)[1].startswith(f"job={json_bad} class=Raise method=handle attempt=1 status=failure ")
    assert traceback[0] == "Traceback (most recent call last):", "shown as the text errors log shows it"
    assert "json boom" in job_errors(project.logs, json_bad)["1"] and "text boom" in job_errors(project.logs,
                                                                                              text_bad)["1"]
    echo_runs = sum(1 for line in lines if (e := parse_event_line(line)) and e.fields["status"] == "success")
    stats = {c["class"]: c for c in Rollup(project.logs).statistics(3600, time.time())["classes"]}
    assert (stats["Echo"]["runs"], stats["Raise"]["runs"], stats["Raise"]["failures"]) == (echo_runs, 2, 2)
