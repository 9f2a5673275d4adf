"""`spoold status --check [--max-age S]` (SPEC §6, §10): the exit code and one line a monitoring probe reads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from conftest import Project, read_pid, wait_for

WAITING = re.compile(r"(\d+) ready jobs?, the oldest waiting (\d+\.\d)s")


def check(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return project.cli("status", "--check", *args, "--config", str(project.config))


def waited(line: str) -> float:
    """The oldest ready job's age as the line states it (one decimal)."""
    found = WAITING.search(line)
    assert found, line
    return float(found.group(2))


def submit_aged(project: Project, seconds: float) -> str:
    """A ready job that has waited at least `seconds` when this returns (its age is the point, not a wait)."""
    job_id = project.submit("Echo", "handle", ["waiting"])
    time.sleep(seconds)
    return job_id


def test_a_live_daemon_passes_the_check(project: Project) -> None:
    daemon = project.start()
    done = check(project)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok: 1 daemon alive; no ready job\n", "")
    with_age = check(project, "--max-age", "60")
    assert (with_age.returncode, with_age.stdout) == (0, "ok: 1 daemon alive; no ready job\n")
    second = project.start()
    wait_for(lambda: len(project.daemon_folders()) == 2, 10, "two daemon folders")
    assert check(project).stdout == "ok: 2 daemons alive; no ready job\n"
    for proc in (daemon, second):
        code, out = project.stop(proc)
        assert code == 0, out


def test_an_empty_spool_that_no_daemon_ever_served_fails_with_1(project: Project) -> None:
    assert not project.spool.exists()
    done = check(project)
    assert (done.returncode, done.stdout) == (1, f"no daemon alive on {project.spool}; no ready job\n")


def test_a_sigkilled_daemon_is_dead_and_its_ready_jobs_are_counted(project: Project) -> None:
    daemon = project.start()
    [folder] = project.daemon_folders()
    daemon.kill()
    daemon.wait(timeout=10)
    assert folder.is_dir()  # its folder stays, but nobody holds its lock
    submit_aged(project, 0.3)
    project.submit("Echo", "handle", ["second"])
    done = check(project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(f"no daemon alive on {project.spool}; 2 ready jobs, the oldest waiting ")
    assert waited(done.stdout) >= 0.3
    # No daemon wins over a backlog: exit 1, not 4, even past --max-age.
    late = check(project, "--max-age", "0.1")
    assert late.returncode == 1 and late.stdout.startswith("no daemon alive on "), late.stdout


def test_a_paused_daemon_holding_its_lock_is_alive_but_backed_up(project: Project) -> None:
    daemon = project.start()
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        submit_aged(project, 0.6)
        backed_up = check(project, "--max-age", "0.5")
        assert backed_up.returncode == 4, backed_up.stdout + backed_up.stderr
        assert re.fullmatch(r"backed up: 1 ready job, the oldest waiting \d+\.\ds, over --max-age 0\.5s; "
                            r"1 daemon alive\n", backed_up.stdout), backed_up.stdout
        assert waited(backed_up.stdout) >= 0.6
        assert check(project).returncode == 0  # without --max-age, an alive daemon is all it asks
        patient = check(project, "--max-age", "3600")
        assert patient.returncode == 0 and patient.stdout.startswith("ok: 1 daemon alive; 1 ready job, "), \
            patient.stdout
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    wait_for(lambda: not project.names("medium") and len(project.names("done")) == 1, 10, "the job ran")
    assert check(project, "--max-age", "0.5").stdout == "ok: 1 daemon alive; no ready job\n"
    code, out = project.stop(daemon)
    assert code == 0, out


def test_workers_busy_on_long_jobs_back_the_spool_up(project: Project, tmp_path: Path) -> None:
    project.configure(workers=1, shutdown_grace_seconds=0.5)
    daemon = project.start()
    project.submit("Sleep", "handle", ["30", str(tmp_path / "sleep.pid")])
    read_pid(tmp_path / "sleep.pid")
    submit_aged(project, 0.6)
    backed_up = check(project, "--max-age", "0.5")
    assert backed_up.returncode == 4, backed_up.stdout + backed_up.stderr
    assert backed_up.stdout.startswith("backed up: 1 ready job, the oldest waiting "), backed_up.stdout
    assert check(project, "--max-age", "3600").returncode == 0
    # --json with --check: the status object, the verdict added under "check", the same exit code.
    as_json = check(project, "--max-age", "0.5", "--json")
    assert as_json.returncode == 4
    status = json.loads(as_json.stdout)
    assert status["daemons"][0]["busy"] == 1 and status["counts"]["medium"] == 1
    assert status["check"]["exit"] == 4 and status["check"]["message"].startswith("backed up: 1 ready job")
    code, out = project.stop(daemon)
    assert code == 0, out


def test_max_age_without_check_or_with_a_bad_value_is_a_usage_error(project: Project) -> None:
    alone = project.cli("status", "--max-age", "5", "--config", str(project.config))
    assert (alone.returncode, alone.stdout, alone.stderr) == (2, "", "spoold: status: --max-age needs --check\n")
    for bad in ("soon", "-1", "nan", "inf"):
        refused = check(project, "--max-age", bad)
        assert refused.returncode == 2, bad
        assert refused.stderr.splitlines()[-1] == (
            f"spoold status: error: argument --max-age: expected a number of seconds >= 0, got {bad}")
