"""Warm starts (issue 5): each job is a fork of the fork server by default; spawn still works everywhere."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from conftest import Project, process_gone, read_pid, settled_events, wait_for

from spoold.execution.spares import keep_draining


def _parent_name(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_by_default_a_job_is_forked_from_the_warm_fork_server(project: Project) -> None:
    daemon = project.start()
    job_id = project.submit("WhoAmI")
    wait_for(lambda: project.has("done", job_id), 10, "done")
    result = project.doc("done", job_id)["result"]
    assert result["ppid"] != daemon.pid
    assert "spoold.execution.forkserver" in _parent_name(result["ppid"])
    assert project.doc("done", job_id)["history"][0]["pid"] == result["pid"]
    project.stop(daemon)
    wait_for(lambda: process_gone(result["ppid"]), 5, "the fork server ends with the daemon")


def test_with_spawn_each_job_is_a_fresh_interpreter_started_by_the_daemon(project: Project) -> None:
    project.set_keys(start_method='"spawn"')
    daemon = project.start()
    job_id = project.submit("WhoAmI")
    wait_for(lambda: project.has("done", job_id), 10, "done")
    assert project.doc("done", job_id)["result"]["ppid"] == daemon.pid
    project.stop(daemon)


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_both_start_methods_kill_a_job_past_its_limit_with_its_grandchild(project: Project, method: str) -> None:
    project.configure(max_execution_time=1)
    project.set_keys(start_method=f'"{method}"')
    pid_file = project.root / "grandchild.pid"
    job_id = project.submit("SpawnGrandchild", "handle", [str(pid_file)])
    ok = project.submit("Echo", "handle", ["fine"])
    crash = project.submit("KillSelf")
    assert project.drain().returncode == 0
    assert project.doc("failed", job_id)["error"]["type"] == "Timeout"
    assert project.doc("failed", crash)["error"]["type"] == "Crashed"
    assert project.doc("done", ok)["result"] == ["fine"]
    wait_for(lambda: process_gone(int(pid_file.read_text())), 5, "grandchild gone")


def test_a_killed_fork_server_ends_its_jobs_as_crashed_and_a_new_one_takes_over(project: Project) -> None:
    marker = project.root / "pid"
    daemon = project.start()
    job_id = project.submit("Sleep", "handle", ["30", str(marker)])
    child = read_pid(marker)  # once it runs
    server = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert "spoold.execution.forkserver" in _parent_name(server)
    os.kill(server, 9)
    wait_for(lambda: process_gone(child), 5, "the job's child died with its server")
    wait_for(lambda: project.has("failed", job_id), 10, "failed as Crashed (retry_attempts = 0)")
    assert project.doc("failed", job_id)["error"]["type"] == "Crashed"
    after = project.submit("Echo", "handle", ["next"])
    wait_for(lambda: project.has("done", after), 10, "a new fork server runs the next job")
    assert project.stop(daemon)[0] == 0


def test_when_the_fork_server_is_killed_its_jobs_grandchildren_die_too(project: Project) -> None:
    pid_file = project.root / "grandchild.pid"
    daemon = project.start()
    job_id = project.submit("SpawnGrandchild", "handle", [str(pid_file)])
    wait_for(pid_file.exists, 10, "the job started its grandchild")
    wait_for(lambda: pid_file.read_text() != "", 5, "pid written")
    grandchild = int(pid_file.read_text())
    server = int(Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the job's child
    server = int(Path(f"/proc/{server}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert "spoold.execution.forkserver" in _parent_name(server)
    os.kill(server, 9)
    wait_for(lambda: process_gone(grandchild), 5, "the grandchild died with the job's group")
    wait_for(lambda: project.has("failed", job_id), 10, "failed as Crashed")
    assert project.stop(daemon)[0] == 0


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_spare_child_killed_while_it_waits_is_replaced_and_no_job_notices(project: Project) -> None:
    daemon = project.start()
    first = project.submit("WhoAmI")
    wait_for(lambda: project.has("done", first), 10, "first job done")
    server = project.doc("done", first)["result"]["ppid"]
    wait_for(lambda: len(_children(server)) == 1, 5, "the fork server holds one spare, waiting")
    (spare,) = _children(server)
    os.kill(spare, 9)
    wait_for(lambda: process_gone(spare), 5, "spare gone")
    after = project.submit("WhoAmI")
    wait_for(lambda: project.has("done", after), 10, "the next job runs in a fresh child")
    assert project.doc("done", after)["result"]["pid"] != spare
    assert settled_events(project, after, 2) == ["started", "success"]
    assert project.stop(daemon)[0] == 0


def test_a_forked_child_sends_its_output_and_outcome_on_pipes_and_creates_no_file(project: Project) -> None:
    """A fork server's child writes its output and its outcome on two pipes, which the server passes on
    with the child's end: no file per job. The output's last 4 KiB are kept; a child killed before it
    reported is still a crash with what it printed; a result larger than a pipe holds arrives whole."""
    project.configure(workers=1, max_job_bytes=400_000, extra='BlockResultFile = ["handle"]')
    marker = project.root / "pid"
    daemon = project.start()
    (node,) = project.daemon_folders()
    scratch = Path(tempfile.gettempdir()) / f"spoold-{node.name}"
    slow = project.submit("Sleep", "handle", ["1.5", str(marker)])
    wait_for(marker.exists, 10, "the job running")
    assert os.listdir(scratch) == []
    big = "y" * 200_000  # three pipe buffers
    large = project.submit("Echo", "handle", [big])
    chatty = project.submit("Echo", "shout", ["z" * 9_000 + "end"])
    dying = project.submit("KillSelf", "handle", ["my last words"])
    wait_for(lambda: project.has("failed", dying), 20, "the last one ended")
    assert project.doc("done", slow)["result"] == 1.5
    assert project.doc("done", large)["result"] == [big]
    output = project.doc("done", chatty)["output"]
    assert output.endswith("zzzend\n") and len(output) == 4096
    doc = project.doc("failed", dying)
    assert doc["error"]["type"] == "Crashed" and doc["output"].strip() == "my last words"
    blocked = project.submit("BlockResultFile", "handle", [str(scratch)])
    wait_for(lambda: project.has("done", blocked) or project.has("failed", blocked), 20, "it ended")
    assert project.doc("done", blocked)["result"] == {"output_is_a_pipe": True}
    assert os.listdir(scratch) == [f"{blocked}.result"]  # the folder the job made, never a file of ours
    assert project.stop(daemon)[0] == 0


def test_a_process_a_job_left_behind_may_go_on_writing_its_output(project: Project) -> None:
    """The output pipe of an ended job is read (and dropped) until its last writer is gone, as a file
    would take the writes: what the job left running outside its group is not killed by a closed pipe."""
    project.configure(workers=1, extra='LeaveChatter = ["handle"]')
    survived = project.root / "survived"
    daemon = project.start()
    job_id = project.submit("LeaveChatter", "handle", [str(survived)])
    wait_for(lambda: project.has("done", job_id), 10, "the job done")
    after = [project.submit("Echo", "shout", [f"next{n}"]) for n in range(3)]
    wait_for(lambda: all(project.has("done", each) for each in after), 10, "the jobs after it")
    assert [project.doc("done", each)["output"] for each in after] == [f"shouting next{n}\n" for n in range(3)]
    wait_for(survived.exists, 10, "the left-behind process wrote to the end")
    assert project.stop(daemon)[0] == 0


def test_the_server_keeps_at_most_drain_limit_left_behind_pipes_open_closing_the_oldest() -> None:
    """A job that leaves a process behind holding its output costs the server one open pipe; past
    DRAIN_LIMIT of them the oldest is closed, so such jobs cannot run the server out of descriptors."""
    pipes = [os.pipe() for _ in range(5)]
    draining: list[int] = []
    try:
        for read_end, _ in pipes:
            keep_draining(draining, read_end, limit=3)
        assert draining == [read_end for read_end, _ in pipes[2:]]
        for _, write_end in pipes[:2]:  # closed: its writer now gets EPIPE, as with no drain at all
            with pytest.raises(BrokenPipeError):
                os.write(write_end, b"x")
        os.write(pipes[2][1], b"still read")
    finally:
        for fd in [*draining, *(write_end for _, write_end in pipes)]:
            os.close(fd)
