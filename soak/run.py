"""`make soak`: long scenarios with real daemons on temp spools, then one summary table.

    .venv/bin/python soak/run.py [--only NAME,...] [--scale F] [--keep] [--seed N]

Scenarios (each bounded in time; every process it starts is reaped, also on failure):
  many-daemons   4 daemons x 2 workers, 5,000 jobs, no fault: each job in done/ once, run exactly once
  kill-halfway   the same, one daemon SIGKILLed at half and restarted: runs twice only for jobs it held
  crash-loop     3 daemons, 2,000 jobs, a random daemon SIGKILLed and replaced every ~2 s until all done
  crash-loop-workers  the same in isolation = "worker" (the daemon talks to its workers on their own pipes)
  burst-50k      50,000 files renamed into medium/ while one daemon runs (file_events = true)
  memory         one daemon, 10,000 no-op jobs: RSS after the first 100 and at the end, growth <= 20 MiB
  crash-points   pytest tests/test_crash_points.py (every fault point, every action)
  multihost      3 hosts x 2 daemons on a GlusterFS volume (tests/sharedfs.py), 3,000 jobs per fault:
                 a daemon SIGKILLed, one SIGSTOPped past its lease, one host cut off (tests/multihost.py)
  schedule       4 daemons, a [schedule] entry every second for 3 minutes, a daemon SIGKILLed every 2-4 s:
                 every slot submitted and run once (tests/test_schedule.py's checks)
  power-loss     120 power cuts (tests/powerloss.py on tests/crashfs.py): 1-2 daemons and a submitter killed
                 at a random moment, what was not fsynced dropped, a drain: no job lost, none recorded twice

Jobs append their own token to a sentinel file (tests/jobs WriteSentinel), so runs are counted per job.
Prints the table and writes it as JSON to soak/results/latest.json; exits 1 if any scenario failed
(a job lost, a job run twice without a crash, a daemon dying by itself, a timeout, memory growth).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import (
    JOB_FOLDERS,
    REPO,
    SEIZED,
    DaemonDied,
    Result,
    SoakProject,
    check_outcome,
    executions,
    fork_server_of,
    kill_under,
    log_statuses,
    placement,
    rss_kib,
    stop_all,
    wait_all_done,
)

from spoold.daemon.loop import COMMIT_WINDOW

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 1024  # KiB
MEMORY_LIMIT_KIB = 20 * MIB
CRASH_EVERY = (1.5, 2.5)  # seconds between kills in the crash loop
WORKERS = 2  # per daemon, in every scenario
WARMUP = 300  # burst: jobs run first through the same daemon to measure its rate with no backlog


@dataclass
class Context:
    root: Path
    scale: float
    rng: random.Random
    burst_limit: float  # seconds: above this projected time the burst is run for a bounded time only
    burst_bound: float  # seconds of the bounded burst run
    crash_points_timeout: float
    projects: list[SoakProject] = field(default_factory=list)

    def n(self, full: int) -> int:
        return max(20, int(full * self.scale))

    def project(self, name: str) -> SoakProject:
        project = SoakProject(self.root / name)
        self.projects.append(project)
        return project

    def reap(self) -> None:
        while self.projects:
            self.projects.pop().reap()


def deadline_for(jobs: int, floor_rate: float = 5.0) -> float:
    """A time bound that assumes at least `floor_rate` jobs/s (a 2-core machine does 70-200 per daemon set)."""
    return time.monotonic() + 90 + jobs / floor_rate


def submit_sentinel_jobs(project: SoakProject, sentinel: Path, count: int) -> dict[str, str]:
    """`count` WriteSentinel jobs through the Python API; token -> job id."""
    return {f"j{n}": project.submit("WriteSentinel", "handle", [str(sentinel), f"j{n}"]) for n in range(count)}


def daemons_that_worked(project: SoakProject, ids: list[str]) -> int:
    nodes = set()
    for job_id in ids:
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            nodes.add(project.doc("done", job_id)["history"][-1]["node"])
    return len(nodes)


# -- 1 and 2: four daemons, with and without a SIGKILL halfway ---------------------------------------------


def many_daemons(ctx: Context, result: Result, *, kill_halfway: bool) -> None:
    n = result.jobs = ctx.n(5000)
    project = ctx.project(result.scenario)
    # retry_attempts=1: the runs a kill orphans fail once (Orphaned) and run again
    project.configure(workers=WORKERS, rescan_seconds=2, retry_attempts=1 if kill_halfway else 0)
    sentinel = project.root / "ran.txt"
    try:
        daemons = [project.start() for _ in range(4)]
        started = time.monotonic()
        tokens = submit_sentinel_jobs(project, sentinel, n)
        result.details["submit_seconds"] = round(time.monotonic() - started, 1)
        deadline = deadline_for(n)
        held: set[str] | None = None
        if kill_halfway:
            if not wait_all_done(project, n // 2, deadline, result.scenario):
                result.fail(f"timeout: half of {n} not done in time")
            held = project.crash(daemons[0])
            result.faults += 1
            project.start()
            result.restarts += 1
            result.details["held_by_the_killed_daemon"] = sorted(held)
        if not wait_all_done(project, n, deadline, result.scenario):
            result.fail(f"timeout: {project.done_count()}/{n} done at the deadline")
        result.details["jobs_per_second"] = round(n / (time.monotonic() - started), 1)
    finally:
        stop_all(result, project)
    check_outcome(result, project, tokens, sentinel, held)
    statuses = log_statuses(project)
    result.details["log_statuses"] = dict(statuses)
    result.details["daemons_that_worked"] = daemons_that_worked(project, list(tokens.values()))
    result.verified = ("each job in done/ exactly once, nothing else in the spool, "
                       + ("run >= 1 time; twice only if the killed daemon held it" if kill_halfway
                          else "each run exactly once (sentinel)"))


# -- 3: a crash loop --------------------------------------------------------------------------------------


def crash_loop(ctx: Context, result: Result, *, isolation: str = "process", durability: str = "fsync",
               jobs: int = 2000) -> None:
    n = result.jobs = ctx.n(jobs)
    project = ctx.project(result.scenario)
    # every kill orphans up to 2 runs, each costing one retry (Orphaned): a budget no job can spend here
    project.configure(workers=WORKERS, rescan_seconds=1, retry_attempts=50)
    # workers: the daemon holds their pipes when it is killed; fast: its commits write into its helper's
    # blanks, whose second names in tmp/ it may hold back when killed (spoold/spool/blanks.py)
    project.set_keys(isolation=f'"{isolation}"', durability=f'"{durability}"')
    sentinel = project.root / "ran.txt"
    held: set[str] = set()
    next_kill = time.monotonic() + ctx.rng.uniform(*CRASH_EVERY)

    def maybe_kill(done: int) -> None:
        nonlocal next_kill
        if time.monotonic() < next_kill:
            return
        held.update(project.crash(ctx.rng.choice(project.live())))
        result.faults += 1
        project.start()
        result.restarts += 1
        next_kill = time.monotonic() + ctx.rng.uniform(*CRASH_EVERY)

    tokens: dict[str, str] = {}
    errors: list[BaseException] = []

    def submit_all() -> None:  # in a thread, so the kills start with the first jobs
        try:
            tokens.update(submit_sentinel_jobs(project, sentinel, n))
        except BaseException as e:  # handed to the main thread
            errors.append(e)

    try:
        for _ in range(3):
            project.start()
        started = time.monotonic()
        submitter = threading.Thread(target=submit_all, name="submit", daemon=True)
        submitter.start()
        if not wait_all_done(project, n, deadline_for(n), result.scenario, on_tick=maybe_kill):
            result.fail(f"timeout: {project.done_count()}/{n} done at the deadline")
        submitter.join(timeout=60)
        if errors or submitter.is_alive():
            raise RuntimeError(f"submitting failed: {errors or 'still submitting'}")
        result.details["jobs_per_second"] = round(n / (time.monotonic() - started), 1)
    finally:
        stop_all(result, project)
    check_outcome(result, project, tokens, sentinel, held)
    result.details["log_statuses"] = dict(log_statuses(project))
    result.verified = ("each job in done/ exactly once, nothing else in the spool, run >= 1 time; "
                       "twice only if a killed daemon held it")


# -- 4: a burst of 50,000 files -----------------------------------------------------------------------------


def write_jobs(project: SoakProject, sentinel: Path, count: int, prefix: str) -> tuple[dict[str, str], float | None]:
    """Write each job in tmp/ and rename it into medium/ (SPEC §2), as fast as Python goes; returns
    token -> id in writing order and, if seen while writing, the seconds from the first rename to the first run."""
    tmp, medium = project.spool / "tmp", project.spool / "medium"
    tokens: dict[str, str] = {}
    first_run, t0, size0 = None, time.monotonic(), file_size(sentinel)
    for n in range(count):
        token, job_id = f"{prefix}{n}", f"{prefix}-{n:05d}"
        doc = {"class": "WriteSentinel", "method": "handle", "params": [str(sentinel), token]}
        part = tmp / f".{job_id}.part"
        part.write_text(json.dumps(doc), encoding="utf-8")
        os.rename(part, medium / f"{job_id}.json")
        tokens[token] = job_id
        if first_run is None and n % 100 == 0 and file_size(sentinel) > size0:
            first_run = time.monotonic() - t0
    return tokens, first_run


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def status_snapshot(project: SoakProject, daemon: subprocess.Popen[str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """`spoold status --json` and our own look at every file, with the daemon paused (SIGSTOP), so no file
    moves while the folders are counted."""
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        out = project.cli("status", "--json", "--config", str(project.config), timeout=120)
        where = placement(project.spool)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    if out.returncode != 0:
        raise RuntimeError(f"spoold status --json exited {out.returncode}: {out.stderr}")
    value: dict[str, Any] = json.loads(out.stdout)
    return value, where


def burst(ctx: Context, result: Result) -> None:
    """A warm-up of WARMUP jobs gives the daemon's rate with no backlog; then the burst, all at once."""
    n = result.jobs = ctx.n(50000)
    project = ctx.project(result.scenario)
    project.configure(top={"file_events": True}, workers=WORKERS, rescan_seconds=5, settle_seconds=0.5)
    sentinel = project.root / "ran.txt"
    try:
        daemon = project.start()
        t0 = time.monotonic()
        tokens, _ = write_jobs(project, sentinel, WARMUP, "warm")
        if not wait_all_done(project, WARMUP, t0 + 120, result.scenario):
            raise RuntimeError(f"the {WARMUP} warm-up jobs were not done within 120s")
        baseline = WARMUP / (time.monotonic() - t0)
        result.details["rate_without_backlog_jobs_per_second"] = round(baseline, 1)
        t0, size0 = time.monotonic(), file_size(sentinel)
        burst_tokens, first_run = write_jobs(project, sentinel, n, "b")
        tokens |= burst_tokens
        written = time.monotonic() - t0
        while first_run is None and time.monotonic() - t0 < written + 30:
            if file_size(sentinel) > size0:
                first_run = time.monotonic() - t0
            time.sleep(0.05)
        result.details.update(write_seconds=round(written, 1), first_run_after_seconds=first_run)
        if first_run is None or first_run > 10:
            result.fail(f"first job ran {first_run} s after the first file landed (expected within 10 s)")
        check_burst_status(result, status_snapshot(project, daemon), WARMUP + n)
        full = run_burst(ctx, result, project, n, t0)
    finally:
        stop_all(result, project)
    result.details["log_statuses"] = dict(log_statuses(project))
    rate = result.details["jobs_per_second"]
    if rate < baseline / 4:
        result.warn(f"throughput with the {n}-file backlog is {rate} jobs/s, {100 * rate / baseline:.0f}% of the "
                    f"same daemon's {baseline:.1f} jobs/s with no backlog ({WARMUP} warm-up jobs)")
    if full:
        check_outcome(result, project, tokens, sentinel, None)
        result.verified = (f"all {n} burst files (+{WARMUP} warm-up) in done/ exactly once, each run exactly once; "
                           f"status --json right after the burst matched the files ({WARMUP + n} jobs); first "
                           f"burst job ran {first_run:.2f}s after the first file; {result.details['jobs_per_second']} "
                           f"jobs/s with the backlog, {baseline:.0f} without")
    else:
        check_partial_burst(result, project, tokens, sentinel)


