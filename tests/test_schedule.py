"""Periodic jobs (SPEC §12, issue 13): each slot submitted once per spool, however many daemons run, die
and come back, and whatever one host's clock says.

Real daemons on one spool; what ran comes from the jobs' own records (tests/jobs RecordRun: the job id
the child was given, its pid, start and end), never from the daemon's logs.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Project, wait_for

from spoold.periodic import Entry, latest_due, slot_id
from spoold.spool.slots import BASELINE, stamp

INJECT = Path(__file__).parent / "faults" / "inject.py"
# Debian's faketime package (.ci/run installs it), for whatever architecture this is.
DECADE = 3650 * 86400.0  # an `every = "3650d"` entry: slots ten years apart, none falls due during a test
FAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), Path("libfaketime.so.1"))


def configure(project: Project, every: str, *, name: str = "tick", **overrides: object) -> Path:
    """A project whose [schedule] has one RecordRun entry; returns the file its runs are recorded in."""
    records = project.root / "records.txt"
    entry = f'{name} = {{ class = "RecordRun", params = ["{records}"], every = "{every}" }}'
    project.configure(extra=f'RecordRun = ["handle"]\n\n[schedule]\n{entry}\n', settle_seconds=0,
                      rescan_seconds=1, **overrides)
    return records


def runs(records: Path) -> collections.Counter[str]:
    """Runs per job id, as the jobs recorded them."""
    if not records.exists():
        return collections.Counter()
    return collections.Counter(line.split()[0] for line in records.read_text(encoding="utf-8").splitlines())


def slot_time(job_id: str) -> float:
    return datetime.strptime(job_id.rsplit("-", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def marker_folder(project: Project, name: str = "tick") -> Path:
    return project.spool / "markers" / "schedule" / name


def mark(project: Project, due: float, name: str = "tick") -> None:
    """A marker as a daemon leaves it: the slot `due` was taken (here, a first marker that submitted nothing)."""
    folder = marker_folder(project, name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stamp(due)}.json").write_bytes(BASELINE)


def cron_files(project: Project) -> list[str]:
    """Every file of a slot job anywhere in the spool but the markers, relative to the spool."""
    return sorted(str(p.relative_to(project.spool)) for p in project.spool.rglob("*cron-*")
                  if "markers" not in p.parts)


def check_each_slot_once(project: Project, records: Path, *, contiguous: float | None = None,
                         until: float | None = None) -> list[str]:
    """Every slot's job in done/ exactly once and nowhere else; run once (twice only if a run was orphaned);
    with `contiguous` (the interval), no slot missing between the first and the last (the last due by
    `until`, if given: a host whose clock is ahead takes later ones early). Returns the ids."""
    done = sorted(n.removesuffix(".json") for n in project.names("done") if n.startswith("cron-"))
    assert cron_files(project) == [f"done/{job_id}.json" for job_id in done], "a slot job outside done/, or twice"
    for job_id in done:
        assert "source_name" not in project.doc("done", job_id), f"{job_id}: a second copy under a fresh id"
    counted = runs(records)
    assert set(counted) == set(done), f"runs {sorted(counted)} != done {done}"
    for job_id, count in counted.items():
        orphaned = any(h.get("error_type") == "Orphaned" for h in project.doc("done", job_id).get("history", []))
        assert count == 1 or (orphaned and count == 2), f"{job_id} ran {count} times"
    if contiguous is not None and done:
        times = [slot_time(job_id) for job_id in done if until is None or slot_time(job_id) <= until]
        assert times == [times[0] + n * contiguous for n in range(len(times))], f"slots missing: {done}"
    return done


def wait_runs(records: Path, count: int, timeout: float) -> None:
    wait_for(lambda: len(runs(records)) >= count, timeout, f"{count} slot jobs run")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("daemons", [1, 2, 4])
def test_each_slot_runs_exactly_once_however_many_daemons_run(project: Project, daemons: int) -> None:
    records = configure(project, "2s", workers=1)
    procs = [project.start() for _ in range(daemons)]
    wait_runs(records, 3, 30)
    for proc in procs:
        assert project.stop(proc)[0] == 0
    done = check_each_slot_once(project, records, contiguous=2.0)
    assert len(done) >= 3
    first = datetime.fromisoformat(project.doc("done", done[0])["due_at"]).timestamp()
    assert first == slot_time(done[0]) and project.doc("done", done[0])["schedule"] == "tick"
    markers = sorted(os.listdir(marker_folder(project)))
    assert markers[1:] == [f"{job_id.rsplit('-', 1)[1]}.json" for job_id in done], "one marker per slot"
    assert json.loads((marker_folder(project) / markers[0]).read_bytes()) == {"baseline": True}


@pytest.mark.timeout(120)
def test_daemons_killed_and_restarted_around_the_due_times_submit_no_slot_twice(project: Project) -> None:
    records = configure(project, "1s", workers=1, retry_attempts=3)  # a run a kill orphaned runs again
    procs = [project.start(), project.start()]
    rng = random.Random(1213)
    until = time.monotonic() + 10
    kills = 0
    while time.monotonic() < until:
        time.sleep(rng.uniform(0.3, 0.9))
        victim = procs.pop(rng.randrange(len(procs)))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        kills += 1
        procs.append(project.start())
    # A daemon's own folder (its pid is in its id) shows once its signal handlers are in: a SIGHUP
    # before that would end it. Dead daemons' folders may still be there, so each is looked for by pid.
    wait_for(lambda: all(any(f"-{proc.pid}-" in f.name for f in project.daemon_folders()) for proc in procs), 10,
             "every daemon started")
    project.configure(extra='RecordRun = ["handle"]\n', settle_seconds=0, rescan_seconds=1, workers=1,
                      retry_attempts=3)
    for proc in procs:  # no more slots: what the kills left must now settle
        proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(project.daemon_folders()) == len(procs) and project.names("running") == []
             and not any(project.names(folder) for folder in ("high", "medium", "low")), 30,
             "the killed daemons' slots recovered and run")
    for proc in procs:
        assert project.stop(proc)[0] == 0
    done = check_each_slot_once(project, records)
    assert kills >= 10 and len(done) >= 6, (kills, done)


def test_after_a_downtime_only_the_latest_missed_slot_runs_once(project: Project) -> None:
    records = configure(project, "2s", workers=1)
    entry = Entry("tick", "RecordRun", every=2.0)
    before = latest_due(entry, time.time())
    assert before is not None
    mark(project, before - 10)  # the last slot taken before every daemon stopped: 5 slots ago
    proc = project.start()
    wait_runs(records, 1, 15)
    assert project.stop(proc)[0] == 0
    done = check_each_slot_once(project, records)
    assert slot_time(done[0]) >= before, f"an older missed slot ran: {done}"
    assert all(slot_time(job_id) >= before for job_id in done)


def test_a_new_entry_starts_with_its_next_slot_and_purging_done_resubmits_nothing(project: Project) -> None:
    records = configure(project, "3650d")  # slots ten years apart on the epoch grid: none falls due here
    entry = Entry("tick", "RecordRun", every=3650 * 86400.0)
    due = latest_due(entry, time.time())
    assert due is not None
    proc = project.start()
    wait_for(lambda: marker_folder(project).is_dir() and os.listdir(marker_folder(project)), 10, "a first marker")
    time.sleep(1.5)  # a few passes
    assert project.stop(proc)[0] == 0
    assert runs(records) == collections.Counter() and cron_files(project) == []
    assert os.listdir(marker_folder(project)) == [f"{stamp(due)}.json"]

    shutil.rmtree(marker_folder(project))
    mark(project, due - 3650 * 86400)  # as if the entry had run ten years ago: its latest slot is missed
    proc = project.start()
    wait_runs(records, 1, 15)
    wait_for(lambda: project.names("done"), 5, "the slot job in done/")
    assert project.stop(proc)[0] == 0
    assert check_each_slot_once(project, records) == [slot_id("tick", due)]
    (project.spool / "done" / f"{slot_id('tick', due)}.json").unlink()  # purged
    proc = project.start()
    time.sleep(1.5)
    assert project.stop(proc)[0] == 0
    assert len(runs(records)) == 1 and cron_files(project) == []


def test_drain_submits_no_slot(project: Project) -> None:
    records = configure(project, "3650d")
    due = latest_due(Entry("tick", "RecordRun", every=3650 * 86400.0), time.time())
    assert due is not None
    mark(project, due - 3650 * 86400)
    assert project.drain().returncode == 0
    assert runs(records) == collections.Counter() and cron_files(project) == []
    assert len(os.listdir(marker_folder(project))) == 1


def test_sighup_reloads_the_schedule(project: Project) -> None:
    records = project.root / "records.txt"
    project.configure(extra='RecordRun = ["handle"]\n', settle_seconds=0, rescan_seconds=1)
    proc = project.start()
    time.sleep(0.5)
    configure(project, "1s")
    proc.send_signal(signal.SIGHUP)
    wait_runs(records, 2, 15)
    project.configure(extra='RecordRun = ["handle"]\n', settle_seconds=0, rescan_seconds=1)
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)  # a slot job submitted before the reload may still be running
    settled = len(runs(records))
    time.sleep(2.5)
    assert project.stop(proc)[0] == 0
    assert len(runs(records)) == settled, "the removed entry still submits"
    check_each_slot_once(project, records)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("offset", ["+10s", "-10s"])
def test_a_host_whose_clock_is_10s_off_never_takes_a_slot_twice(project: Project, offset: str) -> None:
    """One daemon under libfaketime (its wall clock shifted; its monotonic clock is the real one): ahead,
    it takes the slots early; behind, it finds them all taken."""
    assert FAKETIME.exists(), f"{FAKETIME} is missing: apt-get install faketime (.ci/run does)"
    records = configure(project, "2s", workers=1)
    normal = project.start()
    shim = str(Path(__file__).parent / "clockshift")  # time.sleep that works under libfaketime (see there)
    env = dict(project.env(), LD_PRELOAD=str(FAKETIME), FAKETIME=offset, FAKETIME_DONT_FAKE_MONOTONIC="1",
               PYTHONPATH=os.pathsep.join(filter(None, [shim, os.environ.get("PYTHONPATH")])))
    shifted = subprocess.Popen([sys.executable, "-m", "spoold", "start", "--config", str(project.config)],
                               cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    project.procs.append(shifted)
    wait_for(lambda: len(project.daemon_folders()) == 2, 10, "both daemons in running/")
    wait_runs(records, 8, 40)
    stopped = time.time()
    code, out_shifted = project.stop(shifted)
    assert code == 0, out_shifted
    code, out_normal = project.stop(normal)
    assert code == 0
    done = check_each_slot_once(project, records, contiguous=2.0, until=stopped - 1)
    by_shifted = [job_id for job_id in done if f"submitted as job {job_id}" in out_shifted]
    by_normal = [job_id for job_id in done if f"submitted as job {job_id}" in out_normal]
    assert sorted(by_shifted + by_normal) == done, (by_shifted, by_normal)
    if offset.startswith("+"):
        assert by_shifted, f"the host 10 s ahead took no slot: {done}"
    else:
        assert by_shifted == [], f"the host 10 s behind took slots the other had taken: {by_shifted}"


# -- a fault at every step of taking a slot -----------------------------------------------------------------


def _slot_scenario(project: Project) -> tuple[Path, str]:
    records = configure(project, "3650d", workers=1, retry_attempts=2)  # a run the kill orphaned runs again
    due = latest_due(Entry("tick", "RecordRun", every=DECADE), time.time())
    assert due is not None
    mark(project, due - DECADE)
    return records, slot_id("tick", due)


def _faulty_daemon(project: Project, func: str, k: int, action: str, job_id: str) -> int:
    """A daemon with one fault, until it dies of it or its slot job is done; returns its call count."""
    counts = project.root / "counts"
    counts.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(INJECT), func, str(k), action, str(project.spool), str(counts), "--",
                             "start", "--config", str(project.config)], cwd=project.root, env=project.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or project.has("done", job_id), 20, "a death or the job done")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return int(counts.read_text()) if counts.exists() else -1


SLOT_FAULTS = [pytest.param(func, action, marks=() if action == "kill" and func in ("link", "rename") else
                            pytest.mark.soak)
               for func in ("link", "rename", "fsync", "unlink", "open", "write")
               for action in ("kill", "kill-after")]


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("func", "action"), SLOT_FAULTS)
def test_a_daemon_killed_at_any_step_of_taking_a_slot_leaves_it_run_once(project: Project, func: str,
                                                                         action: str) -> None:
    """SIGKILL before (or after) each spool call of a daemon that takes one slot; then a clean daemon:
    the slot's job is in done/ exactly once, run once (twice only if the kill orphaned its run)."""
    records, job_id = _slot_scenario(project)
    total = _faulty_daemon(project, func, 0, "count", job_id)
    assert total > 0 and project.has("done", job_id)
    for k in range(1, total + 1):
        case = Project(project.root.parent / f"{func}-{action}-{k}")
        case.root.mkdir()
        shutil.copytree(project.root / "jobs", case.root / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
        records, job_id = _slot_scenario(case)
        _faulty_daemon(case, func, k, action, job_id)
        clean = case.start()
        try:
            wait_for(lambda case=case, job_id=job_id: case.has("done", job_id), 20,
                     f"{func} #{k} {action}: the slot's job done")
            time.sleep(0.3)  # a second copy, if any, would show by now
        finally:
            assert case.stop(clean)[0] == 0
        assert check_each_slot_once(case, records) == [job_id], f"{func} #{k} {action}"
        assert case.daemon_folders() == [], f"{func} #{k} {action}: a daemon folder left"
        assert len(os.listdir(marker_folder(case))) == 2, f"{func} #{k} {action}: markers"


def test_status_lists_the_schedule_with_its_next_due_time_and_last_slots_job(project: Project) -> None:
    records = configure(project, "3650d")
    due = latest_due(Entry("tick", "RecordRun", every=DECADE), time.time())
    assert due is not None
    listed = json.loads(project.cli("status", "--json", "--config", str(project.config)).stdout)["schedule"]
    upcoming = datetime.fromtimestamp(due + DECADE, UTC).isoformat()
    assert listed == [{"name": "tick", "class": "RecordRun", "method": "handle", "when": "every 3650d",
                       "next_due": upcoming, "last": None}]
    mark(project, due - DECADE)
    proc = project.start()
    wait_runs(records, 1, 15)
    wait_for(lambda: project.has("done", slot_id("tick", due)), 5, "the slot's job in done/")
    assert project.stop(proc)[0] == 0
    listed = json.loads(project.cli("status", "--json", "--config", str(project.config)).stdout)["schedule"]
    assert listed[0]["last"] == {"due": datetime.fromtimestamp(due, UTC).isoformat(), "id": slot_id("tick", due),
                                 "state": "done"}
    text = project.cli("status", "--config", str(project.config)).stdout
    assert "schedule" in text and "every 3650d" in text and f"{slot_id('tick', due)} (done)" in text
