"""The ready index (issue 5): a rescan streams, jobs can be taken before it ends, and when it ends the
index matches the folders again. Real folders and files; the daemon's use of it is in the drain test."""

from __future__ import annotations

import os
import time

from conftest import Project, wait_for

from spoold.paths import SpoolPaths
from spoold.spool.ready_index import SCAN_CHUNK, SCAN_SHARE, SCAN_SLICE, ReadyIndex


def fill(paths: SpoolPaths, priority: str, count: int) -> list[str]:
    names = [f"job{n:05d}.json" for n in range(count)]
    for name in names:
        (paths.ready(priority) / name).write_text("{}")
    return names


def test_a_rescan_reads_a_chunk_at_a_time_and_jobs_can_be_taken_meanwhile(paths: SpoolPaths) -> None:
    names = fill(paths, "medium", SCAN_CHUNK * 2 + 10)
    index = ReadyIndex(paths)
    index.rescan(0.0)
    assert index.scanning
    assert len(index) == SCAN_CHUNK  # the first chunk only, and already startable
    first = index.pop(0.0)
    assert first is not None and first[0] == "medium"
    os.unlink(paths.ready("medium") / first[1])  # claimed by the loop
    while not index.rescan_step():
        pass
    assert not index.scanning
    assert len(index) == len(names) - 1
    taken = set()
    while (item := index.pop(0.0)) is not None:
        taken.add(item[1])
    assert taken == set(names) - {first[1]}, "every file once, the one already taken not again"


def test_when_a_rescan_ends_files_gone_without_an_event_leave_and_hinted_ones_stay(paths: SpoolPaths) -> None:
    index = ReadyIndex(paths)
    fill(paths, "low", 3)
    index.rescan(0.0, whole=True)
    assert len(index) == 3
    os.unlink(paths.ready("low") / "job00000.json")  # gone with no event
    fill(paths, "high", SCAN_CHUNK + 5)
    index.rescan(0.0)
    assert index.scanning
    late = paths.ready("low") / "late.json"
    late.write_text("{}")
    index.hint(late)  # an event while the scan reads high/
    while not index.rescan_step():
        pass
    low = index.folders["low"].members
    assert "job00000.json" not in low and {"job00001.json", "job00002.json", "late.json"} <= low
    assert len(index) == SCAN_CHUNK + 5 + 3


def test_a_daemon_drains_a_backlog_larger_than_one_scan_chunk(project: Project) -> None:
    project.configure(workers=2)
    project.set_keys(isolation='"worker"', durability='"fast"')
    count = SCAN_CHUNK + 500
    for n in range(count):
        project.drop("medium", f"bulk{n:05d}.json", {"class": "Echo", "params": [n]})
    assert project.drain().returncode == 0
    assert len(project.names("done")) == count
    assert project.names("medium") == []


def test_a_paced_scan_takes_about_a_tenth_of_the_time_and_reads_at_least_one_entry_a_slice(paths: SpoolPaths) -> None:
    """Real time: a caller that asks for a slice as often as it likes gets about SCAN_SHARE of its time."""
    names = fill(paths, "medium", SCAN_CHUNK + 6000)
    index = ReadyIndex(paths)
    index.rescan(0.0)
    began, inside, calls = time.monotonic(), 0.0, 0
    try:
        while True:
            due = index.paced_due()
            assert due is not None
            time.sleep(max(0.0, due - time.monotonic()) / 2)  # a busy loop's passes, a few per slice
            before = len(index)
            t = time.monotonic()
            ended = index.rescan_paced()
            inside += time.monotonic() - t
            calls += 1
            if ended:
                break
            if t >= due:  # asked once the slice was due (not merely returning after it)
                assert len(index) > before, "a due slice reads at least one entry"
    finally:
        index.close()  # a failed check leaves no listing open for a later test's garbage collection
    elapsed = time.monotonic() - began
    assert len(index) == len(names)
    assert inside <= 2 * SCAN_SHARE * elapsed + SCAN_SLICE, (inside, elapsed)
    assert calls > 1


def test_a_large_backlogs_scan_ends_while_a_long_job_runs_so_the_oldest_job_runs_next(project: Project) -> None:
    """The scan of a backlog larger than one chunk is paced by time, not by passes of the loop: it goes on
    while no job ends, and when the running job ends, the oldest file of the whole folder is the next."""
    project.configure(workers=1)
    count = SCAN_CHUNK + 3000
    for n in range(count):  # in name order: ties of ctime are broken by name, so job00000 is the oldest
        project.drop("medium", f"job{n:05d}.json", {"class": "Echo", "params": [n]})
    project.drop("high", "first.json", {"class": "Sleep", "params": [3]})
    proc = project.start()
    wait_for(lambda: "success" in project.events("first"), 30, "the long job done")
    wait_for(lambda: len(started_order(project)) >= 2, 30, "the next job started")
    project.stop(proc)
    assert started_order(project)[:2] == ["first", "job00000"]


def started_order(project: Project) -> list[str]:
    return [part.split("=", 1)[1] for line in project.log_lines() if "status=started" in line
            for part in line.split() if part.startswith("job=")]
