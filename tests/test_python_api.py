"""The Python API of SPEC §7: get_job, wait_for_job, run_background_jobs, JobFailed, on real spools and daemons."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, wait_for

import spoold
from spoold import JobFailed, JobInfo, SubmitError, get_job, run_background_job, run_background_jobs, wait_for_job
from spoold.errors import UnknownJob


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a folder): what "nothing written" compares."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in root.rglob("*")}


def info(project: Project, job_id: str) -> JobInfo:
    found = get_job(job_id, config=project.config)
    assert found is not None, f"job {job_id} not found"
    return found


# -- get_job -----------------------------------------------------------------------------------------

def test_get_job_reads_a_waiting_job_in_its_ready_folder_or_in_scheduled(project: Project) -> None:
    ready = project.submit("Echo", "handle", ["a"], priority="low")
    delayed = project.submit("Echo", "handle", ["b"], delay=60)
    low, scheduled = info(project, ready), info(project, delayed)
    assert (low.id, low.state, low.path) == (ready, "low", project.spool / "low" / f"{ready}.json")
    assert (low.status, low.attempts, low.result, low.error) == ("ready", 0, None, None)
    assert low.doc["params"] == ["a"] and low.doc["class"] == "Echo"
    assert (scheduled.state, scheduled.status) == ("scheduled", "scheduled")
    assert scheduled.doc["run_at"] == project.doc("scheduled", delayed)["run_at"]


def test_get_job_follows_a_job_through_running_done_failed_and_rejected(project: Project, tmp_path: Path) -> None:
    daemon = project.start()
    marker = tmp_path / "sleeping"
    sleeping = project.submit("Sleep", "handle", [3, str(marker)])
    done = project.submit("Echo", "handle", ["x", 1])
    failed = project.submit("Raise", "handle", ["ValueError", "nope"])
    project.drop("medium", "broken.json", "{not json")
    wait_for(marker.exists, 10, "the Sleep job started")
    running = info(project, sleeping)
    assert running.state == "running"
    assert running.path.parent.parent == project.spool / "running"
    wait_for(lambda: project.has("done", done) and project.has("failed", failed) and project.has("rejected", "broken"),
             10, "done, failed and rejected")
    finished = info(project, done)
    assert (finished.state, finished.status, finished.attempts, finished.result) == ("done", "done", 1, ["x", 1])
    assert finished.doc["history"][0]["outcome"] == "success"
    lost = info(project, failed)
    assert (lost.state, lost.status, lost.result) == ("failed", "failed", None)
    assert lost.error is not None and (lost.error["type"], lost.error["message"]) == ("ValueError", "nope")
    wait_for(lambda: (project.spool / "rejected" / "broken.reason").exists(), 5, "the reason beside it")
    rejected = info(project, "broken")
    assert (rejected.state, rejected.doc, rejected.status) == ("rejected", {}, None)
    assert rejected.reason is not None and rejected.reason.startswith("bad JSON: ")
    project.stop(daemon)


def test_get_job_returns_none_for_an_unknown_or_malformed_id(project: Project) -> None:
    project.submit("Echo")
    assert get_job("20990101-000000-000000-00000000", config=project.config) is None
    assert get_job("../medium/x", config=project.config) is None
    assert get_job("", config=project.config) is None


# A process moving one job file with rename (the hardest case: it is never in two folders at once) around
# the life cycle and back, as fast as it can: retries, promotions and operator moves go backwards too.
MOVER = r"""
import os, sys
root, name, stop = sys.argv[1:4]
cycle = ["scheduled", "high", "running/node-1", "medium", "done", "low", "failed", "running/node-1", "rejected"]
moves, here = 0, 0
print("moving", flush=True)
while True:
    for _ in range(200):
        there = (here + 1) % len(cycle)
        os.rename(os.path.join(root, cycle[here], name), os.path.join(root, cycle[there], name))
        here, moves = there, moves + 1
    if os.path.exists(stop):
        break
