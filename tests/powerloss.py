"""spoold through power cuts (issue 14): daemons on a crashfs spool, a cut at a random moment, a drain.

One trial: 1 or 2 daemons (2 workers each, durability "fsync") on a spool on a crashfs mount (tests/crashfs.py),
logs on the real disk; a submitter process hands jobs in with the real API (`spoold.run_background_job`):
plain jobs, chains of one step, jobs that fail once and are retried, delayed jobs, jobs meant to fail. It
writes each id to a file on the real disk once the call has RETURNED. At a random moment the power is
cut: the daemons, their children and the submitter are SIGKILLed, then the filesystem drops what was not
durable and is mounted again. A `spoold start --drain` then finishes what is left. Checked:

- no job lost: every id whose submit returned before the cut is in done/ (failed/ if it was meant to fail),
  and so is the step of each chain;
- no submission recorded twice: for each submission, exactly one record in done/ and failed/ stands for it
  (its own id, or a fresh id whose `source_name` is `ID.json`: a job re-run after its ready copy came
  back). Re-runs are allowed (at-least-once execution); a second record of one submission is the defect;
- nothing left in high/, medium/, low/, scheduled/ or running/, no job in rejected/.

    .venv/bin/python tests/powerloss.py [--trials 20] [--seed N] [--pythonpath /tmp/pl-base] [--keep]

`--pythonpath` runs the daemons and the submitter on another checkout of spoold (PYTHONPATH comes before
the editable install in .venv); the module each one imports is checked and reported.
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conftest import BASE_CONFIG, DEFAULTS, HERE, child_pids
from crashfs import CrashFS, kill_and_wait

from spoold.paths import fsync_dir

READY = ("high", "medium", "low")
FOLDERS = ("tmp", *READY, "scheduled", "running", "done", "failed", "rejected")
WORKERS = 2
JOBS = 40  # per trial
DRAIN_TIMEOUT = 120.0
SUBMITTER_START_SECONDS = 60.0  # an interpreter and spoold's imports, on a loaded machine
CHILD_FILE = re.compile(r'File "([^"]+)/spoold/execution/child\.py"')
KINDS = (("plain", 50), ("chain", 15), ("retried", 15), ("delayed", 10), ("fails", 10))  # weights

SUBMITTER = r"""
import json, sys, time
import spoold
from spoold import run_background_job

plan, out, config = json.load(open(sys.argv[1])), open(sys.argv[2], "a", buffering=1), sys.argv[3]
out.write(f"# spoold {spoold.__file__}\n")
for item in plan:
    time.sleep(item["pause"])
    job_id = run_background_job(item["class"], "handle", item["params"], priority=item["priority"],
                                delay=item["delay"], chain=item["chain"], config=config)
    out.write(f"{item['tag']} {job_id}\n")  # one line per call that returned; line-buffered: flushed now
