"""`isolation = "worker"` (issue 5): reused workers run many jobs, and the time limit still holds."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, process_gone, read_pid, wait_for


def test_workers_are_reused_for_many_jobs_and_retired_after_max_jobs_per_worker(project: Project) -> None:
    project.configure(workers=1)
    project.set_keys(isolation='"worker"', max_jobs_per_worker=3)
    ids = [project.submit("WhoAmI") for _ in range(7)]
    assert project.drain().returncode == 0
    pids = [project.doc("done", job_id)["result"]["pid"] for job_id in ids]
    assert pids[0] == pids[1] == pids[2] != pids[3]
    assert len(set(pids)) == 3  # 3 + 3 + 1 jobs
    assert [project.doc("done", job_id)["history"][0]["pid"] for job_id in ids] == pids


def test_a_worker_job_past_its_limit_is_killed_and_the_next_job_gets_a_new_worker(project: Project) -> None:
    project.configure(workers=1, max_execution_time=1)
    project.set_keys(isolation='"worker"')
    before = project.submit("WhoAmI")
    pid_file = project.root / "grandchild.pid"
    slow = project.submit("SpawnGrandchild", "handle", [str(pid_file)])
    crash = project.submit("KillSelf")
    after = project.submit("WhoAmI")
    assert project.drain().returncode == 0
    assert project.doc("failed", slow)["error"]["type"] == "Timeout"
    assert project.doc("failed", crash)["error"]["type"] == "Crashed"
    first, last = project.doc("done", before)["result"]["pid"], project.doc("done", after)["result"]["pid"]
    assert first != last
    wait_for(lambda: process_gone(first), 5, "the timed-out worker is gone")
    wait_for(lambda: process_gone(int(pid_file.read_text())), 5, "its job's grandchild too")


def test_output_and_results_stay_with_their_own_job_in_a_shared_worker(project: Project) -> None:
    project.configure(workers=1)
    project.set_keys(isolation='"worker"')
    ids = [project.submit("Echo", "shout", [f"job{n}"]) for n in range(4)]
    assert project.drain().returncode == 0
    for n, job_id in enumerate(ids):
        doc = project.doc("done", job_id)
        assert doc["result"] == f"JOB{n}"
        assert doc["output"].strip() == f"shouting job{n}"


def test_a_worker_job_leaves_no_file_and_a_dying_one_keeps_its_last_output(project: Project) -> None:
    """A worker's outcome comes back in its reply, so its jobs write no file of their own; a worker that
    dies mid-job is reported with its output file, and the record still has what it printed."""
    project.configure(workers=1)
    project.set_keys(isolation='"worker"')
    daemon = project.start()
    (node,) = project.daemon_folders()
    scratch = Path(tempfile.gettempdir()) / f"spoold-{node.name}"
    quiet = [project.submit("Echo", "shout", [f"job{n}"]) for n in range(5)]
    wait_for(lambda: all(project.has("done", job_id) for job_id in quiet), 20, "the jobs done")
    assert [name for name in os.listdir(scratch) if not name.startswith("worker-")] == []
    dying = project.submit("KillSelf", "handle", ["my last words"])
    wait_for(lambda: project.has("failed", dying), 20, "the dying job failed")
    doc = project.doc("failed", dying)
    assert doc["error"]["type"] == "Crashed" and doc["output"].strip() == "my last words"
    after = project.submit("Echo", "shout", ["after"])
    wait_for(lambda: project.has("done", after), 20, "a new worker runs the next job")
    assert project.doc("done", after)["output"].strip() == "shouting after"
    assert len(os.listdir(scratch)) == 1, os.listdir(scratch)  # the new worker's file; the dead one's is gone
    assert project.stop(daemon)[0] == 0


def test_cancelling_a_job_kills_its_worker_and_files_it_as_cancelled(project: Project) -> None:
    project.set_keys(isolation='"worker"')
    marker = project.root / "pid"
    daemon = project.start()
    job_id = project.submit("Sleep", "handle", ["30", str(marker)])
    wait_for(marker.exists, 10, "running")
    result = project.cli("cancel", job_id, "--config", str(project.config))
    assert result.returncode == 0, result.stderr
    assert project.doc("failed", job_id)["error"]["type"] == "Cancelled"
    wait_for(lambda: process_gone(int(marker.read_text())), 5, "worker gone")
    next_id = project.submit("Echo", "handle", ["after"])
    wait_for(lambda: project.has("done", next_id), 10, "a new worker runs the next job")
    assert project.stop(daemon)[0] == 0


@pytest.mark.parametrize("isolation", ["process", "worker"])
def test_a_request_larger_than_a_pipe_buffer_reaches_its_child_whole(project: Project, isolation: str) -> None:
    project.configure(workers=1, max_job_bytes=400_000)
    project.set_keys(isolation=f'"{isolation}"')
    big = "x" * 150_000  # more than one pipe write (64 KiB) between the daemon, the server and the child
    job_id = project.submit("Echo", "handle", [big, "end"])
    assert project.drain().returncode == 0
    assert project.doc("done", job_id)["result"] == [big, "end"]


def _context_switches(pid: int) -> int:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if "ctxt_switches:" in line)  # voluntary and not


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _daemon_with_a_worker(project: Project, workers: int) -> tuple[subprocess.Popen[str], int]:
    """A worker-isolation daemon that has run one job: it and that job's worker's pid."""
    project.configure(workers=workers)
    project.set_keys(isolation='"worker"')
    daemon = project.start()
    first = project.submit("WhoAmI")
    wait_for(lambda: project.has("done", first), 10, "the first job done")
    return daemon, project.doc("done", first)["result"]["pid"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_worker_job_passes_between_the_daemon_and_its_worker_without_waking_the_fork_server(
        project: Project) -> None:
    """The server hands each worker's pipe ends to the daemon, which then writes the requests and reads the
    replies itself: 300 jobs wake the server no more often than an idle wait does (it was 2 per job)."""
    daemon, worker = _daemon_with_a_worker(project, workers=2)
    server = _parent(worker)
    assert _parent(server) == daemon.pid
    before = _context_switches(server)
    ids = [project.submit("Echo", "handle", [n]) for n in range(300)]
    wait_for(lambda: all(project.has("done", job_id) for job_id in ids), 60, "300 jobs done")
    woken = _context_switches(server) - before
    assert woken < 30, f"the fork server was woken {woken} times for 300 jobs"
    assert [project.doc("done", job_id)["result"] for job_id in ids[:3]] == [[0], [1], [2]]
    assert project.stop(daemon)[0] == 0


def test_a_killed_fork_server_ends_its_workers_jobs_as_crashed_and_a_new_one_takes_over(project: Project) -> None:
    """The workers die with their server; the daemon, which holds their pipes, ends their jobs as crashed,
    and the next job gets a new server and a new worker."""
    project.configure(workers=2)
    project.set_keys(isolation='"worker"')
    marker = project.root / "pid"
    daemon = project.start()
    done = [project.submit("Echo", "handle", [n]) for n in range(5)]
    wait_for(lambda: all(project.has("done", job_id) for job_id in done), 10, "5 jobs done first")
    job_id = project.submit("Sleep", "handle", ["30", str(marker)])
    worker = read_pid(marker)  # once it runs
    server = _parent(worker)
    os.kill(server, 9)
    wait_for(lambda: process_gone(worker), 5, "the worker died with its server")
    wait_for(lambda: project.has("failed", job_id), 10, "failed as Crashed (retry_attempts = 0)")
    assert project.doc("failed", job_id)["error"]["type"] == "Crashed"
    after = project.submit("WhoAmI")
    wait_for(lambda: project.has("done", after), 10, "a new fork server's worker runs the next job")
    assert _parent(project.doc("done", after)["result"]["pid"]) != server
    assert project.stop(daemon)[0] == 0


def test_a_worker_killed_while_idle_costs_no_job(project: Project) -> None:
    """The daemon may write to a worker that died before its exit was reported (here the fork server is
    stopped, so it cannot report it): the broken pipe says the worker read nothing, and the job goes to the
    next worker, which the server hands over once it runs again. Never a crash."""
    daemon, idle = _daemon_with_a_worker(project, workers=1)
    server = _parent(idle)
    os.kill(server, signal.SIGSTOP)
    try:
        os.kill(idle, signal.SIGKILL)
        wait_for(lambda: Path(f"/proc/{idle}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 5,
                 "the worker is a zombie its stopped server has not reaped")
        after = project.submit("WhoAmI")
        wait_for(lambda: not project.has("medium", after), 10, "the daemon claimed it")
        time.sleep(0.5)  # the daemon wrote to the dead worker, and waits for the server's next worker
    finally:
        os.kill(server, signal.SIGCONT)
    wait_for(lambda: project.has("done", after), 10, "the next job done")
    doc = project.doc("done", after)
    assert doc["result"]["pid"] != idle
    assert [run["outcome"] for run in doc["history"]] == ["success"]
    assert project.stop(daemon)[0] == 0


def test_a_fork_server_that_died_while_idle_costs_no_job(project: Project) -> None:
    """Its workers died with it; the next job starts a new server and worker, and runs once, as a success."""
    daemon, worker = _daemon_with_a_worker(project, workers=1)
    server = _parent(worker)
    os.kill(server, 9)
    wait_for(lambda: process_gone(worker), 5, "its worker died with it")
    after = project.submit("WhoAmI")
    wait_for(lambda: project.has("done", after), 10, "the next job done")
    doc = project.doc("done", after)
    assert _parent(doc["result"]["pid"]) != server
    assert [run["outcome"] for run in doc["history"]] == ["success"]
    assert project.stop(daemon)[0] == 0


# -- a job waiting in a busy worker's pipe (docs/design.md, M14) -------------------------------------------


def _waiting_sentinel(project: Project) -> tuple[str, Path]:
    """A WriteSentinel job submitted behind the busy worker and claimed (so waiting in its pipe), and the
    file it would write if it ran."""
    sentinel = project.root / "ran.txt"
    job_id = project.submit("WriteSentinel", "handle", [str(sentinel)])
    wait_for(lambda: project.has("running", job_id), 10, "the second job claimed while the first runs")
    return job_id, sentinel


def _queued_behind(project: Project, seconds: str, **config: Any) -> tuple[subprocess.Popen[str], str, Path]:
    """One worker busy with a Sleep job (its marker written once it runs) and the daemon started."""
    project.configure(workers=1, **config)
    project.set_keys(isolation='"worker"')
    daemon = project.start()
    marker = project.root / "first.pid"
    first = project.submit("Sleep", "handle", [seconds, str(marker)])
    wait_for(marker.exists, 10, "the first job running")
    return daemon, first, marker


def test_a_job_waits_for_its_busy_worker_and_its_time_limit_starts_when_the_worker_takes_it(project: Project) -> None:
    """With every worker busy, the next job waits in one's pipe: it starts when that worker replies, and its
    `started` line, its `started_at` and its time limit count from then, not from its claim."""
    daemon, first, _ = _queued_behind(project, "3", max_execution_time=4)
    second = project.submit("Sleep", "handle", ["3"])  # killed after 1 s if its limit ran from its claim
    wait_for(lambda: project.has("running", second), 10, "the second job claimed while the first runs")
    assert "started" not in project.events(second)  # claimed, waiting for the worker
    wait_for(lambda: project.has("done", second), 20, "the second job done")
    one, two = project.doc("done", first), project.doc("done", second)
    assert two["started_at"] >= one["finished_at"], (one, two)  # ISO times of one clock: they sort
    assert two["attempts"] == 1 and [run["outcome"] for run in two["history"]] == ["success"]
    assert two["history"][0]["pid"] == one["history"][0]["pid"]  # the same worker: it never waited for us
    wait_for(lambda: project.events(second) == ["started", "success"], 10, "its lines (logged after the commit)")
    assert project.stop(daemon)[0] == 0


def test_cancelling_a_waiting_job_takes_it_back_unrun_and_leaves_its_workers_job_running(project: Project) -> None:
    daemon, first, _ = _queued_behind(project, "2")
    second, sentinel = _waiting_sentinel(project)
    result = project.cli("cancel", second, "--config", str(project.config))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: project.has("failed", second), 10, "the waiting job cancelled")
    assert project.doc("failed", second)["error"]["type"] == "Cancelled"
    wait_for(lambda: project.has("done", first), 20, "the worker's own job goes on to its end")
    assert not sentinel.exists()  # it never ran
    assert project.stop(daemon)[0] == 0


def test_a_stop_puts_a_waiting_job_back_with_no_run_counted(project: Project) -> None:
    daemon, first, _ = _queued_behind(project, "1")
    second, sentinel = _waiting_sentinel(project)
    assert project.stop(daemon)[0] == 0
    assert project.has("done", first)  # the running one had its grace
    back = project.doc("medium", second)  # the waiting one is back as it was submitted
    assert "attempts" not in back or back["attempts"] == 0
    assert "history" not in back and not sentinel.exists()
    assert project.drain().returncode == 0
    assert project.doc("done", second)["attempts"] == 1 and sentinel.read_text() == "ran\n"


def test_a_job_waiting_behind_a_long_one_moves_to_a_worker_that_comes_free(project: Project) -> None:
    project.configure(workers=2)
    project.set_keys(isolation='"worker"')
    daemon = project.start()
    long_marker, short_marker = project.root / "long.pid", project.root / "short.pid"
    long = project.submit("Sleep", "handle", ["6", str(long_marker)])
    wait_for(long_marker.exists, 10, "the long job running")
    short = project.submit("Sleep", "handle", ["0.5", str(short_marker)])
    wait_for(short_marker.exists, 10, "the short job running")
    waiting = project.submit("WhoAmI")  # both busy: it waits in one worker's pipe
    wait_for(lambda: project.has("done", waiting), 4, "the waiting job run by the worker that came free first")
    assert project.has("running", long)
    assert project.doc("done", waiting)["result"]["pid"] == int(short_marker.read_text())
    wait_for(lambda: project.events(waiting) == project.events(short) == ["started", "success"], 10,
             "their lines (logged after the commit)")
    assert project.stop(daemon, timeout=30)[0] == 0


def test_a_worker_that_dies_with_a_job_waiting_leaves_that_job_to_run_once_elsewhere(project: Project) -> None:
    project.configure(workers=1)
    project.set_keys(isolation='"worker"')
    dying = project.submit("KillSelf")
    after = project.submit("WhoAmI")  # with one worker, it waits in the dying worker's pipe
    assert project.drain().returncode == 0
    assert project.doc("failed", dying)["error"]["type"] == "Crashed"
    doc = project.doc("done", after)
    assert doc["attempts"] == 1 and [run["outcome"] for run in doc["history"]] == ["success"]
    assert project.events(after) == ["started", "success"]


def test_a_reload_to_more_workers_runs_more_jobs_at_once_in_worker_isolation(project: Project) -> None:
    """The pool's size follows a SIGHUP: with two workers two jobs run at once, none waiting behind the other."""
    project.configure(workers=1)
    project.set_keys(isolation='"worker"')
    daemon = project.start()
    first = project.submit("WhoAmI")
    wait_for(lambda: project.has("done", first), 10, "a job under one worker")
    project.configure(workers=2)
    project.set_keys(isolation='"worker"')
    daemon.send_signal(signal.SIGHUP)
    barrier = project.submit("WhoAmI")  # a pass after the signal: the reload is applied at its start
    wait_for(lambda: project.has("done", barrier), 10, "a job after the reload")
    markers = [project.root / f"sleep{n}.pid" for n in range(2)]
    ids = [project.submit("Sleep", "handle", ["3", str(marker)]) for marker in markers]
    wait_for(lambda: all(marker.exists() for marker in markers), 2.5, "both jobs running at once")
    assert not any(project.has("done", job_id) for job_id in ids)
    assert project.stop(daemon, timeout=30)[0] == 0