print(moves, flush=True)
"""


def test_get_job_finds_a_job_that_moves_back_and_forth_every_time(project: Project) -> None:
    job_id = project.submit("Echo", "handle", ["moving"], delay=60)  # in scheduled/, the cycle's start
    (project.spool / "running" / "node-1").mkdir(parents=True)
    for folder in ("high", "medium", "low", "done", "failed", "rejected"):
        (project.spool / folder).mkdir(exist_ok=True)
    stop = project.root / "stop"
    mover = subprocess.Popen([sys.executable, "-c", MOVER, str(project.spool), f"{job_id}.json", str(stop)],
                             stdout=subprocess.PIPE, text=True)
    project.procs.append(mover)
    assert mover.stdout is not None and mover.stdout.readline() == "moving\n"
    seen: dict[str, int] = {}
    for _ in range(5000):
        found = get_job(job_id, config=project.config)
        assert found is not None, f"job {job_id} reported missing while it moved ({seen})"
        assert found.doc["params"] == ["moving"]
        seen[found.state] = seen.get(found.state, 0) + 1
    stop.touch()
    moves = int(mover.stdout.readline())
    assert mover.wait(10) == 0
    assert set(seen) == {"scheduled", "high", "running", "medium", "done", "low", "failed", "rejected"}, seen
    assert moves > 5000, f"the job moved only {moves} times: not much of a race"


# A daemon's commit, over and over: the claim seized (renamed to .ID.json.moving, where it waits as long as
# the result's fsyncs take), linked into done/, its copy unlinked a moment later (the reaper); then back to
# medium/ and claimed again.
COMMITTER = r"""
import os, sys, time
root, name, stop = sys.argv[1:4]
node = os.path.join(root, "running", "node-1")
claimed, seized, done, ready = (os.path.join(node, name), os.path.join(node, "." + name + ".moving"),
                                os.path.join(root, "done", name), os.path.join(root, "medium", name))
commits = 0
print("moving", flush=True)
while not os.path.exists(stop):
    os.rename(ready, claimed)
    os.rename(claimed, seized)
    time.sleep(0.001)
    os.link(seized, done)
    time.sleep(0.001)
    os.unlink(seized)
    os.rename(done, ready)
    commits += 1
    time.sleep(0.001)  # a moment in medium/ too: with none, a look there was luck (once in 3,000 missed)