def check_burst_status(result: Result, snapshot: tuple[dict[str, Any], dict[str, list[str]]], n: int) -> None:
    """status --json counts the files of each folder as they are; every job is there once, except those the
    daemon was committing. A commit seizes the claimed copy (renames it to its hidden name), publishes the new
    version, then removes the seized copy: a job mid-commit is seen seized only, or seized beside its new
    state (design H3, P7). At most COMMIT_WINDOW jobs per worker wait to be committed, plus one running each."""
    status, where = snapshot
    counts = status["counts"]
    files = collections.Counter(folder for folders in where.values() for folder in folders)
    result.details["status_after_burst"] = counts
    wrong = {folder: (counts[folder], files[folder]) for folder in JOB_FOLDERS if counts[folder] != files[folder]}
    if wrong:
        result.fail(f"status --json counts differ from the files (status, files): {wrong}")
    if len(where) != n or counts["rejected"] or counts["failed"] or counts["scheduled"]:
        result.fail(f"after the burst {len(where)} distinct jobs, expected {n}: {counts}")
    mid_commit = {job_id: folders for job_id, folders in where.items() if len(folders) > 1 or SEIZED in folders}
    result.details["mid_commit"] = len(mid_commit)
    if len(mid_commit) > WORKERS * (COMMIT_WINDOW + 1) or any(
            folders != [SEIZED] and (SEIZED not in folders or len(folders) != 2) for folders in mid_commit.values()):
        result.fail(f"jobs in two folders besides a commit in progress: {mid_commit}")
    if len(status["daemons"]) != 1:
        result.fail(f"status --json lists {len(status['daemons'])} daemons, expected 1")


