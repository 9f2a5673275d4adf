"""Bad input never stops the daemon (SPEC §2 `rejected/`, §3 validity).

Every invalid file dropped into a ready folder ends in rejected/ with its bytes unchanged and a
one-line ID.reason, is logged as `status=rejected` (and with its reason in the errors log), and
the next valid job still runs. Files that are not jobs are left exactly where they are.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from datetime import datetime
from typing import cast

import pytest
from conftest import Project, wait_for

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
OTHER_FOLDERS = ("high", "medium", "low", "scheduled", "running", "done", "failed")


def obj(doc: object) -> bytes:
    return json.dumps(doc).encode()


def nested(depth: int) -> bytes:
    """A job object whose `params` are `depth - 1` nested arrays, so the document is `depth` levels deep."""
    return b'{"class": "Echo", "params": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


# (dropped bytes, fragments the one-line reason must contain)
BAD_DOCUMENTS = [
    pytest.param(b'{"class": "Echo", "params": [1, 2', ["bad JSON"], id="bad-json"),
    pytest.param(obj([{"class": "Echo"}]), ["not a JSON object", "array"], id="array-not-object"),
    pytest.param(obj({"method": "handle", "params": []}), ["missing", "'class'"], id="no-class"),
    pytest.param(obj({"class": "NotListed", "params": ["marker-ran"]}), ["'NotListed'", "not allowed"],
                 id="class-not-in-allowlist"),
    pytest.param(obj({"class": "Echo", "method": "nope"}), ["Echo.nope", "not allowed"], id="method-not-allowed"),
    pytest.param(obj({"class": "Echo", "method": "_secret"}), ["'_secret'", "never allowed"], id="private-method"),
    pytest.param(obj({"class": "os.path", "method": "join"}), ["'os.path'", "no dots"], id="dotted-class"),
    pytest.param(obj({"class": "Echo", "params": "a,b"}), ["'params'", "expected an array or object", "string"],
                 id="params-string"),
    pytest.param(obj({"class": "Echo", "params": 42}), ["'params'", "expected an array or object"],
                 id="params-number"),
    pytest.param(b'{"class": "Echo", "params": ["' + b"x" * 70000 + b'"]}', ["too large", "65536"],
                 id="over-max-job-bytes"),
    pytest.param(b'{"class": "Echo", "params": ["\xff\xfe"]}', ["not UTF-8"], id="invalid-utf8"),
    pytest.param(b'{"class": "Echo", "class": "Sleep"}', ["duplicate key", "'class'"], id="duplicate-keys"),
    pytest.param(nested(10_000), ["nesting deeper than 100"], id="nested-10000-levels"),
]


# -- helpers -------------------------------------------------------------------------------------

def reason_of(project: Project, job_id: str) -> str:
    """The text of rejected/ID.reason, after checking it is exactly one line."""
    data = (project.spool / "rejected" / f"{job_id}.reason").read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 1, f"not exactly one line: {data!r}"
    reason = data[:-1].decode("utf-8")
    assert reason.strip(), "empty reason"
    assert not CONTROL.search(reason), f"raw control character in reason: {reason!r}"
    return reason


def assert_rejected(project: Project, job_id: str, dropped: bytes | None, fragments: list[str]) -> str:
    """rejected/ID.json holds the dropped bytes, ID.reason names the problem, both logs say so."""
    path = project.spool / "rejected" / f"{job_id}.json"
    assert os.path.lexists(path), f"{path} missing; rejected/ has {os.listdir(project.spool / 'rejected')}"
    if dropped is not None:
        assert path.read_bytes() == dropped
    reason = reason_of(project, job_id)
    for fragment in fragments:
        assert fragment in reason, f"{fragment!r} not in reason {reason!r}"
    lines = [line for line in project.log_lines() if f" job={job_id} " in line and " status=rejected" in line]
    assert len(lines) == 1, lines
    errors = project.log_lines(errors=True)
    assert lines[0] in errors, f"{lines[0]!r} not in the errors log"
    after = errors[errors.index(lines[0]) + 1]
    assert after == reason, f"errors log gives {after!r} after the line, ID.reason says {reason!r}"
    for folder in OTHER_FOLDERS:
        assert not project.has(folder, job_id), f"{job_id} also in {folder}/"
    assert_no_control_characters(project)
    return reason


def assert_no_control_characters(project: Project) -> None:
    for line in project.log_lines() + project.log_lines(errors=True):
        assert not CONTROL.search(line), f"raw control character in log line {line!r}"


def rejected_ids(project: Project) -> list[str]:
    folder = project.spool / "rejected"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json")) if folder.is_dir() else []


def wait_rejected(project: Project, job_id: str) -> None:
    """Until the rejection is in both logs (the errors log is written just after the main one)."""
    wait_for(lambda: any(f" job={job_id} " in line and " status=rejected" in line
                         for line in project.log_lines(errors=True)), 10, f"{job_id} rejected and logged")


def wait_done(project: Project, job_id: str) -> None:
    """Until the job is in done/ and its success is logged (the line follows the move)."""
    wait_for(lambda: project.has("done", job_id) and "success" in project.events(job_id), 10, f"{job_id} done")


def drop_valid_and_see_it_run(project: Project, job_id: str = "after") -> None:
    """A valid job dropped after the bad one runs: the daemon kept going."""
    project.drop("medium", f"{job_id}.json", {"class": "Echo", "params": ["still", "here"]})
    wait_done(project, job_id)
    assert project.doc("done", job_id)["result"] == ["still", "here"]
    assert project.events(job_id) == ["started", "success"]


def stop_cleanly(project: Project, daemon: subprocess.Popen[str]) -> None:
    assert daemon.poll() is None, "the daemon died"
    code, out = project.stop(daemon)
    assert code == 0, out


# -- invalid documents ---------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "fragments"), BAD_DOCUMENTS)
def test_an_invalid_document_is_rejected_unchanged_and_the_daemon_runs_the_next_job(
        project: Project, content: bytes, fragments: list[str]) -> None:
    project.configure(settle_seconds=0.3)
    daemon = project.start()
    dropped = project.drop("medium", "bad.json", content)
    wait_rejected(project, "bad")
    assert not dropped.exists()
    assert_rejected(project, "bad", content, fragments)
    assert project.events("bad") == ["rejected"]
    assert not (project.root / "marker-ran").exists()
    drop_valid_and_see_it_run(project)
    assert rejected_ids(project) == ["bad"]
    stop_cleanly(project, daemon)


def test_an_allowlisted_class_missing_from_the_namespace_fails_for_good_as_job_not_found(project: Project) -> None:
    """The class is looked up in the child (the daemon never imports job code): a run that fails, not retried."""
    project.configure(settle_seconds=0.3, retry_attempts=3)
    daemon = project.start()
    project.drop("high", "missing.json", obj({"class": "Missing", "params": ["x"]}))
    wait_for(lambda: project.has("failed", "missing"), 10, "missing in failed/")
    error = project.doc("failed", "missing")["error"]
    assert error["type"] == "JobNotFound"
    assert "'Missing' not found in 'jobs'" in error["message"]
    wait_for(lambda: project.events("missing") == ["started", "failure"], 5, "started, failure")
    failure = [line for line in project.log_lines() if " job=missing " in line][-1]
    assert "error=JobNotFound" in failure
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)


def test_nesting_of_exactly_100_levels_runs_and_101_levels_is_rejected(project: Project) -> None:
    project.configure(settle_seconds=0.3)
    project.drop("medium", "deep100.json", nested(100))
    project.drop("medium", "deep101.json", nested(101))
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.events("deep100") == ["started", "success"]
    assert_rejected(project, "deep101", nested(101), ["nesting deeper than 100"])


def test_a_leading_utf8_bom_is_ignored_and_the_job_runs(project: Project) -> None:
    project.drop("medium", "bom.json", b"\xef\xbb\xbf" + obj({"class": "Echo", "params": ["bom"]}))
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.doc("done", "bom")["result"] == ["bom"]
    assert rejected_ids(project) == []


# -- things that are not regular files -----------------------------------------------------------

def test_a_symlink_is_rejected_as_a_symlink_and_its_target_is_never_read_or_moved(project: Project) -> None:
    project.configure(settle_seconds=0.3)
    sentinel = project.root / "sentinel"
    target = project.root / "outside.json"
    target_bytes = obj({"class": "WriteSentinel", "params": [str(sentinel)]})
    target.write_bytes(target_bytes)
    daemon = project.start()
    link = project.spool / "high" / "x.json"
    link.symlink_to(target)
    wait_rejected(project, "x")
    moved = project.spool / "rejected" / "x.json"
    assert moved.is_symlink()
    assert os.readlink(moved) == str(target)
    assert not os.path.lexists(link)
    assert target.read_bytes() == target_bytes
    assert_rejected(project, "x", None, ["symlink"])
    drop_valid_and_see_it_run(project)
    assert not sentinel.exists(), "the symlink's target was run"
    assert target.read_bytes() == target_bytes
    stop_cleanly(project, daemon)


def test_a_fifo_is_rejected_without_blocking_the_daemon(project: Project) -> None:
    project.configure(settle_seconds=0.3)
    daemon = project.start()
    fifo = project.spool / "high" / "y.json"
    os.mkfifo(fifo)
    project.drop("high", "after.json", {"class": "Echo", "params": ["still", "here"]})
    wait_done(project, "after")
    assert project.events("after") == ["started", "success"]
    wait_rejected(project, "y")
    assert stat.S_ISFIFO(os.lstat(project.spool / "rejected" / "y.json").st_mode)
    assert_rejected(project, "y", None, ["FIFO"])
    drop_valid_and_see_it_run(project, "later")
    stop_cleanly(project, daemon)


def test_a_directory_named_like_a_job_is_left_where_it_is(project: Project) -> None:
    sentinel = project.root / "sentinel"
    folder = project.spool / "high" / "d.json"
    folder.mkdir(parents=True)
    inner = obj({"class": "WriteSentinel", "params": [str(sentinel)]})
    (folder / "inner.json").write_bytes(inner)
    project.drop("high", "after.json", {"class": "Echo", "params": ["still", "here"]})
    result = project.drain(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.events("after") == ["started", "success"]
    assert folder.is_dir() and os.listdir(folder) == ["inner.json"]
    assert (folder / "inner.json").read_bytes() == inner
    assert not sentinel.exists()
    assert os.listdir(project.spool / "rejected") == []
    assert project.events("d") == []


def test_a_drain_over_a_folder_of_every_kind_of_bad_input_rejects_each_and_runs_the_valid_job(
        project: Project) -> None:
    project.configure(settle_seconds=0.3)
    contents = [cast(bytes, p.values[0]) for p in BAD_DOCUMENTS]
    for index, content in enumerate(contents):
        project.drop("medium", f"bad{index}.json", content)
    target = project.root / "outside.json"
    target.write_bytes(obj({"class": "Echo"}))
    (project.spool / "high").mkdir(parents=True, exist_ok=True)
    (project.spool / "high" / "x.json").symlink_to(target)
    os.mkfifo(project.spool / "high" / "y.json")
    (project.spool / "high" / "d.json").mkdir()
    project.drop("low", "after.json", {"class": "Echo", "params": ["still", "here"]})
    result = project.drain(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.events("after") == ["started", "success"]
    for index, (content, fragments) in enumerate(cast(tuple[bytes, list[str]], p.values) for p in BAD_DOCUMENTS):
        assert_rejected(project, f"bad{index}", content, fragments)
    assert_rejected(project, "x", None, ["symlink"])
    assert_rejected(project, "y", None, ["FIFO"])
    assert (project.spool / "high" / "d.json").is_dir()
    assert sorted(rejected_ids(project)) == sorted([f"bad{i}" for i in range(len(contents))] + ["x", "y"])
    assert project.names("high") == ["d.json"] and project.names("medium") == [] and project.names("low") == []


# -- names -------------------------------------------------------------------------------------

BAD_NAMES = [
    pytest.param("my job.json", id="space"),
    pytest.param("-dash.json", id="leading-dash"),
    pytest.param("\u00fcn\u00ef.json", id="non-ascii"),
    pytest.param("a" * 129 + ".json", id="129-characters"),
    pytest.param("new\nline.json", id="newline"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_invalid_file_with_a_name_that_is_no_id_is_rejected_under_a_fresh_id_naming_the_original(
        project: Project, name: str) -> None:
    project.configure(settle_seconds=0.3)
    content = b'{"class": "Echo", '
    project.drop("medium", name, content)
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    (fresh,) = rejected_ids(project)
    assert ID.fullmatch(fresh) and fresh + ".json" != name
    assert_rejected(project, fresh, content, ["bad JSON", repr(name)[1:-1]])
    assert project.events(fresh) == ["rejected"]
    assert os.listdir(project.spool / "medium") == []


def test_an_invalid_file_whose_name_is_taken_in_rejected_gets_a_fresh_id_and_replaces_nothing(
        project: Project) -> None:
    project.configure(settle_seconds=0.3)
    first, second = b'{"first": ', b'{"second": '
    project.drop("medium", "bad.json", first)
    assert project.drain().returncode == 0
    project.drop("medium", "bad.json", second)
    assert project.drain().returncode == 0
    assert_rejected(project, "bad", first, ["bad JSON"])
    (fresh,) = [job_id for job_id in rejected_ids(project) if job_id != "bad"]
    assert_rejected(project, fresh, second, ["bad JSON", "'bad.json'"])
    assert project.events(fresh) == ["rejected"]


@pytest.mark.parametrize("name", ["my job.json", "new\nline.json"])
def test_a_valid_job_with_a_name_that_is_no_id_runs_under_a_fresh_id_keeping_source_name(
        project: Project, name: str) -> None:
    project.drop("medium", name, obj({"class": "Echo", "params": ["renamed"]}))
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    (done,) = project.names("done")
    fresh = done[:-5]
    assert ID.fullmatch(fresh)
    doc = project.doc("done", fresh)
    assert doc["source_name"] == name and doc["id"] == fresh and doc["result"] == ["renamed"]
    assert project.events(fresh) == ["started", "success"]
    assert_no_control_characters(project)


# -- files that are not jobs ---------------------------------------------------------------------

def test_non_json_hidden_editor_litter_and_tmp_files_are_left_exactly_where_they_are(project: Project) -> None:
    sentinel = project.root / "sentinel"
    job = obj({"class": "WriteSentinel", "params": [str(sentinel)]})
    litter = [("high", "job.txt"), ("high", ".x.json"), ("high", "x.json~"), ("high", ".x.json.swp"),
              ("high", "#x.json#"), ("medium", "x.json.bak"), ("low", "x.json.part"), ("tmp", "t.json"),
              ("tmp", ".half.part")]
    paths = [project.drop(folder, name, job) for folder, name in litter]
    project.drop("medium", "after.json", {"class": "Echo", "params": ["still", "here"]})
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.events("after") == ["started", "success"]
    for path in paths:
        assert path.read_bytes() == job, f"{path} changed or moved"
    assert not sentinel.exists(), "a file that is not a job was run"
    assert os.listdir(project.spool / "rejected") == []
    assert all(" job=after " in line for line in project.log_lines())
    # a live daemon going through several rescans leaves them alone too
    project.configure(rescan_seconds=0.2)
    daemon = project.start()
    drop_valid_and_see_it_run(project, "later")
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        assert all(p.exists() for p in paths)
        time.sleep(0.05)
    stop_cleanly(project, daemon)
    for path in paths:
        assert path.read_bytes() == job
    assert not sentinel.exists()
    assert os.listdir(project.spool / "rejected") == []


# -- files still being written -------------------------------------------------------------------

def test_a_job_written_by_hand_in_slow_chunks_is_never_rejected_and_runs_once_complete(project: Project) -> None:
    project.configure(settle_seconds=1)
    sentinel = project.root / "sentinel"
    content = obj({"class": "WriteSentinel", "params": [str(sentinel), "once"], "note": "written slowly"})
    size = -(-len(content) // 5)
    chunks = [content[i:i + size] for i in range(0, len(content), size)]
    assert len(chunks) == 5 and chunks[-1].endswith(b"}")
    daemon = project.start()
    path = project.spool / "high" / "slow.json"
    with path.open("wb") as handle:
        for number, chunk in enumerate(chunks, 1):
            handle.write(chunk)
            handle.flush()
            time.sleep(0.3)  # a sleep: the writer's pause between chunks (under settle_seconds) is the test
            assert rejected_ids(project) == [], "a file still being written was rejected"
            if number < len(chunks):  # once the last chunk is in, the file is a whole job and may run at once
                assert not sentinel.exists(), "ran before it was complete"
    wait_done(project, "slow")
    doc = project.doc("done", "slow")
    assert doc["note"] == "written slowly" and doc["result"] == "once"
    stop_cleanly(project, daemon)
    assert sentinel.read_text(encoding="utf-8") == "once\n"
    assert project.events("slow") == ["started", "success"]
    assert rejected_ids(project) == []


def test_an_invalid_file_is_rejected_only_after_it_has_been_unchanged_for_settle_seconds(project: Project) -> None:
    project.configure(settle_seconds=2)
    daemon = project.start()
    content = b'{"class": "Echo", "params": ['
    path = project.drop("medium", "unsettled.json", content)
    changed_at = path.stat().st_mtime
    while time.time() < changed_at + 1.5:
        assert path.exists(), "moved out of medium/ before settle_seconds"
        assert rejected_ids(project) == []
        time.sleep(0.05)
    wait_rejected(project, "unsettled")
    assert_rejected(project, "unsettled", content, ["bad JSON"])
    (line,) = [line for line in project.log_lines() if " job=unsettled " in line]
    rejected_at = datetime.fromisoformat(line.split()[0]).timestamp()
    assert rejected_at >= changed_at + 2 - 0.05, f"rejected {rejected_at - changed_at:.2f}s after the last change"
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)