print(commits, flush=True)
"""


def test_get_job_finds_a_job_while_it_is_committed_under_its_seized_name(project: Project) -> None:
    job_id = project.submit("Echo", "handle", ["moving"])  # in medium/
    (project.spool / "running" / "node-1").mkdir(parents=True)
    (project.spool / "done").mkdir(exist_ok=True)
    stop = project.root / "stop"
    mover = subprocess.Popen([sys.executable, "-c", COMMITTER, str(project.spool), f"{job_id}.json", str(stop)],
                             stdout=subprocess.PIPE, text=True)
    project.procs.append(mover)
    assert mover.stdout is not None and mover.stdout.readline() == "moving\n"
    seen: dict[str, int] = {}
    for _ in range(3000):
        found = get_job(job_id, config=project.config)
        assert found is not None, f"job {job_id} reported missing while it was committed ({seen})"
        state = "seized" if found.path.name.startswith(".") else found.state
        seen[state] = seen.get(state, 0) + 1
    stop.touch()
    commits = int(mover.stdout.readline())
    assert mover.wait(10) == 0
    assert {"seized", "done", "medium"} <= set(seen), seen  # found under its seized name while only there
    assert commits > 20, f"only {commits} commits: not much of a race"


# -- wait_for_job ------------------------------------------------------------------------------------

def test_wait_for_job_returns_the_result_once_a_running_daemon_has_run_it(project: Project) -> None:
    daemon = project.start()
    job_id = project.submit("Echo", "handle", ["a", 2])
    assert wait_for_job(job_id, timeout=10, config=project.config) == ["a", 2]
    assert project.has("done", job_id)
    project.stop(daemon)


def test_wait_for_job_raises_job_failed_with_the_failed_job(project: Project) -> None:
    daemon = project.start()
    job_id = project.submit("Raise", "handle", ["ValueError", "nope"])
    with pytest.raises(JobFailed) as raised:
        wait_for_job(job_id, timeout=10, config=project.config)
    assert str(raised.value) == f"job {job_id} failed: ValueError: nope"
    assert (raised.value.job.id, raised.value.job.state) == (job_id, "failed")
    assert raised.value.job.error is not None and raised.value.job.error["type"] == "ValueError"
    assert isinstance(raised.value, spoold.errors.SpooldError)
    project.stop(daemon)


def test_wait_for_job_raises_timeout_error_while_the_job_still_runs(project: Project, tmp_path: Path) -> None:
    daemon = project.start()
    marker = tmp_path / "sleeping"
    job_id = project.submit("Sleep", "handle", [5, str(marker)])
    wait_for(marker.exists, 10, "the Sleep job started")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        wait_for_job(job_id, timeout=0.5, config=project.config)
    assert 0.5 <= time.monotonic() - started < 2
    assert str(raised.value) == f"job {job_id} is still running after 0.5 s"
    project.stop(daemon)


def test_wait_for_job_ends_with_job_failed_for_a_rejected_file(project: Project) -> None:
    daemon = project.start()
    project.drop("high", "broken.json", "[1, 2]")
    with pytest.raises(JobFailed) as raised:
        wait_for_job("broken", timeout=10, config=project.config)
    assert raised.value.job.state == "rejected"
    assert str(raised.value).startswith("job broken was rejected: ")
    project.stop(daemon)


def test_wait_for_job_wakes_on_the_move_into_done_not_at_the_next_rescan(project: Project) -> None:
    """No daemon: another process moves the job into done/ as a daemon's commit does (link, then unlink)."""
    project.configure(rescan_seconds=60)
    job_id = project.submit("Echo", "handle", ["x"])
    source, target = project.spool / "medium" / f"{job_id}.json", project.spool / "done" / f"{job_id}.json"
    (project.spool / "done").mkdir()
    staged = project.spool / "tmp" / f".{job_id}.part"
    staged.write_text(json.dumps({**project.doc("medium", job_id), "status": "done", "result": 42}))
    commit = (f"import os, time; time.sleep(0.5); os.link({str(staged)!r}, {str(target)!r}); "
              f"os.unlink({str(source)!r}); print(time.monotonic(), flush=True)")
    mover = subprocess.Popen([sys.executable, "-c", commit], stdout=subprocess.PIPE, text=True)
    project.procs.append(mover)
    assert wait_for_job(job_id, timeout=20, config=project.config) == 42
    returned = time.monotonic()
    assert mover.stdout is not None
    moved = float(mover.stdout.readline())
    assert returned - moved < 0.5, f"returned {returned - moved:.3f} s after the move"


def test_wait_for_job_returns_at_once_for_a_job_done_before_it_was_called(project: Project) -> None:
    project.configure(rescan_seconds=60)
    job_id = project.submit("Echo", "handle", ["x"])
    assert project.drain().returncode == 0
    started = time.monotonic()
    assert wait_for_job(job_id, config=project.config) == ["x"]
    assert time.monotonic() - started < 1


def test_wait_for_job_without_file_events_looks_every_rescan_seconds(project: Project) -> None:
    project.configure(rescan_seconds=0.2)
    project.set_keys(file_events="false")
    job_id = project.submit("Echo", "handle", ["y"])
    drain = subprocess.Popen([sys.executable, "-m", "spoold", "start", "--drain", "--config", str(project.config)],
                             cwd=project.root, env=project.env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, text=True)
    project.procs.append(drain)
    assert wait_for_job(job_id, timeout=20, config=project.config) == ["y"]
    assert drain.wait(20) == 0


def test_wait_for_job_raises_unknown_job_for_an_id_no_folder_holds(project: Project) -> None:
    project.submit("Echo")
    with pytest.raises(UnknownJob) as raised:
        wait_for_job("nothing-here", timeout=1, config=project.config)
    assert isinstance(raised.value, LookupError)
    assert str(raised.value) == f"no job nothing-here in the spool {project.spool}"


# -- run_background_jobs -----------------------------------------------------------------------------

