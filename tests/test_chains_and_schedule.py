"""Delayed jobs (SPEC §3, §6) and chains (SPEC §5), with real daemons, real files and real time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, copies, settled_events, wait_for

from spoold import SubmitError
from spoold.spool.node import this_host

LATE = timedelta(seconds=1.5)  # how long after run_at a due job may start on a loaded test machine


def tree(root: Path) -> dict[str, bytes]:
    """Every file under the spool with its bytes: "nothing written" means this does not change."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def promoted_copy(project: Project, job_id: str) -> str | None:
    """The one copy of a job once it has left scheduled/ and our running/ folder for a ready folder."""
    found = copies(project, job_id)
    return found[0] if len(found) == 1 and found[0].split("/")[0] in ("high", "medium", "low") else None


def at(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


def drained(project: Project, *args: str) -> None:
    result = project.drain(*args)
    assert result.returncode == 0, result.stdout + result.stderr


# -- §3/§6 delayed jobs ------------------------------------------------------------------------------


def submit_delayed(project: Project, front_door: str, delay: float) -> str:
    if front_door == "api":
        return project.submit("Echo", "handle", ["late"], delay=delay)
    result = project.run_job("Echo", "handle", "late", "--delay", str(delay))
    assert result.returncode == 0, result.stderr
    job_id, path = result.stdout.splitlines()
    assert Path(path) == project.spool / "scheduled" / f"{job_id}.json"
    return job_id


@pytest.mark.parametrize("front_door", ["api", "run_job.py"])
def test_a_delayed_job_waits_in_scheduled_then_runs_no_earlier_than_run_at(project: Project, front_door: str) -> None:
    daemon = project.start()
    before = datetime.now(UTC)
    job_id = submit_delayed(project, front_door, 1.5)
    waiting = project.doc("scheduled", job_id)
    assert waiting["status"] == "scheduled" and waiting["attempts"] == 0
    run_at = at(waiting["run_at"])
    assert run_at.utcoffset() is not None
    assert run_at >= before + timedelta(seconds=1.5)
    wait_for(lambda: project.has("done", job_id), 10, "delayed job in done/")
    doc = project.doc("done", job_id)
    started = at(doc["started_at"])
    assert run_at <= started <= run_at + LATE, (run_at, started)
    assert doc["result"] == ["late"] and doc["status"] == "done" and doc["attempts"] == 1
    assert settled_events(project, job_id, 2) == ["started", "success"]
    assert copies(project, job_id) == [f"done/{job_id}.json"]
    code, out = project.stop(daemon)
    assert code == 0, out


def test_a_file_dropped_in_scheduled_with_a_past_run_at_runs_at_once(project: Project) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    daemon = project.start()
    dropped = time.time()
    project.drop("scheduled", "overdue.json", {"class": "Echo", "params": ["due"], "run_at": past})
    wait_for(lambda: project.has("done", "overdue"), 5, "overdue job in done/")
    doc = project.doc("done", "overdue")
    assert doc["result"] == ["due"] and doc["attempts"] == 1
    assert at(doc["started_at"]).timestamp() - dropped < LATE.total_seconds()
    assert settled_events(project, "overdue", 2) == ["started", "success"]
    assert copies(project, "overdue") == ["done/overdue.json"]
    project.stop(daemon)


def test_a_file_dropped_in_high_with_delay_seconds_waits_in_scheduled_then_runs_from_high(
        project: Project, tmp_path: Path) -> None:
    project.configure(workers=1)
    marker = tmp_path / "sleep.pid"
    daemon = project.start()
    dropped = datetime.now(UTC)
    project.drop("high", "later.json", {"class": "Echo", "params": ["later"], "delay_seconds": 1.5})
    wait_for(lambda: project.has("scheduled", "later"), 5, "dropped job moved to scheduled/")
    waiting = project.doc("scheduled", "later")
    assert waiting["status"] == "scheduled"
    run_at = at(waiting["run_at"])
    assert dropped + timedelta(seconds=1.5) <= run_at <= dropped + timedelta(seconds=1.5) + LATE
    busy = project.submit("Sleep", "handle", ["2", str(marker)])  # the only worker is busy when it falls due
    wait_for(lambda: marker.exists(), 10, "the Sleep job running")
    assert datetime.now(UTC) < run_at
    promoted = wait_for(lambda: promoted_copy(project, "later"), 5, "promotion out of scheduled/")
    assert promoted == "high/later.json"  # the folder it was dropped in wins
    wait_for(lambda: project.has("done", "later"), 10, "delayed job in done/")
    doc = project.doc("done", "later")
    assert doc["result"] == ["later"] and doc["attempts"] == 1
    assert at(doc["started_at"]) >= run_at
    assert project.has("done", busy)
    assert settled_events(project, "later", 2) == ["started", "success"]
    project.stop(daemon)


def test_a_restart_while_a_job_waits_in_scheduled_neither_loses_it_nor_runs_it_early(project: Project) -> None:
    first = project.start()
    job_id = project.submit("Echo", "handle", ["patient"], delay=3)
    run_at = at(project.doc("scheduled", job_id)["run_at"])
    time.sleep(1)  # a sleep: the first daemon holds the waiting job a while (nothing on disk shows it), then stops
    code, out = project.stop(first)
    assert code == 0, out
    assert datetime.now(UTC) < run_at
    assert copies(project, job_id) == [f"scheduled/{job_id}.json"]
    assert project.events(job_id) == []
    second = project.start()
    wait_for(lambda: project.has("done", job_id), 10, "job in done/ after the restart")
    doc = project.doc("done", job_id)
    started = at(doc["started_at"])
    assert run_at <= started <= run_at + LATE, (run_at, started)
    assert doc["attempts"] == 1 and doc["result"] == ["patient"]
    assert settled_events(project, job_id, 2) == ["started", "success"]
    assert copies(project, job_id) == [f"done/{job_id}.json"]
    code, out = project.stop(second)
    assert code == 0, out


def test_drain_runs_what_is_ready_and_leaves_jobs_not_yet_due_in_scheduled(project: Project) -> None:
    later = project.submit("Echo", "handle", ["later"], delay=60)
    now = project.submit("Echo", "handle", ["now"])
    waiting = (project.spool / "scheduled" / f"{later}.json").read_bytes()
    began = time.monotonic()
    drained(project)
    assert time.monotonic() - began < 15
    assert project.doc("done", now)["result"] == ["now"]
    assert copies(project, later) == [f"scheduled/{later}.json"]
    assert (project.spool / "scheduled" / f"{later}.json").read_bytes() == waiting
    assert project.events(later) == []
    assert project.daemon_folders() == []


def test_a_negative_delay_is_refused_by_every_submitter_and_nothing_is_written(project: Project) -> None:
    project.submit("Echo")  # the spool exists
    before = tree(project.spool)
    with pytest.raises(SubmitError, match=r"delay: expected a number of seconds >= 0, got -1\.5"):
        project.submit("Echo", "handle", ["x"], delay=-1.5)
    result = project.run_job("Echo", "handle", "x", "--delay=-1.5")
    assert result.returncode == 2
    assert "delay: expected a number of seconds >= 0, got -1.5" in result.stderr
    assert result.stdout == ""
    not_a_number = project.run_job("Echo", "handle", "x", "--delay", "soon")
    assert not_a_number.returncode == 2
    assert "--delay" in not_a_number.stderr
    assert tree(project.spool) == before


BAD_TIMES: list[tuple[str, dict[str, Any], str]] = [
    ("run_at without offset", {"run_at": "2030-01-01T00:00:00"},
     "field 'run_at': time has no UTC offset: '2030-01-01T00:00:00'"),
    ("run_at not a time", {"run_at": "tomorrow"}, "field 'run_at': not an ISO-8601 time: 'tomorrow'"),
    ("run_at a number", {"run_at": 1893456000}, "field 'run_at': expected an ISO-8601 time with offset, got number"),
    ("negative delay_seconds", {"delay_seconds": -1}, "field 'delay_seconds': expected a number >= 0, got -1"),
]


@pytest.mark.parametrize("folder", ["scheduled", "high"])
@pytest.mark.parametrize(("fields", "reason"), [b[1:] for b in BAD_TIMES], ids=[b[0] for b in BAD_TIMES])
def test_a_dropped_file_with_a_bad_run_at_or_delay_is_rejected_naming_the_field(
        project: Project, folder: str, fields: dict[str, Any], reason: str) -> None:
    content = json.dumps({"class": "Echo", "params": ["never"], **fields}).encode()
    project.drop(folder, "badtime.json", content)
    drained(project)
    assert copies(project, "badtime") == ["rejected/badtime.json"]
    assert (project.spool / "rejected" / "badtime.json").read_bytes() == content
    assert (project.spool / "rejected" / "badtime.reason").read_text(encoding="utf-8") == reason + "\n"
    assert project.events("badtime") == ["rejected"]


# -- §5 chains -----------------------------------------------------------------------------------------


def test_a_chain_runs_each_step_as_its_own_linked_job_with_the_previous_result(project: Project) -> None:
    chain = [{"class": "Echo", "method": "handle", "params": ["x"]},
             {"class": "Echo", "params": [], "pass_result": False}]
    root = project.submit("Echo", "handle", ["first"], chain=chain)
    assert project.doc("medium", root)["chain"] == chain
    drained(project)
    step1, step2 = f"{root}-step1", f"{root}-step2"
    assert project.names("done") == sorted(f"{i}.json" for i in (root, step1, step2))
    first, second, third = (project.doc("done", i) for i in (root, step1, step2))
    assert first["result"] == ["first"]
    assert second["result"] == [["first"], "x"]
    assert second["previous_result"] == ["first"]
    assert third["result"] == []
    assert "previous_result" not in third
    assert "parent" not in first and first["next"] == step1
    assert second["parent"] == root and second["next"] == step2
    assert third["parent"] == step1 and "next" not in third
    assert [d.get("chain") for d in (first, second, third)] == [None, None, None]  # nothing left to hand on
    for job_id in (root, step1, step2):
        assert project.events(job_id) == ["started", "success"]
        assert copies(project, job_id) == [f"done/{job_id}.json"]


def test_a_chain_step_that_fails_for_good_stops_the_chain_and_keeps_the_rest(project: Project) -> None:
    rest = [{"class": "Echo", "params": ["never"], "pass_result": False}]
    chain = [{"class": "Raise", "params": ["RuntimeError", "step broke"], "pass_result": False}, *rest]
    root = project.submit("Echo", "handle", ["first"], chain=chain)
    drained(project)
    step1 = f"{root}-step1"
    assert project.doc("done", root)["next"] == step1
    failed = project.doc("failed", step1)
    assert failed["status"] == "failed" and failed["parent"] == root
    assert failed["error"]["type"] == "RuntimeError" and failed["error"]["message"] == "step broke"
    assert failed["chain"] == rest
    assert "next" not in failed
    assert project.events(step1) == ["started", "failure"]
    assert list(project.spool.rglob(f"{root}-step2*")) == []
    assert project.names("done") == [f"{root}.json"]
    assert project.names("failed") == [f"{step1}.json"]


def test_moving_a_failed_step_back_to_a_ready_folder_resumes_the_chain(project: Project, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    chain = [{"class": "FailTimes", "params": [str(counter), "1"], "pass_result": False},
             {"class": "Echo", "params": ["after"]}]
    root = project.submit("Echo", "handle", ["first"], chain=chain)
    drained(project)
    step1, step2 = f"{root}-step1", f"{root}-step2"
    assert project.doc("failed", step1)["chain"] == chain[1:]
    assert copies(project, step2) == []
    shutil.move(project.spool / "failed" / f"{step1}.json", project.spool / "medium" / f"{step1}.json")
    drained(project)
    resumed = project.doc("done", step1)
    assert resumed["result"] == 2 and resumed["attempts"] == 2
    assert [h["outcome"] for h in resumed["history"]] == ["failure", "success"]
    assert resumed["parent"] == root and resumed["next"] == step2
    last = project.doc("done", step2)
    assert last["result"] == [2, "after"] and last["parent"] == step1
    assert project.events(step1) == ["started", "failure", "started", "success"]
    assert project.events(step2) == ["started", "success"]
    assert project.names("done") == sorted(f"{i}.json" for i in (root, step1, step2))
    assert project.names("failed") == []


@pytest.mark.parametrize(("step", "message"), [
    ({"class": "NotListed", "params": ["x"]}, "class 'NotListed' is not allowed (not in [allowed_jobs])"),
    ({"class": "Echo", "method": "whisper"}, "method Echo.whisper is not allowed (allowed: handle, shout)"),
    ({"class": "Echo", "method": "_secret"}, "private method '_secret' is never allowed"),
])
def test_a_chain_step_that_is_not_allowed_is_refused_at_submit_and_nothing_is_written(
        project: Project, step: dict[str, Any], message: str) -> None:
    project.submit("Echo")  # the spool exists
    before = tree(project.spool)
    with pytest.raises(SubmitError) as raised:
        project.submit("Echo", "handle", ["first"], chain=[{"class": "Echo"}, step])
    assert message in str(raised.value)
    assert tree(project.spool) == before


def test_a_dropped_file_whose_chain_names_a_disallowed_class_is_rejected_and_never_runs(
        project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    content = json.dumps({"class": "WriteSentinel", "params": [str(marker)],
                          "chain": [{"class": "NotListed", "params": [str(marker)], "pass_result": False}]}).encode()
    project.drop("medium", "sneaky.json", content)
    drained(project)
    assert copies(project, "sneaky") == ["rejected/sneaky.json"]
    assert (project.spool / "rejected" / "sneaky.json").read_bytes() == content
    reason = (project.spool / "rejected" / "sneaky.reason").read_text(encoding="utf-8")
    assert reason == "class 'NotListed' is not allowed (not in [allowed_jobs])\n"
    assert not marker.exists()
    assert project.events("sneaky") == ["rejected"]
    assert list(project.spool.rglob("sneaky-step*")) == []


def test_a_parent_rerun_after_its_daemon_died_does_not_hand_its_step_on_twice(
        project: Project, tmp_path: Path) -> None:
    """The daemon died after handing the step on but before moving the parent to done/ (SPEC §2, §5)."""
    parent_runs, step_runs = tmp_path / "parent-runs", tmp_path / "step-runs"
    step_runs.write_text("step\n", encoding="utf-8")  # the step ran once already, before the crash
    parent = "PARENT"
    step = f"{parent}-step1"  # the id chain.py derives for the first step (README "Chains")
    dead = project.spool / "running" / f"{this_host()}-1-abc"
    dead.mkdir(parents=True)
    chain = [{"class": "WriteSentinel", "params": [str(step_runs), "step"], "pass_result": False}]
    (dead / f"{parent}.json").write_text(json.dumps(
        {"id": parent, "class": "WriteSentinel", "method": "handle", "params": [str(parent_runs), "parent"],
         "priority": "medium", "retry_attempts": 1, "status": "ready", "attempts": 0, "chain": chain}),
        encoding="utf-8")
    project.drop("done", f"{step}.json", {
        "id": step, "class": "WriteSentinel", "method": "handle", "params": [str(step_runs), "step"],
        "priority": "medium", "status": "done", "attempts": 1, "result": "step", "parent": parent,
        "chain_root": parent, "chain_step": 1})
    step_bytes = (project.spool / "done" / f"{step}.json").read_bytes()
    drained(project)
    assert project.events(parent) == ["recovered", "started", "success"]
    recovered = [line for line in project.log_lines() if f" job={parent} " in line and "status=recovered" in line]
    assert len(recovered) == 1 and " error=Orphaned" in recovered[0]
    assert copies(project, parent) == [f"done/{parent}.json"]
    doc = project.doc("done", parent)
    assert doc["next"] == step and doc["attempts"] == 2
    assert [(h["outcome"], h["error_type"]) for h in doc["history"]] == [("failure", "Orphaned"), ("success", None)]
    assert parent_runs.read_text(encoding="utf-8") == "parent\n"
    assert copies(project, step) == [f"done/{step}.json"]
    assert (project.spool / "done" / f"{step}.json").read_bytes() == step_bytes
    assert step_runs.read_text(encoding="utf-8") == "step\n"
    assert project.events(step) == []
    assert not dead.exists()


# A process claiming and committing jobs one after another the way a daemon does, each move adding its
# new name before it drops the old one: claimed (rename), seized for its commit (rename), linked into
# done/ and unlinked. It publishes the index of the job it is moving, for the looker to look that one up.
COMMITTER = r"""
import mmap, os, struct, sys
root, count = sys.argv[1], int(sys.argv[2])
node = os.path.join(root, "running", "node-1")
for i in range(count):
    with open(os.path.join(root, "medium", f"job-{i}.json"), "w") as f:
        f.write("{}")
with open(os.path.join(root, "frontier"), "wb") as f:
    f.write(bytes(8))
with open(os.path.join(root, "frontier"), "r+b") as f:
    frontier = mmap.mmap(f.fileno(), 8)
print("moving", flush=True)
for i in range(count):
    frontier[:8] = struct.pack("q", i)
    name = f"job-{i}.json"
    claimed, seized = os.path.join(node, name), os.path.join(node, "." + name + ".moving")
    os.rename(os.path.join(root, "medium", name), claimed)
    os.rename(claimed, seized)
    os.link(seized, os.path.join(root, "done", name))
    os.unlink(seized)
print("done", flush=True)
"""


def test_the_chain_step_lookup_finds_a_step_while_a_daemon_claims_and_commits_it(tmp_path: Path) -> None:
    """The parent run again after a crash looks for its step while another daemon moves it (F17): it is
    in ready, claimed, seized for its commit (`.ID.json.moving`) or in done/, and never looked over."""
    import mmap
    import struct

    from spoold.paths import SpoolPaths

    spool, count = tmp_path / "spool", 20_000
    for folder in ("medium", "done", "running/node-1"):
        (spool / folder).mkdir(parents=True)
    paths, seen = SpoolPaths(spool), dict[str, int]()
    with subprocess.Popen([sys.executable, "-c", COMMITTER, str(spool), str(count)], stdout=subprocess.PIPE,
                          text=True) as mover:
        try:
            assert mover.stdout is not None and mover.stdout.readline() == "moving\n"
            with (spool / "frontier").open("rb") as f, mmap.mmap(f.fileno(), 8, access=mmap.ACCESS_READ) as frontier:
                while mover.poll() is None:
                    job_id = f"job-{struct.unpack('q', frontier[:8])[0]}"
                    found = paths.find_job(job_id)
                    assert found is not None, f"{job_id} looked over while it moved ({seen})"
                    where = "seized" if found.name.startswith(".") else found.parent.name
                    seen[where] = seen.get(where, 0) + 1
            assert mover.wait(10) == 0 and mover.stdout.readline() == "done\n"
        finally:
            mover.kill()
    assert sum(seen.values()) > 1000 and {"medium", "node-1", "seized", "done"} <= set(seen), seen
