"""The ready index (issue 5): a rescan streams, jobs can be taken before it ends, and when it ends the
index matches the folders again. Real folders and files; the daemon's use of it is in the drain test."""

from __future__ import annotations

import os

from conftest import Project

from spoold.paths import SpoolPaths
from spoold.spool.ready_index import SCAN_CHUNK, ReadyIndex


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