def test_run_background_jobs_writes_every_job_and_a_daemon_runs_them(project: Project) -> None:
    ids = run_background_jobs([("Echo", "handle", ["a"]),
                               {"class": "Echo", "params": ["b"], "priority": "low"},
                               {"class": "Echo", "method": "shout", "params": ["c"], "delay": 60},
                               ("Echo", "handle", {"k": 1}),
                               {"class": "Echo", "params": ["d"], "chain": [{"class": "Echo", "params": ["e"]}]}],
                              config=project.config)
    assert len(ids) == len(set(ids)) == 5
    assert ids == sorted(ids), "ids sort in the order of the batch"
    assert [info(project, job_id).state for job_id in ids] == ["medium", "low", "scheduled", "medium", "medium"]
    assert project.doc("scheduled", ids[2])["method"] == "shout"
    assert project.names("tmp") == []
    assert project.drain().returncode == 0
    assert [info(project, job_id).result for job_id in (ids[0], ids[1], ids[3], ids[4])] == [
        ["a"], ["b"], {"args": [], "kwargs": {"k": 1}}, ["d"]]
    assert wait_for_job(f"{ids[4]}-step1", timeout=10, config=project.config) == [["d"], "e"]


BAD_BATCHES: list[tuple[str, list[Any], str]] = [
    ("disallowed", [("Echo", "handle", ["a"]), ("Echo", "handle", ["b"]), ("NotListed", "handle", [])],
     "job 2: class 'NotListed' is not allowed"),
    ("bad-priority", [("Echo", "handle", []), {"class": "Echo", "priority": "urgent"}],
     "job 1: priority: expected one of high, medium, low, got 'urgent'"),
    ("not-json", [("Echo", "handle", ["a"]), ("Echo", "handle", [{1, 2}])],
     "job 1: params[0]: set is not JSON (expected None, bool, int, float, str, list, tuple or dict)"),
    ("negative-delay", [{"class": "Echo", "delay": -1}], "job 0: delay: expected a number of seconds >= 0, got -1"),
    ("unknown-key", [("Echo", "handle", []), {"class": "Echo", "retries": 3}],
     "job 1: unknown key 'retries' (expected class, method, params, priority, delay, chain, unique_key)"),
    ("no-class", [{"params": []}], "job 0: missing key 'class'"),
    ("short-tuple", [("Echo",)], "job 0: expected a tuple (class, method, params), got 1 items"),
    ("not-a-job", [("Echo", "handle", []), "Echo"],
     "job 1: expected a tuple (class, method, params) or a dict, got str"),
    ("disallowed-step", [{"class": "Echo", "chain": [{"class": "NotListed"}]}],
     "job 0: class 'NotListed' is not allowed"),
    ("too-large", [("Echo", "handle", []), ("Echo", "handle", ["x" * 70000])], "job 1: job is too large: "),
]


@pytest.mark.parametrize(("jobs", "message"), [b[1:] for b in BAD_BATCHES], ids=[b[0] for b in BAD_BATCHES])
def test_a_batch_with_one_refused_job_writes_none_and_names_its_index(
        project: Project, jobs: list[Any], message: str) -> None:
    project.submit("Echo")  # the spool exists
    before = tree(project.spool)
    with pytest.raises(SubmitError) as raised:
        run_background_jobs(jobs, config=project.config)
    assert str(raised.value).startswith(message), str(raised.value)
    assert tree(project.spool) == before


def test_an_empty_batch_writes_nothing_and_returns_no_ids(project: Project) -> None:
    assert run_background_jobs([], config=project.config) == []
    assert tree(project.spool) == {}


def test_a_batch_in_fast_durability_is_written_the_same(project: Project) -> None:
    project.set_keys(durability='"fast"')
    ids = run_background_jobs([("Echo", "handle", [str(i)]) for i in range(50)], config=project.config)
    assert project.names("medium") == sorted(f"{job_id}.json" for job_id in ids)
    assert project.names("tmp") == []


# -- params that are not JSON ------------------------------------------------------------------------

