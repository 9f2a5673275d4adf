"""Operator commands (SPEC §6): status, list, show, retry, cancel, purge and stop, on real spools and daemons."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, copies, read_pid, wait_for

WAITING_MESSAGE = "cancelled by spoold cancel"
RUNNING_MESSAGE = "cancelled by spoold cancel while it ran"  # written by the daemon that stopped the child
DAY = 86400.0


def op(project: Project, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `spoold ARGS --config F` (every operator command takes --config)."""
    return project.cli(*args, "--config", str(project.config), cwd=cwd)


def op_json(project: Project, *args: str) -> Any:
    done = op(project, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def kill_quietly(pid: int) -> None:
    """End a job child that outlived its killed daemon (it runs in its own session, so nobody reaps it)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def folder_of_pid(project: Project, pid: int) -> Path:
    [folder] = [f for f in project.daemon_folders()
                if json.loads((f / ".info").read_text(encoding="utf-8"))["pid"] == pid]
    return folder


def drop_job(project: Project, folder: str, job_id: str, mtime: float, **doc: Any) -> Path:
    path = project.drop(folder, f"{job_id}.json", {"class": "Echo", "method": "handle", "params": [], **doc})
    os.utime(path, (mtime, mtime))
    return path


def failed_doc(**extra: Any) -> dict[str, Any]:
    return {"status": "failed", "attempts": 1,
            "error": {"type": "RuntimeError", "message": "boom", "traceback": "Traceback ..."}, **extra}


def columns_line_up(header: str, rows: list[str], title: str) -> None:
    """Each row has a cell starting exactly under `title` in the header."""
    start = header.index(title)
    for row in rows:
        assert row[start] != " " and row[start - 2:start] == "  ", (header, row)


# -- status ---------------------------------------------------------------------------------------------


def test_status_json_lists_only_live_daemons_and_counts_job_files_per_folder(project: Project,
                                                                               tmp_path: Path) -> None:
    # A long rescan period keeps the live daemon from recovering the dead one's folder during the test.
    project.configure(workers=1, rescan_seconds=3600, shutdown_grace_seconds=0.5)
    live = project.start()
    project.submit("Sleep", "handle", ["30", str(tmp_path / "live.pid")])
    read_pid(tmp_path / "live.pid")
    dead = project.start()
    wait_for(lambda: len(project.daemon_folders()) == 2, 10, "second daemon folder")
    project.submit("Sleep", "handle", ["30", str(tmp_path / "dead.pid")])
    orphan = read_pid(tmp_path / "dead.pid")
    dead_folder = folder_of_pid(project, dead.pid)
    live_folder = folder_of_pid(project, live.pid)
    try:
        dead.kill()
        dead.wait(timeout=10)
        first_ready = time.time()
        project.submit("Echo", "handle", ["a"])
        after_submit = time.time()
        project.submit("Echo", "handle", ["b"])
        project.submit("Echo", "handle", ["c"], delay=3600)
        drop_job(project, "done", "d1", time.time(), status="done", attempts=1)
        drop_job(project, "failed", "f1", time.time(), **failed_doc())
        project.drop("rejected", "r1.json", b"{not json")
        project.drop("rejected", "r1.reason", "bad JSON: Expecting property name\n")
        project.drop("medium", "notes.txt", "not a job")
        project.drop("medium", ".hidden.json", "{}")
        before_status = time.time()
        status = op_json(project, "status")
        after_status = time.time()
        info = json.loads((live_folder / ".info").read_text(encoding="utf-8"))
        assert status["spool"] == str(project.spool)
        assert status["daemons"] == [{"id": live_folder.name, "host": socket.gethostname(), "pid": live.pid,
                                      "started_at": info["started_at"], "workers": 1, "busy": 1}]
        assert dead_folder.is_dir()  # the dead daemon's folder is there, but it is not listed
        assert status["counts"] == {"high": 0, "medium": 2, "low": 0, "scheduled": 1, "running": 2,
                                    "done": 1, "failed": 1, "rejected": 1}
        age = status["oldest_ready_age_seconds"]
        assert before_status - after_submit - 0.05 <= age <= after_status - first_ready + 0.05
        code, out = project.stop(live)
        assert code == 0, out
    finally:
        kill_quietly(orphan)


def test_status_prints_an_aligned_summary_for_people(project: Project, tmp_path: Path) -> None:
    empty = op(project, "status")
    assert empty.returncode == 0, empty.stderr
    assert "daemons  none alive" in empty.stdout.splitlines()
    assert empty.stdout.splitlines()[-1] == "oldest ready job  none"
    project.configure(workers=1, shutdown_grace_seconds=0.5)
    daemon = project.start()
    project.submit("Sleep", "handle", ["30", str(tmp_path / "sleep.pid")])
    read_pid(tmp_path / "sleep.pid")
    project.submit("Echo", "handle", ["waiting"])
    [folder] = project.daemon_folders()
    done = op(project, "status", cwd=tmp_path)  # --config works from any folder
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"spool    {project.spool}"
    assert lines[1] == "daemons  1 alive"
    header, row = lines[2], lines[3]
    assert header.split() == ["ID", "HOST", "PID", "STARTED", "WORKERS", "BUSY"]
    assert row.split()[0] == folder.name and row.split()[2] == str(daemon.pid) and row.split()[-1] == "1"
    assert len(header) == len(row)  # BUSY is right-aligned under its header
    jobs = lines[lines.index("jobs") + 1: -1]
    assert [line.split() for line in jobs] == [["FOLDER", "JOBS"], ["high", "0"], ["medium", "1"], ["low", "0"],
                                               ["scheduled", "0"], ["running", "1"], ["done", "0"], ["failed", "0"],
                                               ["rejected", "0"]]
    assert len({len(line) for line in jobs}) == 1
    assert lines[-1].startswith("oldest ready job  waiting ") and lines[-1].endswith("s")
    project.stop(daemon)


# -- list -------------------------------------------------------------------------------------------------


def test_list_shows_newest_first_with_limit_and_class_filter(project: Project) -> None:
    now = time.time()
    drop_job(project, "failed", "f1", now - 300, **failed_doc())
    drop_job(project, "failed", "f2", now - 200, **failed_doc(**{"class": "Raise"}))
    drop_job(project, "failed", "f3", now - 100, **failed_doc())
    bad = project.drop("failed", "bad.json", b"\xff not json")
    os.utime(bad, (now - 50, now - 50))
    assert [r["id"] for r in op_json(project, "list", "failed")] == ["bad", "f3", "f2", "f1"]
    assert [r["id"] for r in op_json(project, "list", "failed", "--limit", "2")] == ["bad", "f3"]
    assert [r["id"] for r in op_json(project, "list", "failed", "--class", "Echo")] == ["f3", "f1"]
    assert [r["id"] for r in op_json(project, "list", "failed", "--class", "Echo", "--limit", "1")] == ["f3"]
    rows = {r["id"]: r for r in op_json(project, "list", "failed")}
    assert rows["f2"] == {"id": "f2", "folder": "failed", "class": "Raise", "method": "handle", "attempts": 1,
                          "status": "failed", "mtime": datetime.fromtimestamp(now - 200, UTC).isoformat(),
                          "error_type": "RuntimeError", "error": "boom", "run_at": None, "daemon": None,
                          "reason": None, "path": str(project.spool / "failed" / "f2.json")}
    assert (rows["bad"]["class"], rows["bad"]["method"], rows["bad"]["attempts"]) == ("?", "?", None)
    human = op(project, "list", "failed")
    assert human.returncode == 0, human.stderr
    header, *lines = human.stdout.splitlines()
    assert header.split() == ["ID", "CLASS.METHOD", "ATTEMPTS", "WHEN", "ERROR"]
    assert [line.split()[:2] for line in lines] == [["bad", "?"], ["f3", "Echo.handle"], ["f2", "Raise.handle"],
                                                   ["f1", "Echo.handle"]]
    columns_line_up(header, lines, "CLASS.METHOD")
    columns_line_up(header, lines, "WHEN")
    columns_line_up(header, lines[1:], "ERROR")
    assert lines[2].endswith("RuntimeError: boom")


def test_list_shows_run_at_for_scheduled_jobs_and_the_reason_for_rejected_files(project: Project) -> None:
    job_id = project.submit("Echo", "handle", ["later"], delay=3600)
    run_at = project.doc("scheduled", job_id)["run_at"]
    [row] = op_json(project, "list", "scheduled")
    assert (row["id"], row["run_at"], row["status"]) == (job_id, run_at, "scheduled")
    header, line = op(project, "list", "scheduled").stdout.splitlines()
    assert header.split()[-1] == "RUN_AT"
    assert line.endswith(datetime.fromisoformat(run_at).astimezone().strftime("%Y-%m-%d %H:%M:%S"))
    project.drop("rejected", "r1.json", b"[1, 2]")
    project.drop("rejected", "r1.reason", "not a JSON object (got array)\n")
    [rejected] = op_json(project, "list", "rejected")
    assert (rejected["class"], rejected["reason"]) == ("?", "not a JSON object (got array)")
    header, line = op(project, "list", "rejected").stdout.splitlines()
    assert header.split()[-1] == "REASON" and line.endswith("not a JSON object (got array)")
    assert op(project, "list", "low").stdout == "no jobs in low/\n"
    wrong = op(project, "list", "tmp")
    assert wrong.returncode == 2 and "invalid choice: 'tmp'" in wrong.stderr


# -- show -------------------------------------------------------------------------------------------------


def shown(project: Project, job_id: str) -> tuple[list[str], dict[str, Any]]:
    """`show`'s head lines and its document, with the multi-line texts it prints below put back in place."""
    done = op(project, "show", job_id)
    assert done.returncode == 0, done.stderr
    head, body = done.stdout.split("\n\n", 1)
    document, end = json.JSONDecoder().raw_decode(body)
    below = re.split(r"\n\n(error\.traceback|output):\n", body[end:])
    assert below[0].strip() == "", below[0]
    for name, text in zip(below[1::2], below[2::2], strict=True):
        holder = document["error"] if name == "error.traceback" else document
        key = name.rsplit(".", 1)[-1]
        assert holder[key].endswith(f" lines, printed below as {name}>"), holder[key]
        holder[key] = text
    return head.splitlines(), document


def test_show_prints_the_state_and_the_document_wherever_the_job_is(project: Project) -> None:
    ready = project.submit("Echo", "handle", ["x"])
    later = project.submit("Echo", "handle", ["y"], delay=3600)
    for job_id, folder in ((ready, "medium"), (later, "scheduled")):
        head, doc = shown(project, job_id)
        assert head == [f"job     {job_id}", f"state   {folder}/", f"path    {project.spool / folder / job_id}.json"]
        assert doc == project.doc(folder, job_id)
    failing = project.submit("Raise", "handle", ["RuntimeError", "nope"])
    assert project.drain().returncode == 0
    for job_id, folder in ((ready, "done"), (failing, "failed")):
        head, doc = shown(project, job_id)
        assert head[1] == f"state   {folder}/"
        assert doc == project.doc(folder, job_id)
        assert op_json(project, "show", job_id) == {"id": job_id, "folder": folder,
                                                    "path": str(project.spool / folder / f"{job_id}.json"),
                                                    "document": project.doc(folder, job_id)}
    assert shown(project, failing)[1]["error"]["message"] == "nope"


def test_show_of_a_running_job_names_its_live_daemon(project: Project, tmp_path: Path) -> None:
    project.configure(shutdown_grace_seconds=0.5)
    daemon = project.start()
    job_id = project.submit("Sleep", "handle", ["30", str(tmp_path / "sleep.pid")])
    read_pid(tmp_path / "sleep.pid")
    [folder] = project.daemon_folders()
    head, doc = shown(project, job_id)
    assert head[1] == f"state   running in daemon {folder.name} (alive)"
    assert doc["class"] == "Sleep"
    as_json = op_json(project, "show", job_id)
    assert (as_json["folder"], as_json["daemon"], as_json["daemon_alive"]) == ("running", folder.name, True)
    project.stop(daemon)


def test_show_of_a_rejected_file_prints_its_reason_and_its_bytes_unchanged(project: Project) -> None:
    raw = b'{"class": "Echo", \xff\x00 oops'
    project.drop("high", "broken.json", raw)
    assert project.drain().returncode == 0
    reason = (project.spool / "rejected" / "broken.reason").read_text(encoding="utf-8").strip()
    done = subprocess.run([sys.executable, "-m", "spoold", "show", "broken", "--config", str(project.config)],
                          cwd=project.root, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"job     broken\nstate   rejected/\npath    {project.spool}/rejected/broken.json\n"
                           f"reason  {reason}\n\n").encode() + raw + b"\n"
    as_json = op_json(project, "show", "broken")
    assert (as_json["document"], as_json["reason"]) == (None, reason)
    assert as_json["raw"] == raw.decode("utf-8", errors="replace")


def test_show_of_an_unknown_id_exits_1_naming_it(project: Project) -> None:
    done = op(project, "show", "no-such-job")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"spoold: no-such-job: no such job in {project.spool}\n"


# -- retry ------------------------------------------------------------------------------------------------


def test_retry_sends_a_failed_job_back_and_it_runs_again_counting_attempts_on(project: Project,
                                                                             tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    job_id = project.submit("FailTimes", "handle", [str(counter), "1"])
    assert project.drain().returncode == 0
    assert project.doc("failed", job_id)["attempts"] == 1
    done = op(project, "retry", job_id)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{job_id}: failed/ -> medium/\n", "")
    requeued = project.doc("medium", job_id)
    assert (requeued["status"], requeued["failed_runs"], requeued["attempts"]) == ("ready", 0, 1)
    assert project.drain().returncode == 0
    doc = project.doc("done", job_id)
    assert (doc["attempts"], doc["result"], counter.read_text()) == (2, 2, "2")
    assert [h["outcome"] for h in doc["history"]] == ["failure", "success"]
    assert project.events(job_id) == ["started", "failure", "requeued", "started", "success"]
    [requeued_line] = [line for line in project.log_lines() if " status=requeued" in line]
    assert requeued_line.endswith(f" job={job_id} class=FailTimes method=handle attempt=1 status=requeued "
                                  f"by=cli:{getpass.getuser()}")
    assert copies(project, job_id) == [f"done/{job_id}.json"]


def test_retry_all_failed_requeues_every_failed_job_to_its_priority_folder(project: Project, tmp_path: Path) -> None:
    low = project.submit("FailTimes", "handle", [str(tmp_path / "a"), "1"], priority="low")
    medium = project.submit("FailTimes", "handle", [str(tmp_path / "b"), "1"])
    assert project.drain().returncode == 0
    assert project.names("failed") == sorted([f"{low}.json", f"{medium}.json"])
    done = op(project, "retry", "--all-failed")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted([f"{low}: failed/ -> low/", f"{medium}: failed/ -> medium/"])
    assert project.names("failed") == []
    assert project.drain().returncode == 0
    assert project.names("done") == sorted([f"{low}.json", f"{medium}.json"])
    nothing = op(project, "retry", "--all-failed")
    assert (nothing.returncode, nothing.stdout) == (0, "no failed jobs\n")


def test_retry_of_a_scheduled_job_runs_it_now(project: Project) -> None:
    job_id = project.submit("Echo", "handle", ["now"], delay=3600)
    done = op(project, "retry", job_id)
    assert (done.returncode, done.stdout) == (0, f"{job_id}: scheduled/ -> medium/\n")
    assert "run_at" not in project.doc("medium", job_id) and "delay_seconds" not in project.doc("medium", job_id)
    assert project.drain().returncode == 0
    assert project.doc("done", job_id)["result"] == ["now"]


def test_retry_exits_1_naming_each_id_it_could_not_act_on_and_still_retries_the_rest(project: Project) -> None:
    finished = project.submit("Echo", "handle", [])
    failing = project.submit("Raise", "handle", [])
    assert project.drain().returncode == 0
    done = op(project, "retry", "missing-id", finished, failing, "../etc")
    assert done.returncode == 1
    assert done.stdout == f"{failing}: failed/ -> medium/\n"
    assert done.stderr.splitlines() == [
        "spoold: missing-id: no such job in the spool",
        f"spoold: {finished}: it is in done/; only a failed, scheduled or rejected job can be retried",
        "spoold: ../etc: not a valid job id",
    ]
    assert project.has("medium", failing) and project.has("done", finished)
    usage = op(project, "retry")
    assert (usage.returncode, usage.stderr) == (2, "spoold: retry: give job ids or --all-failed\n")


def test_moving_a_failed_job_back_by_hand_gives_it_a_fresh_retry_budget(project: Project, tmp_path: Path) -> None:
    project.configure(retry_attempts=1)
    counter = tmp_path / "runs"
    job_id = project.submit("FailTimes", "handle", [str(counter), "3"])
    assert project.drain().returncode == 0
    assert project.doc("failed", job_id)["attempts"] == 2
    assert project.events(job_id) == ["started", "retrying", "started", "failure"]
    os.rename(project.spool / "failed" / f"{job_id}.json", project.spool / "medium" / f"{job_id}.json")
    assert project.drain().returncode == 0
    doc = project.doc("done", job_id)
    assert (doc["attempts"], counter.read_text()) == (4, "4")  # the 3rd run failed and was retried once more
    assert project.events(job_id) == ["started", "retrying", "started", "failure",
                                      "started", "retrying", "started", "success"]


# -- cancel -----------------------------------------------------------------------------------------------


def assert_cancelled(project: Project, job_id: str, message: str = WAITING_MESSAGE) -> dict[str, Any]:
    doc = project.doc("failed", job_id)
    assert (doc["status"], doc["error"]) == ("failed", {"type": "Cancelled", "message": message, "traceback": ""})
    assert datetime.fromisoformat(doc["finished_at"]).tzinfo is not None
    assert copies(project, job_id) == [f"failed/{job_id}.json"]
    return doc


def test_cancel_moves_a_ready_job_to_failed_as_cancelled_and_logs_it(project: Project) -> None:
    job_id = project.submit("Echo", "handle", ["never"])
    done = op(project, "cancel", job_id)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{job_id}: medium/ -> failed/\n", "")
    assert assert_cancelled(project, job_id)["attempts"] == 0
    assert project.events(job_id) == ["cancelled"]
    [line] = [line for line in project.log_lines() if f" job={job_id} " in line]
    user = getpass.getuser()
    assert line.split(" ", 1)[1] == f"job={job_id} class=Echo method=handle attempt=0 status=cancelled by=cli:{user}"
    assert project.daemon_folders() == []  # the command's own cli- folder is gone
    assert project.drain().returncode == 0  # Cancelled is final: no daemon runs it
    assert_cancelled(project, job_id)
    assert project.events(job_id) == ["cancelled"]


def test_cancel_moves_a_scheduled_job_to_failed_as_cancelled(project: Project) -> None:
    job_id = project.submit("Echo", "handle", ["later"], delay=3600)
    done = op(project, "cancel", job_id)
    assert (done.returncode, done.stdout) == (0, f"{job_id}: scheduled/ -> failed/\n")
    assert "run_at" not in assert_cancelled(project, job_id)
    assert project.events(job_id) == ["cancelled"]


def test_cancel_exits_1_naming_ids_it_could_not_act_on_and_cancels_the_rest(project: Project) -> None:
    finished = project.submit("Echo", "handle", [])
    assert project.drain().returncode == 0
    ready = project.submit("Echo", "handle", [])
    done = op(project, "cancel", "nope", ready, finished)
    assert done.returncode == 1
    assert done.stdout == f"{ready}: medium/ -> failed/\n"
    assert done.stderr.splitlines() == [
        "spoold: nope: no such job in the spool",
        f"spoold: {finished}: it is in done/; only a ready, scheduled or running job can be cancelled",
    ]
    assert_cancelled(project, ready)
    assert project.has("done", finished)


def test_cancel_leaves_a_file_that_is_not_a_valid_job_where_it_was(project: Project) -> None:
    project.drop("high", "halfway.json", b'{"class": "Ech')
    done = op(project, "cancel", "halfway")
    assert done.returncode == 1
    assert done.stderr.startswith("spoold: halfway: not a valid job (bad JSON: ")
    assert done.stderr.endswith("; left in high/\n")
    assert (project.spool / "high" / "halfway.json").read_bytes() == b'{"class": "Ech'


def test_cancel_of_a_running_job_stops_its_child_and_files_it_as_cancelled(project: Project, tmp_path: Path) -> None:
    # The daemon's half (kill the child on `.ID.cancel`, file it as Cancelled) is written separately: if it is
    # missing, this test fails at the exit code, after checking that the marker was written.
    project.configure(shutdown_grace_seconds=0.5)
    daemon = project.start()
    job_id = project.submit("Sleep", "handle", ["30", str(tmp_path / "sleep.pid")])
    child = read_pid(tmp_path / "sleep.pid")
    [folder] = project.daemon_folders()
    try:
        cancel = subprocess.Popen([sys.executable, "-m", "spoold", "cancel", job_id, "--timeout", "5",
                                   "--config", str(project.config)], cwd=project.root, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        marker = folder / f".{job_id}.cancel"
        saw_marker = wait_for(lambda: marker.exists() or project.has("failed", job_id), 10, "cancel marker")
        assert saw_marker
        out, err = cancel.communicate(timeout=20)
        assert (cancel.returncode, err) == (0, "")
        assert out == f"{job_id}: running/{folder.name}/ -> failed/ (its child was stopped)\n"
        doc = assert_cancelled(project, job_id, RUNNING_MESSAGE)
        assert doc["attempts"] == 1
        assert project.events(job_id) == ["started", "cancelled"]
        assert not marker.exists()
        wait_for(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text(),
                 5, "the child is stopped")
    finally:
        kill_quietly(child)
    code, out = project.stop(daemon)
    assert code == 0, out


def test_cancel_of_a_job_whose_daemon_died_exits_1_saying_so(project: Project, tmp_path: Path) -> None:
    daemon = project.start()
    job_id = project.submit("Sleep", "handle", ["30", str(tmp_path / "sleep.pid")])
    child = read_pid(tmp_path / "sleep.pid")
    [folder] = project.daemon_folders()
    try:
        daemon.kill()
        daemon.wait(timeout=10)
        done = op(project, "cancel", job_id)
        assert done.returncode == 1
        assert done.stderr == (f"spoold: {job_id}: its daemon {folder.name} is not alive; a daemon will requeue "
                               "the job when it recovers that folder: cancel it then\n")
        assert copies(project, job_id) == [f"running/{folder.name}/{job_id}.json"]
        assert not (folder / f".{job_id}.cancel").exists()
    finally:
        kill_quietly(child)


def test_cancelling_jobs_while_a_daemon_runs_them_never_duplicates_or_loses_one(project: Project) -> None:
    project.configure(workers=2)
    ids = [project.submit("Echo", "handle", [str(n)]) for n in range(30)]
    daemon = project.start()
    done = op(project, "cancel", *ids)
    wait_for(lambda: len(project.names("done")) + len(project.names("failed")) == 30, 15, "every job settled")
    cancelled = [job_id for job_id in ids if project.has("failed", job_id)]
    for job_id in ids:
        assert len(copies(project, job_id)) == 1, copies(project, job_id)
        if job_id in cancelled and project.events(job_id) == ["cancelled"]:
            assert_cancelled(project, job_id)
        elif job_id in cancelled:
            assert project.events(job_id) == ["started", "cancelled"]
            assert_cancelled(project, job_id, RUNNING_MESSAGE)
        else:
            wait_for(lambda job_id=job_id: len(project.events(job_id)) == 2, 5, "success line")
            assert project.events(job_id) == ["started", "success"]
    reported = [line.removeprefix("spoold: ").split(":")[0] for line in (done.stdout + done.stderr).splitlines()]
    assert sorted(reported) == sorted(ids), done.stdout + done.stderr
    assert done.returncode == (0 if len(cancelled) == 30 else 1)
    assert [f.name for f in project.daemon_folders()] == [folder_of_pid(project, daemon.pid).name]
    code, out = project.stop(daemon)
    assert code == 0, out


# -- purge ------------------------------------------------------------------------------------------------


def test_purge_removes_only_jobs_older_than_the_duration(project: Project) -> None:
    now = time.time()
    drop_job(project, "done", "old1", now - 10 * DAY)
    drop_job(project, "done", "old2", now - 8 * DAY)
    drop_job(project, "done", "new", now - 1 * DAY)
    done = op(project, "purge", "done", "--older-than", "7d")
    assert (done.returncode, done.stdout) == (0, "removed 2 jobs from done/ older than 7d\n")
    assert project.names("done") == ["new.json"]
    for name, age in (("r-old", 10 * DAY), ("r-new", 1 * DAY)):
        raw = project.drop("rejected", f"{name}.json", b"junk")
        os.utime(raw, (now - age, now - age))
        project.drop("rejected", f"{name}.reason", "bad JSON\n")
    done = op(project, "purge", "rejected", "--older-than", "168h")
    assert (done.returncode, done.stdout) == (0, "removed 1 job from rejected/ older than 168h\n")
    assert sorted(p.name for p in (project.spool / "rejected").iterdir()) == ["r-new.json", "r-new.reason"]


@pytest.mark.parametrize(("args", "message"), [
    (("done", "--older-than", "7x"),
     "spoold: --older-than: expected a duration such as 7d, 12h, 30m or 90s, got '7x'\n"),
    (("high", "--older-than", "7d"), "invalid choice: 'high' (choose from 'done', 'failed', 'rejected')"),
])
def test_purge_refuses_a_bad_duration_or_folder_with_exit_2(project: Project, args: tuple[str, ...],
                                                           message: str) -> None:
    keep = drop_job(project, "done", "kept", time.time() - 30 * DAY)
    done = op(project, "purge", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert keep.exists()


def test_purge_logs_one_purged_line_per_removed_job_with_who_did_it(project: Project) -> None:
    now = time.time()
    for job_id, age in (("old1", 10 * DAY), ("old2", 9 * DAY), ("new", DAY)):
        drop_job(project, "done", job_id, now - age)
    assert op(project, "purge", "done", "--older-than", "7d").returncode == 0
    user = getpass.getuser()
    assert sorted(line.split(" ", 1)[1] for line in project.log_lines()) == [
        f"job=old1 status=purged folder=done by=cli:{user}", f"job=old2 status=purged folder=done by=cli:{user}"]
    assert project.log_lines(errors=True) == []
    assert op(project, "purge", "done", "--older-than", "7d").returncode == 0
    assert len(project.log_lines()) == 2, "nothing removed, nothing logged"


def test_in_a_json_log_each_operator_action_is_one_object_naming_who_did_it(project: Project,
                                                                            tmp_path: Path) -> None:
    project.set_keys(log_format='"json"')
    user = f"cli:{getpass.getuser()}"
    failed = project.submit("Raise", "handle", ["RuntimeError", "boom"])
    assert project.drain().returncode == 0
    assert op(project, "retry", failed).returncode == 0
    assert op(project, "cancel", failed).returncode == 0  # waiting in medium/ again
    drop_job(project, "done", "ancient", time.time() - 30 * DAY)
    assert op(project, "purge", "done", "--older-than", "7d").returncode == 0
    marker = tmp_path / "sleep.pid"
    daemon = project.start()
    running = project.submit("Sleep", "handle", ["30", str(marker)])
    read_pid(marker)
    assert op(project, "cancel", running).returncode == 0
    wait_for(lambda: f'"job": "{running}"' in project.log_lines()[-1], 10, "the daemon's cancelled line")
    project.stop(daemon)

    entries = [json.loads(line) for line in project.log_lines()]
    acted = [{k: v for k, v in e.items() if k != "ts"} for e in entries if "by" in e]
    assert acted[:3] == [
        {"job": failed, "class": "Raise", "method": "handle", "attempt": 1, "status": "requeued", "by": user},
        {"job": failed, "class": "Raise", "method": "handle", "attempt": 1, "status": "cancelled", "by": user},
        {"job": "ancient", "status": "purged", "folder": "done", "by": user}]
    [stopped] = acted[3:]
    assert (stopped["job"], stopped["status"], stopped["error"], stopped["by"]) == (running, "cancelled", "Cancelled",
                                                                                  user)


# -- stop -------------------------------------------------------------------------------------------------


def test_stop_signals_the_live_daemon_which_exits_0(project: Project) -> None:
    daemon = project.start()
    [folder] = project.daemon_folders()
    done = op(project, "stop", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"sent SIGTERM to daemon {folder.name} (pid {daemon.pid})\nstopped 1 daemon\n"
    assert daemon.wait(timeout=10) == 0
    assert not folder.exists()
    again = op(project, "stop")
    assert (again.returncode, again.stdout) == (0, "no live daemon on this host\n")


def test_cancel_stops_a_job_run_with_now(project: Project) -> None:
    """`run_job.py --now` has its own locked folder: a cancel marker there stops its child too."""
    proc = project.start_run_job("Sleep", "handle", "30", "--now", stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    job_id = proc.stdout.readline().strip()
    wait_for(lambda: project.names("running") == [f"{job_id}.json"], 10, "running under --now")
    result = project.cli("cancel", job_id, "--config", str(project.config))
    assert result.returncode == 0, result.stderr
    assert proc.wait(timeout=10) == 1
    assert project.doc("failed", job_id)["error"]["type"] == "Cancelled"
