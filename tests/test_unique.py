"""unique_key (SPEC §12, issue 13): at most one live job per key, whoever submits it and however many at once.

Real submitter processes and real daemons on one spool; what ran comes from the jobs' own records
(tests/jobs RecordRun), never from the daemon's logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import Project, wait_for

from spoold import SubmitError, run_background_jobs

INJECT = Path(__file__).parent / "faults" / "inject.py"

SUBMITTER = r"""
import sys, time
from spoold import run_background_job
config, records, out, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()  # every submitter starts at once
with open(out, "a", encoding="utf-8") as f:
    for _ in range(count):
        job_id = run_background_job("RecordRun", "handle", [records, "0.02"], unique_key="the-key", config=config)
        f.write(f"{job_id} {time.time():.6f}\n")
"""


def configure(project: Project, **overrides: object) -> Path:
    project.configure(extra='RecordRun = ["handle"]\n', settle_seconds=0, **overrides)
    return project.root / "records.txt"


def drop_whole(project: Project, name: str, doc: dict[str, object]) -> None:
    """A file dropped into medium/ the way SPEC §2 asks writers to: written aside, then renamed in."""
    aside = project.drop("tmp", name, doc)
    os.rename(aside, project.spool / "medium" / name)


def alive_now(project: Project) -> list[str]:
    """The jobs ready, scheduled or running while we look. running/ is listed first, so that a job moving
    from a ready folder into running/ meanwhile is seen once at most; done/ and failed/ last, so that a
    job seen running that finished meanwhile (its key free, and maybe already taken by the next one)
    does not count."""
    seen = project.names("running") + project.names("scheduled") + [
        name for folder in ("high", "medium", "low") for name in project.names(folder)]
    finished = set(project.names("done")) | set(project.names("failed"))
    return [name for name in seen if name not in finished]


@pytest.mark.timeout(180)
def test_eight_processes_submitting_one_key_never_have_two_jobs_alive_and_get_the_live_ones_id(
        project: Project) -> None:
    records = configure(project, workers=2)
    daemons = [project.start(), project.start()]
    outs = [project.root / f"submitted-{n}.txt" for n in range(8)]
    submitters = [subprocess.Popen([sys.executable, "-c", SUBMITTER, str(project.config), str(records), str(out),
                                    "100"], cwd=project.root, env=project.env(), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True) for out in outs]
    project.procs.extend(submitters)
    for proc in submitters:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    samples: list[list[str]] = []
    watching = True

    def watch() -> None:
        while watching:
            samples.append(alive_now(project))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for proc in submitters:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()
        for proc in submitters:
            assert proc.wait(120) == 0
        wait_for(lambda: alive_now(project) == [], 30, "the last job done")
    finally:
        watching = False
        watcher.join()
    for daemon in daemons:
        assert project.stop(daemon)[0] == 0
    returned = [line.split() for out in outs for line in out.read_text().splitlines()]
    assert len(returned) == 800
    done = {name.removesuffix(".json") for name in project.names("done")}
    assert {job_id for job_id, _ in returned} == done, "an id returned that is not a job, or a job never returned"
    assert all(len(sample) <= 1 for sample in samples), [s for s in samples if len(s) > 1][:3]
    assert len(samples) > 100 and len(done) >= 2, (len(samples), len(done))
    print(f"800 submissions of one key: {len(done)} jobs, {len(samples)} samples of the spool, none with two alive")
    runs = sorted((float(start), float(end)) for _, _, start, end in
                  (line.split() for line in records.read_text().splitlines()))
    assert len(runs) == len(done), "each job ran once"
    assert all(end <= next_start for (_, end), (next_start, _) in zip(runs, runs[1:], strict=False)), \
        "two jobs with one key ran at once"
    for job_id in done:  # each was returned only while it lived: never after it was done
        finished = project.doc("done", job_id)["finished_at"]
        last = max(float(at) for returned_id, at in returned if returned_id == job_id)
        assert last <= datetime.fromisoformat(finished).timestamp() + 0.5, job_id


def test_the_key_is_free_again_once_its_job_is_done_or_failed(project: Project) -> None:
    records = configure(project)
    first = project.submit("RecordRun", "handle", [str(records)], unique_key="k")
    assert project.submit("RecordRun", "handle", [str(records)], unique_key="k") == first
    assert project.drain().returncode == 0
    second = project.submit("Raise", "handle", [], unique_key="k")
    assert second != first
    assert project.drain().returncode == 0 and project.has("failed", second)
    third = project.submit("RecordRun", "handle", [str(records)], unique_key="k")
    assert third not in (first, second)


def test_the_cli_and_run_job_print_the_live_jobs_id_and_exit_0(project: Project) -> None:
    configure(project)
    first = project.cli("submit", "Echo", "handle", "a", "--unique-key", "k", "--config", str(project.config))
    again = project.cli("submit", "Echo", "handle", "b", "--unique-key", "k", "--config", str(project.config))
    third = project.run_job("Echo", "handle", "c", "--unique-key", "k")
    assert first.returncode == again.returncode == third.returncode == 0, (again.stderr, third.stderr)
    job_id = first.stdout.split()[0]
    assert again.stdout.split()[0] == third.stdout.split()[0] == job_id
    assert project.names("medium") == [f"{job_id}.json"] and project.doc("medium", job_id)["params"] == ["a"]
    now = project.cli("submit", "Echo", "handle", "--unique-key", "k", "--now", "--config", str(project.config))
    assert now.returncode != 0 and "--unique-key" in now.stderr


def test_a_dropped_file_whose_key_is_live_is_rejected_as_a_duplicate(project: Project) -> None:
    configure(project)
    live = project.submit("Sleep", "handle", ["30"], unique_key="k")
    daemon = project.start()
    wait_for(lambda: project.has("running", live), 10, "the live job running")
    drop_whole(project, "dropped.json", {"class": "Echo", "unique_key": "k"})
    wait_for(lambda: (project.spool / "rejected" / "dropped.reason").exists(), 10, "the duplicate rejected")
    assert (project.spool / "rejected" / "dropped.reason").read_text() == f"duplicate of {live}\n"
    drop_whole(project, "other.json", {"class": "Echo", "unique_key": "another"})
    wait_for(lambda: project.has("done", "other"), 10, "a job with another key runs")
    project.stop(daemon)


def test_a_batch_with_one_key_twice_is_refused_and_a_key_in_a_batch_is_taken(project: Project) -> None:
    configure(project)
    with pytest.raises(SubmitError, match="job 2: unique_key 'k' is job 0's too"):
        run_background_jobs([{"class": "Echo", "unique_key": "k"}, ("Echo", "handle", []),
                             {"class": "Echo", "unique_key": "k"}], config=project.config)
    assert project.names("medium") == [] and not (project.spool / "markers").exists()
    live = project.submit("Echo", "handle", ["live"], unique_key="k")
    ids = run_background_jobs([("Echo", "handle", ["x"]), {"class": "Echo", "unique_key": "k"},
                               {"class": "Echo", "unique_key": "other"}], config=project.config)
    assert ids[1] == live and len(set(ids)) == 3
    assert sorted(project.names("medium")) == sorted(f"{i}.json" for i in {live, ids[0], ids[2]})


def test_retry_of_a_failed_job_whose_key_a_live_job_holds_is_refused(project: Project) -> None:
    configure(project)
    failed = project.submit("Raise", "handle", [], unique_key="k")
    assert project.drain().returncode == 0 and project.has("failed", failed)
    live = project.submit("Echo", "handle", [], unique_key="k")
    refused = project.cli("retry", failed, "--config", str(project.config))
    assert refused.returncode == 1 and live in refused.stderr and "unique_key" in refused.stderr
    assert project.has("failed", failed)
    assert project.drain().returncode == 0
    again = project.cli("retry", failed, "--config", str(project.config))
    assert again.returncode == 0, again.stderr
    assert project.submit("Echo", "handle", [], unique_key="k") == failed  # it holds the key now


@pytest.mark.parametrize("value", ["", "x" * 201, 7])
def test_a_bad_unique_key_is_refused_naming_the_field(project: Project, value: object) -> None:
    configure(project)
    with pytest.raises(SubmitError, match="unique_key"):
        project.submit("Echo", "handle", [], unique_key=value)
    project.drop("medium", "bad.json", {"class": "Echo", "unique_key": value})
    assert project.drain().returncode == 0
    assert "unique_key" in (project.spool / "rejected" / "bad.reason").read_text()


def _killed_submitter(project: Project, k: int, action: str) -> None:
    counts = project.root / "counts"
    proc = subprocess.run([sys.executable, str(INJECT), "link", str(k), action, str(project.spool), str(counts), "--",
                           "submit", "Echo", "handle", "crashed", "--unique-key", "k", "--config",
                           str(project.config)], cwd=project.root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr


@pytest.mark.timeout(60)
def test_a_submitter_killed_after_taking_the_key_leaves_its_job_to_the_daemons(project: Project) -> None:
    configure(project, rescan_seconds=0.5)
    project.set_keys(heartbeat_seconds=0.5, lease_seconds=2)
    _killed_submitter(project, 2, "kill-after")  # the key's marker linked; the job still pending
    [pending] = os.listdir(project.spool / "markers" / "unique" / "pending")
    job_id = pending.removesuffix(".json")
    assert project.submit("Echo", "handle", ["later"], unique_key="k") == job_id, "a pending job holds its key"
    daemon = project.start()
    wait_for(lambda: project.has("done", job_id), 15, "the pending job published by a daemon and run")
    assert project.doc("done", job_id)["params"] == ["crashed"]
    project.stop(daemon)


@pytest.mark.timeout(60)
def test_a_submitter_killed_before_taking_the_key_leaves_nothing_that_holds_it(project: Project) -> None:
    configure(project, rescan_seconds=0.5)
    project.set_keys(heartbeat_seconds=0.5, lease_seconds=2)
    _killed_submitter(project, 2, "kill")  # staged in pending/, the key's marker never linked
    pending = project.spool / "markers" / "unique" / "pending"
    assert len(os.listdir(pending)) == 1
    fresh = project.submit("Echo", "handle", ["fresh"], unique_key="k")
    daemon = project.start()
    wait_for(lambda: os.listdir(pending) == [] and project.has("done", fresh), 15, "the stray dropped, fresh run")
    time.sleep(0.5)
    assert project.names("done") == [f"{fresh}.json"]
    project.stop(daemon)
    assert json.loads(project.cli("status", "--json", "--config", str(project.config)).stdout)["counts"]["done"] == 1


@pytest.mark.timeout(60)
def test_a_daemon_killed_while_a_unique_job_runs_keeps_the_key_until_its_rerun_ends(project: Project) -> None:
    import signal

    configure(project, retry_attempts=1, rescan_seconds=1)
    marker = project.root / "sleeping.pid"
    job_id = project.submit("Sleep", "handle", ["1", str(marker)], unique_key="k")
    first = project.start()
    wait_for(marker.exists, 10, "the job running")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    assert project.submit("Echo", "handle", [], unique_key="k") == job_id, "a dead daemon's claim still holds it"
    second = project.start()
    wait_for(lambda: project.has("done", job_id), 20, "the job recovered and run again")
    assert [h["error_type"] for h in project.doc("done", job_id)["history"]] == ["Orphaned", None]
    assert project.submit("Echo", "handle", [], unique_key="k") != job_id, "free once done"
    project.stop(second)


def test_a_key_that_cannot_be_taken_puts_the_job_back_until_it_can(project: Project) -> None:
    """The spool refusing the key's marker is not the job's fault: the claim is undone, the job waits in
    its ready folder, and runs once the spool takes the marker."""
    from spoold.paths import SpoolPaths
    from spoold.spool.unique import key_folder

    configure(project)
    blocked = key_folder(SpoolPaths(project.spool), "k")
    blocked.parent.mkdir(parents=True)
    blocked.write_text("in the way")  # a file where the key's folder goes: mkdir fails (EEXIST, not a folder)
    daemon = project.start()
    drop_whole(project, "keyed.json", {"class": "Echo", "params": ["x"], "unique_key": "k"})
    time.sleep(2.0)
    assert project.names("medium") == ["keyed.json"] and project.names("running") == [], "stuck in running/"
    blocked.unlink()
    wait_for(lambda: project.has("done", "keyed"), 10, "the job run once its key could be taken")
    code, out = project.stop(daemon)
    assert code == 0 and "cannot take its unique_key" in out