def run_burst(ctx: Context, result: Result, project: SoakProject, n: int, t0: float) -> bool:
    """Run to the end if the measured rate says it fits in ctx.burst_limit, else for ctx.burst_bound
    seconds; returns True when every job is done."""
    probe = min(90.0, ctx.burst_bound / 2)
    target = WARMUP + n
    wait_all_done(project, target, time.monotonic() + probe, result.scenario)
    elapsed, done = time.monotonic() - t0, project.done_count() - WARMUP
    rate = done / elapsed if elapsed else 0.0
    projected = n / rate if rate else float("inf")
    result.details.update(probe_rate_jobs_per_second=round(rate, 1), projected_total_seconds=round(projected),
                          burst_limit_seconds=ctx.burst_limit)
    full = projected <= ctx.burst_limit
    until = t0 + (ctx.burst_limit * 1.5 if full else ctx.burst_bound)
    print(f"  [{result.scenario}] {rate:.1f} jobs/s, projected {projected / 60:.1f} min: "
          f"{'running to the end' if full else f'bounded run of {ctx.burst_bound:.0f}s'}", flush=True)
    finished = wait_all_done(project, target, until, result.scenario)
    elapsed, done = time.monotonic() - t0, project.done_count() - WARMUP
    result.details.update(done_at_stop=done, run_seconds=round(elapsed, 1),
                          jobs_per_second=round(done / elapsed, 1), mode="full" if full else "bounded")
    if full and not finished:
        result.fail(f"timeout: {done}/{n} done after {elapsed:.0f}s")
    return finished


