"""Commit files made ahead by a daemon's helper process (spoold/spool/blanks.py; docs/design.md, P7)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, child_pids, process_gone, wait_for

from spoold.spool.blanks import AHEAD, FLUSH_AT, MAX_RELEASED, PIPE_BUF, Blanks, blank_name, prefix_of

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the helper in /proc")


def blanks_of(tmp: Path, node_id: str) -> dict[int, Path]:
    """The node's blanks in tmp/, by number."""
    prefix = prefix_of(node_id)
    return {int(p.name[len(prefix):-len(".part")]): p for p in tmp.iterdir() if p.name.startswith(prefix)}


def helpers(daemon_pid: int) -> list[int]:
    """The daemon's blank-file helper processes (one at most), from /proc."""
    found = []
    for pid in child_pids(daemon_pid):
        with contextlib.suppress(OSError):  # a job's child may end between the listing and the read
            if b"spool/blanks.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def helper_pid(daemon_pid: int) -> int:
    (found,) = wait_for(lambda: helpers(daemon_pid), 10, "the daemon's blank-file helper")
    return int(found)


def test_blanks_are_made_once_asked_for_taken_in_order_and_the_rest_removed_at_close(tmp_path: Path) -> None:
    blanks = Blanks(tmp_path, "node-1")
    try:
        assert blanks.take() is None  # the first starts the helper and asks: its caller makes its own file
        wait_for(lambda: len(blanks_of(tmp_path, "node-1")) == AHEAD, 10, f"{AHEAD} blanks")
        assert all(path.stat().st_size == 0 for path in blanks_of(tmp_path, "node-1").values())
        for number in range(AHEAD // 2 + 1):
            taken = blanks.take()
            assert taken is not None
            path, fd = taken
            os.close(fd)
            assert path == blanks_of(tmp_path, "node-1")[number]
            path.unlink()  # what a commit does once it has linked the file in
        wait_for(lambda: max(blanks_of(tmp_path, "node-1")) >= AHEAD // 2 + AHEAD, 10, "asked again beyond the half")
    finally:
        blanks.close()
    assert blanks_of(tmp_path, "node-1") == {}
    assert blanks.take() is None  # closed: commits make their own files


def taken_and_linked(blanks: Blanks, into: Path, count: int, first: int = 0) -> list[tuple[Path, Path]]:
    """Take `count` blanks and link each to a file of its own in `into` (`first`.json on), as commits do:
    (blank, linked)."""
    pairs = []
    for number in range(first, first + count):
        taken = blanks.take()
        assert taken is not None
        path, fd = taken
        os.write(fd, b"%d" % number)
        os.close(fd)
        os.link(path, into / f"{number}.json")
        pairs.append((path, into / f"{number}.json"))
    return pairs


def test_a_linked_blanks_name_is_removed_by_the_helper_in_batches(tmp_path: Path) -> None:
    """An unlink in tmp/ waits for the folder's lock while the helper's create holds it: the helper removes
    the names itself, FLUSH_AT at a time, or what is left when the loop idles. The files stay whole."""
    tmp, done = tmp_path / "tmp", tmp_path / "done"
    tmp.mkdir()
    done.mkdir()
    blanks = Blanks(tmp, "node-1")
    try:
        assert blanks.take() is None
        wait_for(lambda: len(blanks_of(tmp, "node-1")) == AHEAD, 10, f"{AHEAD} blanks")
        pairs = taken_and_linked(blanks, done, FLUSH_AT + 3)
        assert all(blanks.release(path) for path, _ in pairs)
        wait_for(lambda: not any(path.exists() for path, _ in pairs[:FLUSH_AT]), 10, "a full batch removed")
        assert all(path.exists() for path, _ in pairs[FLUSH_AT:])  # held back: the loop is busy
        blanks.flush(idle=False)
        assert all(path.exists() for path, _ in pairs[FLUSH_AT:])  # released less than a second ago
        blanks.flush(idle=True)
        wait_for(lambda: not any(path.exists() for path, _ in pairs), 10, "the rest removed once idle")
        assert [linked.read_bytes() for _, linked in pairs] == [b"%d" % n for n in range(len(pairs))]
        assert all(linked.stat().st_nlink == 1 for _, linked in pairs)
        assert not blanks.release(done / "0.json")  # not a blank: its caller removes it
        held = taken_and_linked(blanks, done, 2, first=len(pairs))
        assert all(blanks.release(path) for path, _ in held)
    finally:
        blanks.close()
    assert blanks_of(tmp, "node-1") == {}  # the two never sent are removed at close
    assert all(linked.stat().st_nlink == 1 for _, linked in held)


def test_a_long_batch_goes_in_whole_lines_and_a_stopped_helper_holds_none_back(tmp_path: Path) -> None:
    """More names than one atomic pipe write holds, to a helper that is stopped until its pipe is full: every
    write is whole lines, what does not fit the daemon removes itself, and no other blank goes."""
    prefix = prefix_of("node-1")
    blanks = Blanks(tmp_path, "node-1")
    assert blanks.take() is None
    wait_for(lambda: len(blanks_of(tmp_path, "node-1")) == AHEAD, 10, f"{AHEAD} blanks")
    made = set(blanks_of(tmp_path, "node-1"))  # not taken: nothing may remove them
    assert blanks.helper is not None
    helper = blanks.helper.pid
    fake = list(range(100_000, 100_000 + 12_000))  # 8 bytes a line: more than the pipe's 64 KiB
    assert len(fake) * 8 > 16 * PIPE_BUF and len(fake) > MAX_RELEASED
    sample = fake[::120]  # made to see them go; the helper's unlink of the others finds nothing
    for number in sample:
        (tmp_path / blank_name(prefix, number)).touch()
    os.kill(helper, signal.SIGSTOP)
    try:
        blanks.linked = list(fake)  # as if each had been linked into place
        blanks.flush(idle=True)
        assert blanks.linked == []  # sent, or (the pipe full) removed by the daemon
    finally:
        os.kill(helper, signal.SIGCONT)
    try:
        wait_for(lambda: not any((tmp_path / blank_name(prefix, n)).exists() for n in sample), 20, "all removed")
        blanks.flush(idle=True)
        assert set(blanks_of(tmp_path, "node-1")) == made
    finally:
        blanks.close()


def test_a_daemon_commits_into_the_next_blank_and_removes_the_rest_when_it_stops(project: Project) -> None:
    project.set_keys(durability='"fast"')
    daemon = project.start()
    node = project.daemon_folders()[0].name
    tmp = project.spool / "tmp"
    first = project.submit("Echo", "handle", ["first"])
    wait_for(lambda: project.has("done", first), 10, "the first job done")
    wait_for(lambda: len(blanks_of(tmp, node)) == AHEAD, 10, "blanks made after the first commit")
    following = min(blanks_of(tmp, node))
    inode = blanks_of(tmp, node)[following].stat().st_ino
    second = project.submit("Echo", "handle", ["second"])
    wait_for(lambda: project.has("done", second), 10, "the second job done")
    done = project.spool / "done" / f"{second}.json"
    assert done.stat().st_ino == inode  # that very file
    wait_for(lambda: done.stat().st_nlink == 1, 10, "its tmp/ name removed by the helper, the daemon idle")
    assert project.doc("done", second)["result"] == ["second"]
    ids = [project.submit("Echo", "handle", [n]) for n in range(100)]
    wait_for(lambda: all(project.has("done", job_id) for job_id in ids), 30, "100 jobs done")
    assert min(blanks_of(tmp, node)) > following + 50, "most commits wrote into blanks"
    code, out = project.stop(daemon)
    assert code == 0, out
    assert blanks_of(tmp, node) == {} and os.listdir(tmp) == []
    assert project.log_lines(errors=True) == []


def started_with_blanks(project: Project) -> tuple[subprocess.Popen[str], str, Path]:
    """A `fast` daemon that has committed one job, so that its helper has made its blanks: (it, its id, tmp/)."""
    project.set_keys(durability='"fast"')
    daemon = project.start()
    node = project.daemon_folders()[0].name
    tmp = project.spool / "tmp"
    job_id = project.submit("Echo")
    wait_for(lambda: project.has("done", job_id), 10, "a job done")
    wait_for(lambda: len(blanks_of(tmp, node)) == AHEAD, 10, "blanks made")
    return daemon, node, tmp


def test_a_killed_daemons_blanks_go_with_its_folder_and_its_helper_ends(project: Project) -> None:
    victim, node, tmp = started_with_blanks(project)
    helper = helper_pid(victim.pid)
    os.kill(victim.pid, signal.SIGKILL)  # the daemon alone: its helper sees its input end
    victim.wait(timeout=10)
    wait_for(lambda: process_gone(helper), 10, "the helper ended with its daemon")
    assert len(blanks_of(tmp, node)) == AHEAD  # left behind, until the dead daemon's folder is removed
    survivor = project.start()
    wait_for(lambda: not (project.spool / "running" / node).exists(), 20, "the dead daemon's folder removed")
    assert blanks_of(tmp, node) == {}
    later = project.submit("Echo")
    wait_for(lambda: project.has("done", later), 10, "a job after the recovery")
    assert project.stop(survivor)[0] == 0


def test_a_killed_daemons_names_not_yet_sent_to_its_helper_go_too_and_its_jobs_stay_whole(project: Project) -> None:
    """While a job runs the loop keeps up to FLUSH_AT committed blanks' second names in tmp/ (a second at
    most); a SIGKILL then leaves them, linked to done/ files, and recovery removes them with its blanks."""
    project.configure(workers=3)
    victim, node, tmp = started_with_blanks(project)
    project.submit("Sleep", "handle", [30])  # keeps the loop from idling, so the names are held back
    quick = [project.submit("Echo", "handle", [n]) for n in range(FLUSH_AT - 4)]
    wait_for(lambda: all(project.has("done", i) for i in quick), 10, "the quick jobs done")
    dones = [project.spool / "done" / f"{i}.json" for i in quick]
    held = [path for path in dones if path.stat().st_nlink == 2]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    assert held, "every name was sent before the kill: nothing was tested"
    survivor = project.start()
    wait_for(lambda: not (project.spool / "running" / node).exists(), 20, "the dead daemon's folder removed")
    assert blanks_of(tmp, node) == {}
    assert all(path.stat().st_nlink == 1 for path in dones)
    assert [project.doc("done", i)["result"] for i in quick] == [[n] for n in range(len(quick))]
    assert project.stop(survivor)[0] == 0


def test_a_daemon_whose_helper_died_makes_its_own_files_and_loses_nothing(project: Project) -> None:
    daemon, _, tmp = started_with_blanks(project)
    helper = helper_pid(daemon.pid)
    os.kill(helper, signal.SIGKILL)
    wait_for(lambda: process_gone(helper), 10, "the helper gone")
    ids = [project.submit("Echo", "handle", [n]) for n in range(AHEAD + 20)]  # more than its blanks
    wait_for(lambda: all(project.has("done", i) for i in ids), 30, "every job done")
    assert all(project.doc("done", i)["result"] == [n] for n, i in enumerate(ids))
    code, out = project.stop(daemon)
    assert code == 0, out
    assert "the helper that makes commit files ahead ended" in out
    assert os.listdir(tmp) == []  # the blanks it made before it died are removed too


def test_a_daemon_that_fsyncs_its_commits_makes_no_blanks(project: Project) -> None:
    """With fsyncs the committer thread commits, and its creates hold up nothing: no helper, no blanks."""
    daemon = project.start()
    ids = [project.submit("Echo", "handle", [n]) for n in range(20)]
    wait_for(lambda: all(project.has("done", i) for i in ids), 20, "every job done")
    assert os.listdir(project.spool / "tmp") == []
    assert helpers(daemon.pid) == []
    assert project.stop(daemon)[0] == 0