out.write("# all submitted\n")
"""


@dataclass
class Trial:
    """What one trial did and found; `ok` is the verdict."""

    seed: int
    daemons: int = 0
    cut_after: float = 0.0  # seconds after the submitter began to submit (its imports done)
    submitted: int = 0  # submit calls that returned before the cut
    all_submitted: bool = False
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)  # submission -> records standing for it
    misplaced: dict[str, str] = field(default_factory=dict)  # submission -> where its record is instead
    left: list[str] = field(default_factory=list)  # job files in a ready folder, scheduled/, running/ or rejected/
    ran_twice: int = 0  # executions beyond the first (allowed)
    done_before_cut: int = 0
    cut: dict[str, Any] = field(default_factory=dict)
    drain_exit: int | None = None
    modules: list[str] = field(default_factory=list)  # where the submitter's and the job children's spoold was
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.misplaced or self.left or self.notes)

    def line(self) -> str:
        return (f"seed={self.seed} daemons={self.daemons} cut_after={self.cut_after:.2f}s "
                f"submitted={self.submitted}{'(all)' if self.all_submitted else ''} done_before_cut="
                f"{self.done_before_cut} lost={len(self.lost)} duplicated={len(self.duplicated)} "
                f"misplaced={len(self.misplaced)} left={len(self.left)} ran_twice={self.ran_twice} "
                f"undone: {self.cut.get('entries_not_durable')} entries, {self.cut.get('renames_not_durable')} "
                f"renames ({self.seconds:.1f}s){' ' + '; '.join(self.notes) if self.notes else ''}")

    def problems(self) -> str:
        parts = [f"lost {self.lost[:5]}" if self.lost else "",
                 f"recorded twice {dict(list(self.duplicated.items())[:5])}" if self.duplicated else "",
                 f"misplaced {dict(list(self.misplaced.items())[:5])}" if self.misplaced else "",
                 f"left in the spool {self.left[:5]}" if self.left else "", *self.notes]
        return "; ".join(p for p in parts if p)


# -- the project --------------------------------------------------------------------------------------


FAIL_ONCE = '''"""A job that fails its first run and succeeds after: its marker is made by one O_EXCL create, so a
SIGKILL at any point leaves it made or not (FailTimes' counter can be left empty, failing it for good)."""

import os


class FailOnce:
    def handle(self, marker: str) -> str:
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return "second run"
        raise RuntimeError("the first run fails")
'''


def make_project(root: Path, spool: Path) -> Path:
    """bgjobs.toml (spool on the mount, logs here), the tests' job namespace and FailOnce; the config's path."""
    root.mkdir(parents=True)
    shutil.copytree(HERE / "jobs", root / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "jobs" / "fail_once.py").write_text(FAIL_ONCE, encoding="utf-8")
    (root / "markers").mkdir()
    extra = 'FailOnce = ["handle"]\n\n[retry_on]\nConnectionRefusedError = { retry_attempts = 0 }  # "fails" jobs\n'
    text = BASE_CONFIG.format(**(DEFAULTS | {"workers": WORKERS, "retry_attempts": 3, "retry_delay_seconds": 0,
                                            "rescan_seconds": 1, "settle_seconds": 0.5, "extra": extra}))
    text = text.replace('spool_dir = "spool"', f"spool_dir = {json.dumps(str(spool))}")
    config = root / "bgjobs.toml"
    config.write_text('durability = "fsync"\n' + text, encoding="utf-8")
    return config


def make_spool(spool: Path) -> None:
    """The spool's folders, made durable: a spool set up long before the cut (spoold never fsyncs them)."""
    for path in (spool, *(spool / name for name in FOLDERS)):
        path.mkdir()
        fsync_dir(path.parent)
        fsync_dir(path)


def plan_jobs(rng: random.Random, root: Path, count: int) -> list[dict[str, Any]]:
    """What the submitter hands in: tag, class, params, priority, delay, chain, the pause before it."""
    sentinel = str(root / "ran.txt")
    kinds, weights = [kind for kind, _ in KINDS], [weight for _, weight in KINDS]
    plan = []
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        tag = f"{kind}-{n}"
        item: dict[str, Any] = {"tag": tag, "class": "WriteSentinel", "params": [sentinel, tag],
                                "priority": rng.choice(READY), "delay": None, "chain": None,
                                "pause": rng.choice((0.0, 0.0, 0.01, 0.03, 0.1))}
        if kind == "chain":
            item["chain"] = [{"class": "WriteSentinel", "params": [sentinel, f"{tag}-step1"], "pass_result": False}]
        elif kind == "retried":
            item.update({"class": "FailOnce", "params": [str(root / "markers" / tag)]})
        elif kind == "delayed":
            item["delay"] = 0.3
        elif kind == "fails":
            item.update({"class": "Raise", "params": ["ConnectionRefusedError", "meant to fail"]})  # not retried
        plan.append(item)
    return plan


# -- processes ----------------------------------------------------------------------------------------


def env_for(root: Path, pythonpath: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(root / "scratch"))
    (root / "scratch").mkdir(exist_ok=True)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else pythonpath
    return env


def spoold_module(env: dict[str, str], cwd: Path) -> str:
    """Where `import spoold` leads a process started with this environment (as the daemons are)."""
    return subprocess.run([sys.executable, "-c", "import spoold; print(spoold.__file__)"], env=env, cwd=cwd,
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def start_daemon(root: Path, config: Path, env: dict[str, str], n: int, *args: str) -> subprocess.Popen[bytes]:
    with (root / f"daemon-{n}.out").open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "spoold", "start", "--config", str(config), *args],
                                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def node_folders(spool: Path) -> list[str]:
    try:
        return [p.name for p in (spool / "running").iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


def wait_started(daemons: list[subprocess.Popen[bytes]], spool: Path, timeout: float = 30.0) -> None:
    """Until each daemon's node folder is in running/."""
    deadline = time.monotonic() + timeout
    while True:
        names = node_folders(spool)
        if all(any(f"-{d.pid}-" in name for name in names) for d in daemons):
            return
        for daemon in daemons:
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon {daemon.pid} exited with {daemon.returncode} at start")
        if time.monotonic() > deadline:
            raise RuntimeError(f"daemons made no running/ folder within {timeout:g}s")
        time.sleep(0.02)


def kill_trees(roots: list[int]) -> list[int]:
    """SIGSTOP the roots and all they spawned (until no new process appears), then SIGKILL them all and
    wait until they are gone: the moment of the power cut for every one of them."""
    stopped: set[int] = set()
    frontier = set(roots)
    while frontier:
        for pid in frontier:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= frontier
        frontier = set().union(*(child_pids(pid) for pid in stopped)) - stopped
    pids = sorted(stopped)
    kill_and_wait(pids)
    return pids


# -- the verdict ----------------------------------------------------------------------------------------


def records(spool: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """id -> (folder, document) of every record in done/ and failed/."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for folder in ("done", "failed"):
        for path in (spool / folder).iterdir():
            if path.name.endswith(".json") and not path.name.startswith("."):
                found[path.name[: -len(".json")]] = (folder, json.loads(path.read_bytes()))
    return found


def submission_of(recs: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, tuple[str, int]]:
    """Record id -> (the submission it stands for, chain step): a fresh id leads back through
    `source_name` to the id it was submitted under; a chain step stands for its root's step N."""

    def origin(job_id: str) -> str:
        seen = set()
        while job_id not in seen:
            seen.add(job_id)
            source = str(recs.get(job_id, ("", {}))[1].get("source_name", ""))
            if not source.endswith(".json") or source[: -len(".json")] == job_id:
                break
            job_id = source[: -len(".json")]
        return job_id

    keys = {}
    for job_id, (_, doc) in recs.items():
        step = int(doc.get("chain_step", 0))
        keys[job_id] = (origin(str(doc["chain_root"])), step) if step else (origin(job_id), 0)
    return keys


def job_files_left(spool: Path) -> list[str]:
    left = []
    for folder in (*READY, "scheduled"):
        left += [f"{folder}/{n}" for n in os.listdir(spool / folder) if n.endswith(".json") and not n.startswith(".")]
    for node in (spool / "running").iterdir():
        if node.is_dir():
            left += [f"running/{node.name}/{n}" for n in os.listdir(node) if ".json" in n]
    left += [f"rejected/{n}" for n in os.listdir(spool / "rejected") if n.endswith(".json")]
    return sorted(left)


def judge(trial: Trial, spool: Path, ids: dict[str, str], sentinel: Path) -> None:
    recs = records(spool)
    keys = submission_of(recs)
    standing: dict[tuple[str, int], list[str]] = collections.defaultdict(list)
    for job_id, key in keys.items():
        standing[key].append(recs[job_id][0])
    for tag, job_id in ids.items():
        wanted = "failed" if tag.startswith("fails") else "done"
        for key in [(job_id, 0)] + ([(job_id, 1)] if tag.startswith("chain") else []):
            where = standing.get(key, [])
            name = job_id if key[1] == 0 else f"{job_id}-step1"
            if not where:
                trial.lost.append(name)
            elif len(where) > 1:
                trial.duplicated[name] = len(where)
            elif where != [wanted]:
                trial.misplaced[name] = where[0]
    known = {(job_id, step) for job_id in ids.values() for step in (0, 1)}
    for key, where in standing.items():  # a submission cut short may be there or not, never twice
        if key not in known and len(where) > 1:
            trial.duplicated[f"{key[0]} (submit under way at the cut)"] = len(where)
    trial.left = job_files_left(spool)
    for _, doc in recs.values():  # a failed run's traceback names the spoold its job child ran
        error = doc.get("error")
        found = CHILD_FILE.search(str(error.get("traceback", ""))) if isinstance(error, dict) else None
        if found and (module := f"job child: {found.group(1)}/spoold") not in trial.modules:
            trial.modules.append(module)
    runs = collections.Counter(sentinel.read_text().split()) if sentinel.exists() else collections.Counter()
    trial.ran_twice = sum(n - 1 for n in runs.values() if n > 1)


def wait_ready_to_submit(ids_file: Path, submitter: subprocess.Popen[bytes],
                         timeout: float = SUBMITTER_START_SECONDS) -> float | None:
    """When the submitter wrote its first line (which spoold it imported; its submits follow at once), by
    the monotonic clock; None if it exited or did not get there within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and submitter.poll() is None:
        if ids_file.exists() and ids_file.read_bytes().startswith(b"# spoold "):
            return time.monotonic()
        time.sleep(0.002)
    return None


def read_ids(path: Path) -> tuple[dict[str, str], list[str], bool]:
    """tag -> id for each submit that returned, the comment lines, and whether all were submitted."""
    ids, comments = {}, []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        if line.startswith("#"):
            comments.append(line[2:])
        elif len(parts := line.split()) == 2:
            ids[parts[0]] = parts[1]
    return ids, comments, "all submitted" in comments


# -- one trial ------------------------------------------------------------------------------------------


def run_trial(fs: CrashFS, root: Path, seed: int, *, pythonpath: str | None = None, jobs: int = JOBS,
              cut_window: tuple[float, float] = (0.1, 4.0), drain_timeout: float = DRAIN_TIMEOUT) -> Trial:
    """One trial on a fresh mount (`fs` unmounted before and after); its project under `root`."""
    rng = random.Random(seed)
    trial = Trial(seed, daemons=rng.choice((1, 2)), cut_after=rng.uniform(*cut_window))
    started = time.monotonic()
    mountpoint = fs.mount()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        spool = mountpoint / "spool"
        make_spool(spool)
        config = make_project(root, spool)
        env = env_for(root, pythonpath)
        daemons = [start_daemon(root, config, env, n) for n in range(trial.daemons)]
        procs += daemons
        wait_started(daemons, spool)
        plan = root / "plan.json"
        plan.write_text(json.dumps(plan_jobs(rng, root, jobs)), encoding="utf-8")
        ids_file = root / "submitted.txt"
        ids_file.unlink(missing_ok=True)  # appended to: a trial run again in the same folder starts afresh
        with (root / "submitter.out").open("wb") as out:
            submitter = subprocess.Popen([sys.executable, "-c", SUBMITTER, str(plan), str(ids_file), str(config)],
                                         cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        procs.append(submitter)
        # The cut's clock starts once the submitter is about to submit: its start-up (an interpreter,
        # spoold's imports) can take longer than the earliest cut on a busy machine, and a cut before the
        # first submit tests nothing (and leaves no word of which spoold it imported).
        submitted_at = wait_ready_to_submit(ids_file, submitter)
        if submitted_at is None:
            trial.notes.append(f"the submitter never began to submit: {_tail(root / 'submitter.out')}")
            submitted_at = time.monotonic()
        time.sleep(max(0.0, submitted_at + trial.cut_after - time.monotonic()))
        for daemon in daemons:
            if daemon.poll() is not None:
                trial.notes.append(f"a daemon exited by itself with {daemon.returncode} before the cut")
        kill_trees([p.pid for p in procs])
        if submitter.returncode not in (None, -signal.SIGKILL, 0):
            trial.notes.append(f"the submitter failed ({submitter.returncode}): {_tail(root / 'submitter.out')}")
        ids, comments, trial.all_submitted = read_ids(ids_file)
        trial.submitted = len(ids)
        trial.modules = [f"submitter: {c.split(' ', 1)[1]}" for c in comments if c.startswith("spoold ")]
        trial.done_before_cut = sum(1 for n in os.listdir(spool / "done") if n.endswith(".json"))
        trial.cut = fs.cut_power()
        trial.cut.pop("killed", None)
        shutil.copytree(spool, root / "spool-after-cut", symlinks=True)  # what the drain starts from
        drain = start_daemon(root, config, env, trial.daemons, "--drain")
        procs.append(drain)
        try:
            trial.drain_exit = drain.wait(timeout=drain_timeout)
        except subprocess.TimeoutExpired:
            trial.notes.append(f"the drain did not finish within {drain_timeout:g}s")
        if trial.drain_exit not in (None, 0):
            trial.notes.append(f"the drain exited {trial.drain_exit}: {_tail(root / f'daemon-{trial.daemons}.out')}")
        kill_trees([p.pid for p in procs if p.poll() is None])
        shutil.copytree(spool, root / "spool-after-drain", symlinks=True)
        judge(trial, spool, ids, root / "ran.txt")
    finally:
        with contextlib.suppress(Exception):
            kill_trees([p.pid for p in procs if p.poll() is None])
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        fs.unmount()
        trial.seconds = round(time.monotonic() - started, 2)
    return trial


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-600:].strip()
    except OSError:
        return "(no output)"


@dataclass
class Summary:
    trials: int = 0
    failed_trials: int = 0
    with_duplicates: int = 0
    with_losses: int = 0
    lost: int = 0
    duplicated: int = 0
    misplaced: int = 0
    left: int = 0
    submitted: int = 0
    ran_twice: int = 0
    seconds: float = 0.0
    modules: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the failed trials' lines

    def add(self, trial: Trial) -> None:
        self.trials += 1
        self.failed_trials += not trial.ok
        self.with_duplicates += bool(trial.duplicated)
        self.with_losses += bool(trial.lost)
        self.lost += len(trial.lost)
        self.duplicated += len(trial.duplicated)
        self.misplaced += len(trial.misplaced)
        self.left += len(trial.left)
        self.submitted += trial.submitted
        self.ran_twice += trial.ran_twice
        self.seconds += trial.seconds
        self.modules = sorted(set(self.modules) | set(trial.modules))
        if not trial.ok:
            self.failures.append(f"{trial.line()}: {trial.problems()}")


def run_trials(count: int, seed: int, *, pythonpath: str | None = None, jobs: int = JOBS,
               work: Path | None = None, keep: bool = False, verbose: bool = True,
               trial_seeds: list[int] | None = None) -> Summary:
    """`count` trials with seeds drawn from `seed` (or exactly `trial_seeds`); each trial's project, with
    copies of its spool after the cut and after the drain, in its own folder under `work` (kept when the
    trial failed, or with `keep`)."""
    rng = random.Random(seed)
    seeds = trial_seeds or [rng.randrange(1 << 30) for _ in range(count)]
    count = len(seeds)
    base = Path(tempfile.mkdtemp(prefix="spoold-powerloss-", dir=work))
    summary = Summary(modules=[f"daemon: {spoold_module(env_for(base, pythonpath), base)}"])
    try:
        with CrashFS() as fs:
            fs.unmount()  # each trial mounts its own
            for n in range(count):
                trial = run_trial(fs, base / f"trial-{n}", seeds[n], pythonpath=pythonpath, jobs=jobs)
                summary.add(trial)
                if verbose:
                    print(f"  [{n + 1}/{count}] {'ok  ' if trial.ok else 'FAIL'} {trial.line()}"
                          + ("" if trial.ok else f"\n      {trial.problems()}"), flush=True)
                if not keep and trial.ok:
                    shutil.rmtree(base / f"trial-{n}", ignore_errors=True)
    finally:
        if not keep and not summary.failed_trials:
            shutil.rmtree(base, ignore_errors=True)
        elif verbose:
            print(f"  trial folders kept in {base}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=JOBS, help="jobs submitted per trial")
    parser.add_argument("--pythonpath", default=None, help="a checkout of spoold for the daemons and the submitter")
    parser.add_argument("--trial-seed", type=int, action="append", default=None,
                        help="run the trial of this seed (as printed; repeatable) instead of drawing them")
    parser.add_argument("--keep", action="store_true", help="keep every trial's folder")
    parser.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"power loss: {len(args.trial_seed or []) or args.trials} trials, seed {seed}", flush=True)
    summary = run_trials(args.trials, seed, pythonpath=args.pythonpath, jobs=args.jobs, keep=args.keep,
                         trial_seeds=args.trial_seed)
    print(json.dumps({k: v for k, v in asdict(summary).items() if k != "failures"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(asdict(summary) | {"seed": seed}, indent=2) + "\n", encoding="utf-8")
    return 1 if summary.failed_trials else 0


if __name__ == "__main__":
    raise SystemExit(main())