def check_partial_burst(result: Result, project: SoakProject, tokens: dict[str, str], sentinel: Path) -> None:
    """A bounded run stopped by SIGTERM: every file in done/ or back in medium/ (once), none lost or run twice,
    and done/ holds the oldest files (the index orders by arrival)."""
    where = placement(project.spool)
    counts = executions(sentinel)
    order = list(tokens.items())  # writing order: the warm-up, then the burst
    misplaced = {job_id: f for _, job_id in order if (f := where.get(job_id, [])) not in (["done"], ["medium"])}
    done = [i for i, (_, job_id) in enumerate(order) if where.get(job_id) == ["done"]]
    ran_not_done = [job_id for token, job_id in order if counts[token] and where.get(job_id) != ["done"]]
    done_not_ran = [order[i][1] for i in done if not counts[order[i][0]]]
    repeated = [token for token, c in counts.items() if c >= 2]
    strangers = sorted(set(where) - set(tokens.values()))
    result.lost = len(misplaced) + len(done_not_ran)
    result.duplicated = len(repeated)
    interrupted = result.details.get("log_statuses", {}).get("interrupted", 0)
    if misplaced:
        sample = list(misplaced.items())[:5]
        result.fail(f"{len(misplaced)} file(s) neither in done/ nor back in medium/, e.g. {sample}")
    if done_not_ran or repeated or strangers:
        result.fail(f"in done/ but never ran: {done_not_ran[:5]}; ran twice: {repeated[:5]}; "
                    f"strangers: {strangers[:5]}")
    if len(ran_not_done) > interrupted:
        result.fail(f"{len(ran_not_done)} job(s) ran but are not in done/, only {interrupted} interrupted")
    highest = max(done, default=-1)
    result.details.update(done=len(done) - WARMUP, highest_done_index=highest - WARMUP,
                          ran_then_put_back=len(ran_not_done))
    d = result.details
    oldest = "oldest first" if highest < len(done) + 2 * WORKERS else "NOT oldest first"
    result.verified = (f"BOUNDED (projected {d['projected_total_seconds'] / 60:.0f} min > limit "
                       f"{d['burst_limit_seconds'] / 60:.1f} min): status --json right after the burst matched the "
                       f"files ({len(order)} jobs with the {WARMUP} warm-up); first burst job ran "
                       f"{d['first_run_after_seconds']:.1f}s after the first file; in {d['run_seconds']:.0f}s "
                       f"{d['done']} done ({d['jobs_per_second']}/s), each once, {oldest} (highest done "
                       f"index {d['highest_done_index']}); after SIGTERM every other file back in medium/ once; "
                       f"NOT verified: that all {len(order) - WARMUP} reach done/")


