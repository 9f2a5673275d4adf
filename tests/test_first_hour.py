"""What a new user meets in the first hour (issue 11, point 6): `spoold init` in an empty folder, a
hand-written file rejected while half-written and retried once fixed, files that are never jobs,
`spoold list | head`, and a failed job's traceback in `spoold show`. Real processes throughout."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, job_lines, wait_for

PIPE_CLOSED = 141  # 128 + SIGPIPE, as `git log | head` leaves it


def spoold(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BGJOBS_CONFIG"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "spoold", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def op(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return project.cli(*args, "--config", str(project.config))


# -- spoold init ------------------------------------------------------------------------------------------


def test_init_in_an_empty_folder_runs_a_hand_written_file_dropped_into_medium(tmp_path: Path) -> None:
    made = spoold("init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[:3] == [
        f"wrote {tmp_path / 'bgjobs.toml'}",
        "made the spool spool/ (tmp/ high/ medium/ low/ scheduled/ running/ done/ failed/ rejected/)",
        "wrote services/__init__.py, services/example_job.py: ExampleJob.handle, listed in [allowed_jobs]",
    ]
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [
        "done", "failed", "high", "low", "medium", "rejected", "running", "scheduled", "tmp"]
    config = tomllib.loads((tmp_path / "bgjobs.toml").read_text(encoding="utf-8"))
    assert config["allowed_jobs"] == {"ExampleJob": ["handle"]}
    # What a producer in another language does: write the bytes straight into a ready folder.
    (tmp_path / "spool" / "medium" / "first.json").write_text(
        '{"class": "ExampleJob", "params": ["hello", 42]}\n', encoding="utf-8")
    drained = spoold("start", "--drain", cwd=tmp_path)
    assert drained.returncode == 0, drained.stderr
    doc = json.loads((tmp_path / "spool" / "done" / "first.json").read_text(encoding="utf-8"))
    assert (doc["status"], doc["result"]) == ("done", {"args": ["hello", 42], "kwargs": {}})
    submitted = spoold("submit", "ExampleJob", "handle", "a,b", "--now", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout.splitlines()[-1]) == {"args": ["a", "b"], "kwargs": {}}


def test_init_never_touches_an_existing_namespace_and_allows_nothing_then(tmp_path: Path) -> None:
    package = tmp_path / "services"
    package.mkdir()
    (package / "__init__.py").write_text("# mine\n", encoding="utf-8")
    made = spoold("init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[2] == ("left the namespace 'services' (services) as it is; "
                                           "allow its classes with `spoold allow CLASS METHOD`")
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py"]
    assert (package / "__init__.py").read_text(encoding="utf-8") == "# mine\n"
    assert tomllib.loads((tmp_path / "bgjobs.toml").read_text(encoding="utf-8"))["allowed_jobs"] == {}
    assert (tmp_path / "spool" / "medium").is_dir()


def test_init_treats_a_module_of_the_namespace_name_as_existing(tmp_path: Path) -> None:
    (tmp_path / "services.py").write_text("class Mine: ...\n", encoding="utf-8")
    assert spoold("init", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "services").exists()
    assert (tmp_path / "services.py").read_text(encoding="utf-8") == "class Mine: ...\n"


def test_init_force_rewrites_the_config_but_keeps_an_edited_example_and_its_allowlist_entry(tmp_path: Path) -> None:
    assert spoold("init", cwd=tmp_path).returncode == 0
    example = tmp_path / "services" / "example_job.py"
    edited = example.read_text(encoding="utf-8").replace("ExampleJob got", "my ExampleJob got")
    example.write_text(edited, encoding="utf-8")
    refused = spoold("init", cwd=tmp_path)
    assert refused.returncode == 2
    forced = spoold("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines()[2] == ("kept services/example_job.py as it is: ExampleJob.handle, "
                                             "listed in [allowed_jobs]")
    assert example.read_text(encoding="utf-8") == edited
    assert tomllib.loads((tmp_path / "bgjobs.toml").read_text(encoding="utf-8"))["allowed_jobs"] == {
        "ExampleJob": ["handle"]}


# -- spoold retry of a rejected file ---------------------------------------------------------------------


def test_a_file_rejected_while_half_written_is_retried_once_fixed(project: Project) -> None:
    daemon = project.start()
    project.drop("medium", "slow.json", '{"class": "Echo", "par')  # a person still typing; settle is 0.5s
    rejected = project.spool / "rejected" / "slow.json"
    reason = project.spool / "rejected" / "slow.reason"
    wait_for(reason.exists, 10, "slow.json rejected")
    still = op(project, "retry", "slow")
    assert still.returncode == 1
    assert still.stderr.startswith("spoold: slow: still not a valid job: bad JSON: Unterminated string")
    assert still.stderr.endswith(" line 1 column 19; left in rejected/\n")
    rejected.write_text('{"class": "NotListed", "params": ["x"]}', encoding="utf-8")  # intake's checks, all of them
    refused = op(project, "retry", "slow")
    assert refused.returncode == 1
    assert refused.stderr == ("spoold: slow: still not a valid job: class 'NotListed' is not allowed "
                              "(not in [allowed_jobs]); left in rejected/\n")
    assert rejected.exists() and reason.exists()
    rejected.write_text('{"class": "Echo", "params": ["fixed"]}', encoding="utf-8")
    done = op(project, "retry", "slow")
    assert (done.returncode, done.stdout, done.stderr) == (0, "slow: rejected/ -> medium/\n", "")
    wait_for(lambda: project.has("done", "slow"), 10, "slow.json done")
    assert project.doc("done", "slow")["result"] == ["fixed"]
    assert sorted(os.listdir(project.spool / "rejected")) == []  # the reason went with it; the logs keep both
    wait_for(lambda: "success" in project.events("slow"), 5, "success line")
    events = project.events("slow")  # the daemon may claim it before `retry` has written its line
    assert (events[0], sorted(events[1:3]), events[3:]) == ("rejected", ["requeued", "started"], ["success"])
    [requeued] = [line for line in job_lines(project, "slow") if " status=requeued " in line + " "]
    assert requeued.split(" ", 1)[1] == (f"job=slow class=Echo method=handle attempt=0 status=requeued "
                                         f"by=cli:{getpass.getuser()}")
    code, out = project.stop(daemon)
    assert code == 0, out


def test_a_rejected_file_retried_goes_to_its_class_priority_folder(project: Project) -> None:
    project.configure(extra='\n[job_priority]\nEcho = "low"\n')
    project.drop("rejected", "r1.json", '{"class": "Echo"}')
    project.drop("rejected", "r1.reason", "bad JSON: Expecting value\n")
    done = op(project, "retry", "r1")
    assert (done.returncode, done.stdout) == (0, "r1: rejected/ -> low/\n")
    assert project.doc("low", "r1")["status"] == "ready"


# -- files that are never jobs ---------------------------------------------------------------------------


def test_status_counts_files_in_ready_folders_that_are_never_jobs(project: Project) -> None:
    clean = op(project, "status", "--json")
    assert json.loads(clean.stdout)["not_jobs"] == {}
    assert "ignored" not in op(project, "status").stdout
    project.submit("Echo", "handle", ["a real job"])
    project.drop("medium", "notes.txt", "remember the milk")
    project.drop("medium", "job.json.swp", b"\x00vim")
    project.drop("medium", ".hidden.json", "{}")  # hidden: a writer's temp file, not counted
    (project.spool / "medium" / "drafts").mkdir()
    project.drop("low", "job.jsn", '{"class": "Echo"}')
    status = json.loads(op(project, "status", "--json").stdout)
    assert status["not_jobs"] == {"medium": 3, "low": 1}
    assert (status["counts"]["medium"], status["counts"]["low"]) == (1, 0)
    text = op(project, "status").stdout.splitlines()
    assert text[-1] == "ignored  4 files that are not jobs, in medium/ (3), low/ (1): only NAME.json files run"
    assert text[-2].startswith("oldest ready job  waiting ")


# -- a reader that closes stdout early -------------------------------------------------------------------


def read_one_line_then_close(project: Project, *args: str) -> tuple[int, str, str]:
    """Run `spoold ARGS` into a real pipe whose reader closes it after the first line, like `| head -1`."""
    proc = subprocess.Popen([sys.executable, "-m", "spoold", *args, "--config", str(project.config)],
                            cwd=project.root, env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline().decode()
    proc.stdout.close()
    errors = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=30), first, errors


def test_list_into_a_pipe_closed_early_ends_quietly_as_git_log_does(project: Project) -> None:
    for i in range(1500):  # about 100 bytes a row: well past a 64 KiB pipe buffer
        project.drop("done", f"job-{i:04d}.json", {"class": "Echo", "status": "done", "attempts": 1})
    code, first, errors = read_one_line_then_close(project, "list", "done", "--limit", "0")
    assert first.split() == ["ID", "CLASS.METHOD", "ATTEMPTS", "WHEN", "ERROR"]
    assert (code, errors) == (PIPE_CLOSED, "")


def test_show_into_a_pipe_closed_early_ends_quietly(project: Project) -> None:
    project.drop("done", "big.json", {"class": "Echo", "status": "done", "result": ["x" * 100] * 3000})
    code, first, errors = read_one_line_then_close(project, "show", "big")
    assert first == "job     big\n"
    assert (code, errors) == (PIPE_CLOSED, "")


def test_status_into_a_pipe_already_closed_ends_quietly(project: Project) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before a byte is written, so the first write fails for sure
    try:
        done = subprocess.run([sys.executable, "-m", "spoold", "status", "--config", str(project.config)],
                              cwd=project.root, env=project.env(), stdout=write_end, stderr=subprocess.PIPE,
                              timeout=30)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (PIPE_CLOSED, b"")


# -- a failed job's traceback ----------------------------------------------------------------------------


def test_show_prints_a_failed_jobs_traceback_as_lines_and_json_keeps_the_document(project: Project) -> None:
    job_id = project.submit("Raise", "handle", ["RuntimeError", "boom"])
    assert project.drain().returncode == 0
    traceback: str = project.doc("failed", job_id)["error"]["traceback"]
    assert traceback.startswith("Traceback (most recent call last):\n")
    shown = op(project, "show", job_id)
    assert shown.returncode == 0, shown.stderr
    document_text, _, block = shown.stdout.partition("\n}\n\nerror.traceback:\n")
    assert block == traceback.rstrip("\n") + "\n"
    assert block.splitlines()[-1] == "RuntimeError: boom"
    printed: dict[str, Any] = json.loads(document_text[document_text.index("{"):] + "\n}")
    lines = len(traceback.rstrip("\n").splitlines())
    assert printed["error"] == {"type": "RuntimeError", "message": "boom",
                                "traceback": f"<{lines} lines, printed below as error.traceback>"}
    assert "\\n" not in shown.stdout  # nothing is left escaped
    raw = json.loads(op(project, "show", job_id, "--json").stdout)
    assert raw["document"] == project.doc("failed", job_id)


@pytest.mark.parametrize("traceback", ["", "RuntimeError: one line\n"])
def test_show_leaves_a_traceback_of_one_line_in_its_place(project: Project, traceback: str) -> None:
    error = {"type": "Cancelled", "message": "cancelled", "traceback": traceback}
    project.drop("failed", "c1.json", {"class": "Echo", "status": "failed", "error": error})
    shown = op(project, "show", "c1")
    assert "error.traceback:" not in shown.stdout
    assert json.loads(shown.stdout[shown.stdout.index("{"):])["error"] == error