NOT_JSON: list[tuple[str, Any, str]] = [
    ("set", [{1, 2}], "params[0]: set is not JSON (expected None, bool, int, float, str, list, tuple or dict)"),
    ("object", {"when": object()}, "params.when: object is not JSON (expected None, bool, int, float, str, list, "
                                   "tuple or dict)"),
    ("nan", [1, float("nan")], "params[1]: nan is not JSON (numbers must be finite)"),
    ("infinity", {"limit": float("inf")}, "params.limit: inf is not JSON (numbers must be finite)"),
    ("bytes", [b"raw"], "params[0]: bytes is not JSON (expected None, bool, int, float, str, list, tuple or dict)"),
    ("int-key", [{1: "one"}], "params[0]: key 1 is not a string (JSON object keys are strings)"),
    ("odd-key", {"a b": [None, {2}]}, 'params["a b"][1]: set is not JSON'),
    ("surrogate", ["\ud800"], "params[0]: a string holds a lone surrogate ('\\ud800'), which UTF-8 cannot encode"),
]


@pytest.mark.parametrize(("params", "message"), [n[1:] for n in NOT_JSON], ids=[n[0] for n in NOT_JSON])
def test_params_that_are_not_json_raise_submit_error_naming_the_value(
        project: Project, params: Any, message: str) -> None:
    project.submit("Echo")
    before = tree(project.spool)
    with pytest.raises(SubmitError) as single:
        run_background_job("Echo", "handle", params, config=project.config)
    assert str(single.value).startswith(message), str(single.value)
    with pytest.raises(SubmitError) as batch:
        run_background_jobs([("Echo", "handle", ["fine"]), ("Echo", "handle", params)], config=project.config)
    assert str(batch.value).startswith(f"job 1: {message}"), str(batch.value)
    assert tree(project.spool) == before


def test_a_chain_step_whose_params_are_not_json_is_refused_naming_the_step(project: Project) -> None:
    with pytest.raises(SubmitError) as raised:
        run_background_job("Echo", chain=[{"class": "Echo", "params": [{3}]}], config=project.config)
    assert str(raised.value).startswith("chain[0].params[0]: set is not JSON")


def test_a_delay_that_is_not_a_finite_number_is_refused(project: Project) -> None:
    with pytest.raises(SubmitError) as raised:
        run_background_job("Echo", delay=float("nan"), config=project.config)
    assert str(raised.value) == "delay: expected a number of seconds >= 0, got nan"


def test_tuple_params_are_a_json_array(project: Project) -> None:
    job_id = run_background_job("Echo", "handle", ("a", ("b", 1)), config=project.config)
    assert project.doc("medium", job_id)["params"] == ["a", ["b", 1]]


# -- the package -------------------------------------------------------------------------------------

def test_the_api_is_importable_and_usable_without_watchdog(project: Project) -> None:
    code = ("import sys, spoold\n"
            f"config = {str(project.config)!r}\n"
            "job = spoold.run_background_job('Echo', 'handle', ['a'], config=config)\n"
            "ids = spoold.run_background_jobs([('Echo', 'handle', ['b'])], config=config)\n"
            "assert spoold.get_job(job, config=config).state == 'medium'\n"
            "assert spoold.get_job(ids[0], config=config).state == 'medium'\n"
            "spoold.JobInfo, spoold.JobFailed, spoold.wait_for_job\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('watchdog', 'jobs')\n"
            "             or m.startswith(('spoold.daemon', 'spoold.execution'))))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=project.root, env=project.env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_name_of_the_api_is_exported_by_spoold() -> None:
    assert set(spoold.__all__) >= {"get_job", "wait_for_job", "run_background_jobs", "run_background_job",
                                   "JobInfo", "JobFailed", "SubmitError"}
    for name in spoold.__all__:
        assert getattr(spoold, name) is not None
    with pytest.raises(AttributeError):
        spoold.no_such_name  # noqa: B018  (the attribute access is the test)


def test_the_package_ships_py_typed() -> None:
    assert (Path(spoold.__file__).parent / "py.typed").is_file()
    assert os.path.getsize(Path(spoold.__file__).parent / "py.typed") == 0


def test_job_failed_keeps_its_job_through_pickling(project: Project) -> None:
    """A web app may hand the error to another process (multiprocessing, a task queue's result)."""
    job_id = project.submit("Raise", "handle", ["ValueError", "nope"])
    assert project.drain().returncode == 0
    with pytest.raises(JobFailed) as raised:
        wait_for_job(job_id, config=project.config)
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (type(copy), str(copy), copy.job) == (JobFailed, str(raised.value), raised.value.job)