# -- 5: memory -------------------------------------------------------------------------------------------------


def memory(ctx: Context, result: Result) -> None:
    n = result.jobs = ctx.n(10000)
    first = min(100, n // 10)  # RSS is first sampled after this many jobs
    project = ctx.project(result.scenario)
    project.configure(workers=WORKERS, rescan_seconds=5)
    ids: list[str] = []
    samples: list[tuple[int, int, int | None]] = []  # (done, daemon VmRSS KiB, fork server VmRSS KiB)
    try:
        daemon = project.start()
        result.details["rss_at_start_of_daemon_kib"] = rss_kib(daemon.pid)
        last_sample = 0.0

        def sample() -> None:
            nonlocal last_sample
            server = fork_server_of(daemon.pid)
            samples.append((project.done_count(), rss_kib(daemon.pid), rss_kib(server) if server else None))
            last_sample = time.monotonic()

        def feed_and_sample(done: int) -> None:  # keep ~200 ready, so the backlog is the same at both ends
            while len(ids) < n and len(ids) - done < 200:
                ids.append(project.submit("Echo", "handle", []))
            if done >= first and (not samples or time.monotonic() - last_sample >= 5):
                sample()

        started = time.monotonic()
        if not wait_all_done(project, n, deadline_for(n), result.scenario, on_tick=feed_and_sample):
            result.fail(f"timeout: {project.done_count()}/{n} done at the deadline")
        sample()
        result.details["jobs_per_second"] = round(n / (time.monotonic() - started), 1)
    finally:
        stop_all(result, project)
    check_memory(result, samples)
    check_no_op_runs(result, project, ids)


def check_memory(result: Result, samples: list[tuple[int, int, int | None]]) -> None:
    """The daemon's RSS may grow by at most 20 MiB between the first sample and the last; so may its
    fork server's, when it has one."""
    if len(samples) < 2:
        result.fail("too few RSS samples")
        return
    (done0, start, server0), (done1, end, server1) = samples[0], samples[-1]
    growth = end - start
    peak = max(rss for _, rss, _ in samples)
    result.details.update(rss_start_kib=start, rss_end_kib=end, rss_growth_kib=growth, rss_peak_kib=peak,
                          fork_server_rss_start_kib=server0, fork_server_rss_end_kib=server1, rss_samples=samples)
    if growth > MEMORY_LIMIT_KIB:
        result.fail(f"daemon RSS grew {growth / MIB:.1f} MiB (> 20 MiB)")
    server = ""
    if server0 is not None and server1 is not None:
        server = f"; fork server {server0 / MIB:.1f} -> {server1 / MIB:.1f} MiB"
        if server1 - server0 > MEMORY_LIMIT_KIB:
            result.fail(f"fork server RSS grew {(server1 - server0) / MIB:.1f} MiB (> 20 MiB)")
    result.verified = (f"daemon RSS {start / MIB:.1f} MiB after {done0} jobs -> {end / MIB:.1f} MiB after {done1} "
                       f"(growth {growth / MIB:+.1f} MiB, peak {peak / MIB:.1f}){server}; "
                       f"each job in done/ once, attempts 1")


def check_no_op_runs(result: Result, project: SoakProject, ids: list[str]) -> None:
    """No-op jobs have no sentinel: `attempts` and `history` say how many times each ran."""
    where = placement(project.spool)
    misplaced = [job_id for job_id in ids if where.get(job_id) != ["done"]]
    strangers = sorted(set(where) - set(ids))
    repeated = []
    for job_id in set(ids) - set(misplaced):
        doc = project.doc("done", job_id)
        if doc.get("attempts") != 1 or len(doc.get("history", [])) != 1:
            repeated.append(job_id)
    result.lost, result.duplicated = len(misplaced), len(repeated)
    if misplaced or strangers:
        result.fail(f"{len(misplaced)} job(s) not in done/ exactly once, e.g. {misplaced[:5]}; "
                    f"strangers {strangers[:5]}")
    if repeated:
        result.fail(f"{len(repeated)} job(s) ran more than once with no crash, e.g. {repeated[:5]}")


# -- 6: the crash-point enumeration ----------------------------------------------------------------------------


def crash_points(ctx: Context, result: Result) -> None:
    """tests/test_crash_points.py as it is (it has no marker or option: every point, every action, always).

    Its per-test timeout (60 s in pyproject) is raised: the soak is where the long enumeration may take long.
    """
    base = ctx.root / result.scenario
    output = ctx.root / "crash-points.log"
    command = [sys.executable, "-m", "pytest", "tests/test_crash_points.py", "-q", "-p", "no:cacheprovider",
               f"--basetemp={base}", "--timeout=1800"]
    result.details["command"] = " ".join(command[1:])
    scratch = ctx.root / "crash-points-tmp"  # the scratch folders of SIGKILLed daemons stay in the soak's root
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    with output.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=ctx.crash_points_timeout)
        except subprocess.TimeoutExpired:
            code = None
            result.fail(f"timeout: pytest still running after {ctx.crash_points_timeout:.0f}s")
        finally:
            if proc.poll() is None:  # SIGINT first: pytest then runs the fixtures' teardown, which reaps
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
            kill_under(base)  # daemons of the tests run in their own sessions
    text = output.read_text(encoding="utf-8", errors="replace")
    tally = {word: int(num) for num, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", text)}
    cases = fault_cases(base)
    result.faults = len(cases)
    result.restarts = sum(1 for _, _, action in cases if action.startswith("kill"))  # each followed by a drain
    result.jobs = 4 * len(cases)  # plain, flaky, chained and its step, per case
    result.details.update(pytest=tally, exit_code=code,
                          scratch_folders_left_by_killed_daemons=sum(1 for _ in scratch.iterdir()))
    failed = re.findall(r"^FAILED (\S+)", text, flags=re.MULTILINE)
    result.lost, result.duplicated, unclassified = classify_failures(text)
    if code != 0:
        result.fail(f"pytest exited {code}: {tally}; failed: {failed[:10]}; log: {output}")
    if unclassified:
        result.lost = result.duplicated = None  # a failure that is not about placement: not measured
    funcs = sorted({func for func, _, _ in cases})
    actions = sorted({action for _, _, action in cases})
    result.verified = (f"pytest {tally}: {len(cases)} cases, one fault each at the k-th spool call of "
                       f"{'/'.join(funcs)} ({', '.join(actions)}), then a clean drain: every job in exactly "
                       f"one folder, none in running/, each run >= 1")


def fault_cases(base: Path) -> list[tuple[str, int, str]]:
    """(func, k, action) of every case folder the tests made (FUNC-K-ACTION beside each test's app/)."""
    if not base.is_dir():
        return []
    cases = []
    for test_dir in base.iterdir():
        if test_dir.is_symlink() or not test_dir.is_dir():  # pytest's `...current` link to the last one
            continue
        for case in test_dir.iterdir():
            if case.is_dir() and (m := re.fullmatch(r"([a-z]+)-(\d+)-(.+)", case.name)):
                cases.append((m.group(1), int(m.group(2)), m.group(3)))
    return cases


def classify_failures(text: str) -> tuple[int, int, int]:
    """From pytest's report: cases that lost a job (not in its folder), that duplicated one (in two folders,
    or an unexpected extra file), and failures of another kind."""
    lost = duplicated = other = 0
    for block in re.split(r"^_+ test_", text, flags=re.MULTILINE)[1:]:
        placed = re.search(r"^E\s+AssertionError: \S+: expected only in \w+/, found in (None|\[[^]]*\])", block,
                           flags=re.MULTILINE)
        if placed:
            if len(re.findall(r"'\w+'", placed.group(1))) > 1:
                duplicated += 1
            else:
                lost += 1
        elif re.search(r"^E\s+AssertionError: unexpected files", block, flags=re.MULTILINE):
            duplicated += 1
        else:
            other += 1
    return lost, duplicated, other


# -- 7: several hosts on one GlusterFS volume (issue 12) -----------------------------------------------------


def multihost(ctx: Context, result: Result) -> None:
    """tests/multihost.py's three faults, each on a fresh spool of the partition-capable volume."""
    from multihost import Cluster, run_fault  # tests/ is on sys.path (harness)
    from sharedfs import Rig, RigError

    rig = Rig()
    try:
        rig.start()
        volume = rig.volume(partition=True)
        n = ctx.n(3000)
        for fault in ("kill", "freeze", "cut"):
            relative = f"soak-{os.getpid()}-{fault}"
            volume.folders(relative)
            cluster = Cluster(ctx.root / "multihost" / fault, volume.hosts, f"{relative}/spool")
            try:
                outcome = run_fault(cluster, fault, n, timeout=90 + n / 5)
            finally:
                cluster.close()
                shutil.rmtree(volume.hosts[0].mount / relative, ignore_errors=True)
            result.jobs += n
            result.faults += 1
            result.restarts += outcome.rejoined
            result.lost = (result.lost or 0) + outcome.lost
            result.duplicated = (result.duplicated or 0) + outcome.ran_twice
            result.details[fault] = {key: getattr(outcome, key) for key in (
                "seconds", "takeover_seconds", "fence_seconds", "held", "ran_twice", "runs", "rejoined")}
            result.details[fault].update(outcome.details)
            print(f"  [multihost] {fault}: {result.details[fault]}", flush=True)
            for problem in outcome.problems:
                result.fail(f"{fault}: {problem}")
    except RigError as e:
        result.fail(f"the GlusterFS rig cannot be made here: {e}")
    finally:
        rig.close()
    result.verified = ("3 hosts x 2 daemons on GlusterFS, per fault: every job in done/ exactly once, nothing left "
                       "in running/, runs twice only for jobs the faulted daemon held, fenced daemons wrote back "
                       "nothing they lost and joined again, every daemon exited 0 on SIGTERM")


def schedule(ctx: Context, result: Result) -> None:
    """4 daemons and one [schedule] entry every second for 3 minutes; a random daemon SIGKILLed and
    replaced every 2-4 s. Every slot must be submitted once, none missed while daemons ran."""
    from test_schedule import check_each_slot_once, configure  # tests/ is on sys.path (harness)

    project = ctx.project(result.scenario)
    records = configure(project, "1s", workers=1, retry_attempts=50)  # a kill orphans a run: it runs again
    seconds = ctx.n(180)
    try:
        for _ in range(4):
            project.start()
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            time.sleep(ctx.rng.uniform(2, 4))
            project.crash(ctx.rng.choice(project.live()), holding_within=0.0)
            result.faults += 1
            project.start()
            result.restarts += 1
            project.check_alive()
        project.configure(extra='RecordRun = ["handle"]\n', settle_seconds=0, rescan_seconds=1, workers=1,
                          retry_attempts=50)
        for proc in project.live():  # no more slots; what the kills left settles
            proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while project.names("running") or any(project.names(f) for f in ("high", "medium", "low")):
            if time.monotonic() > deadline:
                raise RuntimeError("slot jobs left waiting or running 60 s after the last kill")
            time.sleep(0.2)
    finally:
        stop_all(result, project)
    done = check_each_slot_once(project, records, contiguous=1.0)
    result.jobs = len(done)
    result.details["slots"] = len(done)
    result.details["orphaned_runs"] = sum(1 for job_id in done for h in project.doc("done", job_id).get("history", [])
                                          if h.get("error_type") == "Orphaned")
    result.verified = ("every slot from the first to the last in done/ exactly once (none missed), nowhere else, "
                       "run once (twice only when a kill orphaned its run)")


def power_loss(ctx: Context, result: Result) -> None:
    """tests/powerloss.py's trials: 1-2 daemons on a crashfs spool (tests/crashfs.py), a power cut at a random
    moment, a drain; lost: submitted jobs missing, duplicated: submissions with two records or more."""
    from crashfs import CrashFSError  # tests/ is on sys.path (harness)
    from powerloss import run_trials

    trials = ctx.n(120)
    try:
        summary = run_trials(trials, ctx.rng.randrange(1 << 30), work=ctx.root)
    except CrashFSError as e:
        result.fail(f"crashfs cannot run here: {e}")
        return
    result.jobs, result.faults, result.restarts = summary.submitted, summary.trials, summary.trials
    result.lost, result.duplicated = summary.lost, summary.duplicated
    result.details.update({key: getattr(summary, key) for key in (
        "trials", "failed_trials", "with_losses", "with_duplicates", "misplaced", "left", "ran_twice", "modules")})
    result.details["seconds_per_trial"] = round(summary.seconds / max(1, summary.trials), 2)
    result.details["failures"] = summary.failures[:20]
    if summary.failed_trials:
        result.fail(f"{summary.failed_trials} of {summary.trials} trials failed: {summary.with_losses} lost a job, "
                    f"{summary.with_duplicates} recorded one twice, e.g. {summary.failures[0]}")
    result.verified = ("per power cut (daemons, children and submitter SIGKILLed, what was not fsynced dropped), "
                       "then a drain: every job whose submit returned in done/ (failed/ if meant to) with exactly "
                       "one record, chain steps too, nothing left in ready/scheduled/running/rejected")


# -- running, the table, the JSON -----------------------------------------------------------------------------

SCENARIOS: list[tuple[str, Callable[[Context, Result], None]]] = [
    ("many-daemons", lambda ctx, r: many_daemons(ctx, r, kill_halfway=False)),
    ("kill-halfway", lambda ctx, r: many_daemons(ctx, r, kill_halfway=True)),
    ("crash-loop", crash_loop),
    ("crash-loop-workers", lambda ctx, r: crash_loop(ctx, r, isolation="worker")),
    # fast jobs end within a second or two at 2,000: six times as many, so that about ten kills fall in the run
    ("crash-loop-fast", lambda ctx, r: crash_loop(ctx, r, isolation="worker", durability="fast", jobs=12_000)),
    ("burst-50k", burst),
    ("memory", memory),
    ("crash-points", crash_points),
    ("multihost", multihost),
    ("schedule", schedule),
    ("power-loss", power_loss),
]


def run_one(ctx: Context, name: str, body: Callable[[Context, Result], None], results: list[Result]) -> None:
    result = Result(name)
    results.append(result)
    print(f"== {name}", flush=True)
    started = time.monotonic()
    try:
        body(ctx, result)
    except (DaemonDied, subprocess.TimeoutExpired, RuntimeError, OSError, AssertionError, ValueError) as e:
        result.fail(f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        result.fail("interrupted (SIGINT/SIGTERM): the soak stopped here")
        raise
    finally:
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN), signal.signal(signal.SIGINT, signal.SIG_IGN)
        ctx.reap()  # every daemon and every orphaned job child of this scenario, also on failure
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        result.seconds = round(time.monotonic() - started, 1)
    print(f"   {result.verdict} in {result.seconds}s: jobs={result.jobs} lost={result.lost} "
          f"duplicated={result.duplicated} {'; '.join(result.notes)}", flush=True)


def table(results: list[Result]) -> str:
    head = ("scenario", "jobs", "faults injected", "restarts", "lost", "duplicated", "seconds", "verdict")
    rows = [head] + [(r.scenario, str(r.jobs), str(r.faults), str(r.restarts), "-" if r.lost is None else str(r.lost),
                      "-" if r.duplicated is None else str(r.duplicated), f"{r.seconds:.0f}", r.verdict)
                     for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for r in results:
        lines.append(f"{r.scenario}: {r.verified}")
        lines.extend(f"    note: {note}" for note in r.notes)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [name for name, _ in SCENARIOS]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(names), help=f"comma-separated subset of: {', '.join(names)}")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every job count (debugging: 0.02)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the crash loop's choices")
    parser.add_argument("--burst-limit", type=float, default=1200, help="seconds; a slower burst is bounded")
    parser.add_argument("--burst-bound", type=float, default=300, help="seconds of a bounded burst run")
    parser.add_argument("--crash-points-timeout", type=float, default=3600, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp spools (kept anyway on failure)")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(names)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # so `finally` reaps the daemons
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    root = Path(tempfile.mkdtemp(prefix="spoold-soak-")).resolve()
    ctx = Context(root, args.scale, random.Random(seed), args.burst_limit, args.burst_bound,
                  args.crash_points_timeout)
    started_at = datetime.now(UTC).isoformat()
    print(f"soak: spools under {root}, seed {seed}, scale {args.scale}", flush=True)
    results: list[Result] = []
    wanted = args.only.split(",")
    try:
        for name, body in SCENARIOS:
            if name in wanted:
                run_one(ctx, name, body, results)
    except KeyboardInterrupt:
        pass  # recorded as that scenario's failure
    failed = any(r.verdict == "FAIL" for r in results)
    print("\n" + table(results), flush=True)
    RESULTS.mkdir(exist_ok=True)
    report = {"started_at": started_at, "finished_at": datetime.now(UTC).isoformat(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "seed": seed, "scale": args.scale,
              "cpus": os.cpu_count(), "ok": not failed, "results": [r.as_json() for r in results]}
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {RESULTS / 'latest.json'}")
    if failed or args.keep:
        print(f"spools kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
