"""Config switches of issue 4: durability, file events off, the memory limit, and poison jobs."""

from __future__ import annotations

import time

from conftest import Project, process_gone, read_pid, wait_for

from spoold.spool.node import scratch_folder


def test_fast_durability_runs_jobs_the_same_way(project: Project) -> None:
    project.set_keys(durability='"fast"')
    job_id = project.submit("Echo", "handle", ["quick"])
    assert project.drain().returncode == 0
    assert project.doc("done", job_id)["result"] == ["quick"]


def test_with_file_events_off_a_job_is_found_by_the_next_rescan(project: Project) -> None:
    project.configure(rescan_seconds=1)
    project.set_keys(file_events="false")
    daemon = project.start()
    time.sleep(0.3)  # the first rescan has passed: only the next one can find the job (a sleep: no file shows it)
    submitted = time.monotonic()
    job_id = project.submit("Echo", "handle", ["polled"])
    wait_for(lambda: project.has("done", job_id), 5, "found by a rescan")
    assert time.monotonic() - submitted < 1 + 1.5  # one rescan period, plus the run itself
    assert project.stop(daemon)[0] == 0


def test_a_job_over_its_memory_limit_fails_as_memory_limit(project: Project) -> None:
    project.set_keys(memory_limit_mb=300)
    small = project.submit("Allocate", "handle", ["10"])
    big = project.submit("Allocate", "handle", ["1000"])
    assert project.drain().returncode == 0
    assert project.doc("done", small)["result"] == 10
    error = project.doc("failed", big)["error"]
    assert error["type"] == "MemoryLimit"
    assert "memory_limit_mb = 300" in error["message"]
    failure = [line for line in project.log_lines() if f" job={big} " in line][-1]
    assert "status=failure" in failure and "error=MemoryLimit" in failure


def test_a_poison_job_that_kills_its_daemon_ends_in_failed_and_others_keep_flowing(project: Project) -> None:
    project.configure(retry_attempts=2, workers=1)
    poison = project.submit("KillParent", "handle", [], priority="high")
    others = [project.submit("Echo", "handle", [str(n)], priority="low") for n in range(3)]
    restarts = 0
    while not project.has("failed", poison):
        assert restarts < 6, "the poison job was retried without bound"
        daemon = project.start()
        wait_for(lambda d=daemon: d.poll() is not None or project.has("failed", poison), 15, "daemon killed")
        restarts += 1
        if daemon.poll() is None:
            project.stop(daemon)
    assert restarts == 4  # three runs (first + 2 retries) killed three daemons; the fourth fails it
    doc = project.doc("failed", poison)
    assert doc["error"]["type"] == "Orphaned"
    assert [h["error_type"] for h in doc["history"]] == ["Orphaned"] * 3
    assert project.drain().returncode == 0
    assert all(project.has("done", job_id) for job_id in others)


def test_when_the_daemon_is_killed_its_running_child_dies_too(project: Project) -> None:
    """The recovering daemon runs the job again: an orphan still running it would be a second copy."""
    marker = project.root / "pid"
    daemon = project.start()
    project.submit("Sleep", "handle", ["30", str(marker)])
    pid = read_pid(marker)  # once the child has started
    [dead] = project.daemon_folders()
    scratch = scratch_folder(dead.name)
    assert scratch.is_dir()
    daemon.kill()
    daemon.wait(timeout=10)
    wait_for(lambda: process_gone(pid), 5, "orphaned child gone")
    assert project.drain().returncode == 0  # recovers the dead daemon's folder, and its scratch with it
    assert not dead.exists() and not scratch.exists()


def test_a_ready_folder_removed_and_made_again_is_watched_again(project: Project) -> None:
    """`rm -r spool/low && mkdir spool/low` while running (docs/design.md, F28): no crash, new drops run at once."""
    import shutil

    project.configure(rescan_seconds=30)  # only the renewed watch can find the job within the wait below
    daemon = project.start()
    low = project.spool / "low"
    shutil.rmtree(low)
    low.mkdir()
    time.sleep(0.5)  # a sleep: the watch is renewed in the daemon, with nothing on disk to wait for
    job_id = project.submit("Echo", "handle", ["again"], priority="low")
    wait_for(lambda: project.has("done", job_id), 5, "job in the new low/ ran")
    assert daemon.poll() is None
    assert project.stop(daemon)[0] == 0
