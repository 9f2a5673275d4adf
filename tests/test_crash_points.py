"""Crash points (issue 4): SIGKILL or a failing `os` call at every step of claim, commit, retry and chain.

Each case runs a real daemon with one fault injected at the k-th spool call of one `os` function
(tests/faults/inject.py), then a clean daemon to the end, then checks the invariant: every job is in
exactly one state folder, none twice, nothing left in running/, and each ran at least once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project

INJECT = Path(__file__).parent / "faults" / "inject.py"


def scenario(project: Project) -> dict[str, str]:
    """Three jobs covering claim, commit, retry (no delay) and chain hand-off; returns id -> final folder."""
    # retry_attempts=3: a crash mid-run spends one retry (Orphaned) on top of the flaky job's own failure
    project.configure(retry_attempts=3, retry_delay_seconds=0, settle_seconds=0, workers=1)
    sentinel = project.root / "ran.txt"
    plain = project.submit("WriteSentinel", "handle", [str(sentinel), "plain"])
    flaky = project.submit("FailTimes", "handle", [str(project.root / "flaky.count"), "1"])
    step = {"class": "WriteSentinel", "params": [str(sentinel), "step"], "pass_result": False}
    chained = project.submit("WriteSentinel", "handle", [str(sentinel), "parent"], chain=[step])
    return {plain: "done", flaky: "done", chained: "done", f"{chained}-step1": "done"}


def run_faulty(project: Project, func: str, k: int, action: str) -> tuple[int, int]:
    """A daemon with one fault; returns (its exit code, the number of counted calls).

    A fault while the daemon makes its own folder ends it with exit 3 (the spool cannot be written),
    before it touched any job: reported as 0 here, since nothing is at stake.
    """
    counts = project.root / "counts"
    counts.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, str(INJECT), func, str(k), action, str(project.spool), str(counts), "--",
                           "start", "--drain", "--config", str(project.config)],
                          cwd=project.root, capture_output=True, text=True, timeout=60)
    if proc.returncode == 3 and "cannot use the spool" in proc.stderr and not project.log_lines():
        return 0, -1
    return proc.returncode, int(counts.read_text()) if counts.exists() else -1


def check_invariants(project: Project, expected: dict[str, str]) -> None:
    folders = ["high", "medium", "low", "scheduled", "running", "done", "failed", "rejected"]
    where: dict[str, list[str]] = {}
    for folder in folders:
        for name in project.names(folder):
            where.setdefault(name.removesuffix(".json"), []).append(folder)
    for job_id, folder in expected.items():
        assert where.get(job_id) == [folder], f"{job_id}: expected only in {folder}/, found in {where.get(job_id)}"
    assert set(where) == set(expected), f"unexpected files: {set(where) - set(expected)}"
    assert project.daemon_folders() == [], "a daemon folder was left in running/"
    ran = (project.root / "ran.txt").read_text().split()
    assert {"plain", "parent", "step"} <= set(ran)


FUNCS = ("rename", "link", "unlink", "fsync", "open", "write", "close")
ACTIONS = ("kill", "kill-after", "ENOSPC", "EIO", "EACCES", "ENOENT", "ESTALE", "ENOENT-after", "EEXIST-after")
# In `make test`: a SIGKILL before every rename, link, unlink and fsync on the spool, an I/O error at
# every link and fsync, and a stale NFS handle at every third open (the stride). `make soak`
# (pytest -m soak) runs the whole matrix at every call.
FAST = {**{(func, "kill"): 1 for func in ("rename", "link", "unlink", "fsync")},
        ("link", "EIO"): 1, ("fsync", "EIO"): 1, ("open", "ESTALE"): 3}
CASES = [pytest.param(func, action, FAST.get((func, action), 1),
                      marks=() if (func, action) in FAST else pytest.mark.soak)
         for func in FUNCS for action in ACTIONS]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("func", "action", "stride"), CASES)
def test_a_fault_at_any_spool_call_loses_and_duplicates_nothing(project: Project, func: str, action: str,
                                                                stride: int) -> None:
    """SIGKILL: the next daemon recovers. An error: the daemon survives, retries, and finishes."""
    expected = scenario(project)
    code, total = run_faulty(project, func, 0, "count")
    assert code == 0 and total > 0
    check_invariants(project, expected)
    for k in range(1, total + 1, stride):
        case = Project(project.root.parent / f"{func}-{k}-{action}")
        _copy_app(project, case)
        expected = scenario(case)
        code, _ = run_faulty(case, func, k, action)
        if action.startswith("kill"):
            assert code in (0, -9), f"{func} #{k} {action}: exit {code}"
        else:
            assert code == 0, f"{func} #{k} {action}: the daemon did not survive (exit {code})"
        assert case.drain().returncode == 0
        check_invariants(case, expected)


def _copy_app(source: Project, target: Project) -> None:
    import shutil

    target.root.mkdir(parents=True)
    shutil.copytree(source.root / "jobs", target.root / "jobs", ignore=shutil.ignore_patterns("__pycache__"))


SUBMIT_FAULTS = [pytest.param(func, action, marks=() if action in ("kill", "EIO") else pytest.mark.soak)
                 for func in ("open", "write", "fsync", "link", "unlink", "close")
                 for action in ("kill", "kill-after", "EIO", "ENOSPC", "EEXIST-after")]


@pytest.mark.parametrize(("func", "action"), SUBMIT_FAULTS)
def test_a_fault_while_submitting_never_exposes_a_partial_job(project: Project, func: str, action: str) -> None:
    """Killed or failing at any call of `spoold submit`: the job is complete in high/, or absent (exit 3)."""
    for k in range(1, 12):
        counts = project.root / "counts"
        proc = subprocess.run([sys.executable, str(INJECT), func, str(k), action, str(project.spool), str(counts),
                               "--", "submit", "Echo", "handle", f"k{k}", "--priority", "high",
                               "--config", str(project.config)],
                              cwd=project.root, capture_output=True, text=True, timeout=60)
        ready = project.names("high")
        if proc.returncode == 0:
            job_id = proc.stdout.split()[0]
            assert f"{job_id}.json" in ready and project.doc("high", job_id)["params"] == [f"k{k}"]
        else:
            assert proc.returncode in (3, -9), f"{func} #{k} {action}: exit {proc.returncode} {proc.stderr}"
        for name in ready:  # never a partial file where a daemon would look
            assert project.doc("high", name.removesuffix(".json"))["class"] == "Echo"
        if counts.exists() and int(counts.read_text()) < k:
            break  # past the last call of this function: every crash point was tried
    assert project.drain().returncode == 0
    assert project.names("high") == [] and project.names("rejected") == []
