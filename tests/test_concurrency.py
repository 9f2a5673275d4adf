"""[concurrency] (SPEC §12, issue 13): at most N jobs of a class running at once across every daemon.

Real daemons on one spool; the overlap comes from the jobs' own records (tests/jobs RecordRun: start and
end of each run, written by the job), never from the daemon's logs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import Project, wait_for


def configure(project: Project, limits: str, **overrides: object) -> Path:
    records = project.root / "records.txt"
    project.configure(extra=f'RecordRun = ["handle"]\n\n[concurrency]\n{limits}\n', settle_seconds=0, **overrides)
    return records


def spans(records: Path) -> list[tuple[str, float, float]]:
    """(job id, start, end) of every recorded run, by start."""
    if not records.exists():
        return []
    rows = [line.split() for line in records.read_text(encoding="utf-8").splitlines()]
    return sorted(((row[0], float(row[2]), float(row[3])) for row in rows), key=lambda span: span[1])


def most_at_once(runs: list[tuple[str, float, float]]) -> int:
    """The largest number of runs that overlapped at one moment."""
    edges = sorted([(start, 1) for _, start, _ in runs] + [(end, -1) for _, _, end in runs])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.mark.timeout(120)
def test_four_daemons_never_run_more_than_the_limit_at_once_and_spend_no_attempt_waiting(project: Project) -> None:
    records = configure(project, "RecordRun = 2", workers=2)
    ids = [project.submit("RecordRun", "handle", [str(records), "0.3"]) for _ in range(16)]
    daemons = [project.start() for _ in range(4)]
    wait_for(lambda: len(project.names("done")) == 16, 60, "all 16 jobs done")
    for daemon in daemons:
        assert project.stop(daemon)[0] == 0
    runs = spans(records)
    assert sorted(job_id for job_id, _, _ in runs) == sorted(ids), "each job ran once"
    assert most_at_once(runs) == 2, f"{most_at_once(runs)} ran at once with a limit of 2"
    assert {project.doc("done", job_id)["attempts"] for job_id in ids} == {1}, "waiting spent an attempt"
    assert list((project.spool / "markers" / "limits" / "RecordRun").iterdir()), "the slots are lock files"


def test_waiting_jobs_keep_their_order(project: Project) -> None:
    records = configure(project, "RecordRun = 1", workers=4)
    ids = [project.submit("RecordRun", "handle", [str(records), "0.1"]) for _ in range(8)]
    daemon = project.start()
    wait_for(lambda: len(project.names("done")) == 8, 30, "all 8 jobs done")
    assert project.stop(daemon)[0] == 0
    runs = spans(records)
    assert [job_id for job_id, _, _ in runs] == ids and most_at_once(runs) == 1


def test_a_class_at_its_limit_does_not_hold_up_the_other_classes(project: Project) -> None:
    records = configure(project, "RecordRun = 1", workers=4)
    limited = [project.submit("RecordRun", "handle", [str(records), "0.5"]) for _ in range(10)]
    sentinel = project.root / "others.txt"
    others = [project.submit("WriteSentinel", "handle", [str(sentinel), f"o{n}"]) for n in range(10)]
    daemon = project.start()
    wait_for(lambda: all(project.has("done", job_id) for job_id in others), 10, "the other class's jobs done")
    waiting = [job_id for job_id in limited if not project.has("done", job_id)]
    assert len(waiting) >= 5, f"the other class waited for the limited one ({waiting})"
    wait_for(lambda: all(project.has("done", job_id) for job_id in limited), 30, "the limited jobs done")
    assert project.stop(daemon)[0] == 0
    assert most_at_once(spans(records)) == 1


@pytest.mark.timeout(60)
def test_a_daemon_that_dies_frees_its_slots_for_the_others_at_once(project: Project) -> None:
    """Its slot is its lock: freed by its death, not by the recovery of its jobs (far off here)."""
    records = configure(project, "Sleep = 1\nRecordRun = 1", workers=1, rescan_seconds=60)
    marker = project.root / "long.pid"
    project.submit("Sleep", "handle", ["60", str(marker)])
    first = project.start()
    wait_for(marker.exists, 10, "the long job started on the first daemon")
    second = project.start()
    short = project.submit("Sleep", "handle", ["0"])
    time.sleep(1.0)
    assert not project.has("done", short), "the second daemon ran a job of a class at its limit"
    os.killpg(first.pid, signal.SIGKILL)
    killed = time.monotonic()
    first.wait(10)
    wait_for(lambda: project.has("done", short), 10, "the short job, once the dead daemon's slot was free")
    assert time.monotonic() - killed < 3.0
    assert project.stop(second)[0] == 0
    assert records.exists() is False  # RecordRun's limit is its own: nothing ran under it


def test_status_shows_each_limited_class_with_its_running_jobs(project: Project) -> None:
    import json

    configure(project, "Sleep = 2")
    marker = project.root / "long.pid"
    project.submit("Sleep", "handle", ["30", str(marker)])
    daemon = project.start()
    wait_for(marker.exists, 10, "the Sleep job running")
    status = json.loads(project.cli("status", "--json", "--config", str(project.config)).stdout)
    assert status["concurrency"] == [{"class": "Sleep", "limit": 2, "running": 1}]
    text = project.cli("status", "--config", str(project.config)).stdout
    assert "concurrency" in text and "Sleep" in text
    project.stop(daemon)
