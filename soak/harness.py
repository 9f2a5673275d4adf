"""What the soak scenarios share: a temp app with real daemons whose output goes to files, crashes by
SIGKILL, a look at where every job ended, and a result row. Every process started here is reaped.

Built on tests/conftest.py (`Project`, the config template, the `jobs` namespace of tests/jobs/).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import BASE_CONFIG, DEFAULTS, HERE, Project, child_pids  # noqa: E402

from spoold.paths import unseized_name  # noqa: E402

JOB_FOLDERS = ("high", "medium", "low", "scheduled", "running", "done", "failed", "rejected")
NESTED = ("running", "done", "failed")  # a folder per daemon; day shards of done/ and failed/


class DaemonDied(RuntimeError):
    """A daemon exited while the soak did not stop or kill it."""


def is_job_file(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".")


def count_jobs(folder: Path) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if is_job_file(e.name))
    except FileNotFoundError:
        return 0


SEIZED = "seized"  # placement's name for `running/NODE/.ID.json.moving`: a job its daemon is moving out (design H3)


def placement(spool: Path) -> dict[str, list[str]]:
    """id -> every state folder holding a file of that name (exactly ["done"] is the goal). A seized copy
    in a running folder is listed as SEIZED: while a daemon commits a job, that may be its only file."""
    where: dict[str, list[str]] = collections.defaultdict(list)
    for folder in JOB_FOLDERS:
        base = spool / folder
        if not base.is_dir():
            continue
        subdirs = [base] + ([p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")]
                            if folder in NESTED else [])
        for sub in subdirs:
            for name in os.listdir(sub):
                if is_job_file(name):
                    where[name[: -len(".json")]].append(folder)
                elif folder == "running" and (plain := unseized_name(name)) is not None:
                    where[plain[: -len(".json")]].append(SEIZED)
    return dict(where)


def executions(sentinel: Path) -> collections.Counter[str]:
    """Token -> how many times a job appended it (WriteSentinel: one line per run)."""
    if not sentinel.exists():
        return collections.Counter()
    return collections.Counter(sentinel.read_text(encoding="utf-8").split())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fork_server_of(pid: int) -> int | None:
    """The daemon's fork server (`python -m spoold.execution.forkserver`, start_method auto/forkserver), if any."""
    for child in sorted(child_pids(pid)):
        with contextlib.suppress(OSError):
            if b"spoold.execution.forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    return None


def processes_under(root: Path) -> list[int]:
    """Pids whose working directory is inside `root`: the daemons and job children of one scenario."""
    prefix = str(root.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd")
            if cwd == prefix or cwd.startswith(prefix + os.sep):
                pids.append(int(entry.name))
    return pids


def kill_under(root: Path) -> None:
    """SIGKILL every process working inside `root` (all started by the soak: the folder is its own)."""
    for _ in range(5):
        left = processes_under(root)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


@dataclass
class Result:
    """One row of the summary table; `lost`/`duplicated` None means not measured by this scenario."""

    scenario: str
    jobs: int = 0
    faults: int = 0
    restarts: int = 0
    lost: int | None = 0
    duplicated: int | None = 0
    seconds: float = 0.0
    verdict: str = "PASS"
    verified: str = ""
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.verdict = "FAIL"
        self.notes.append(why)

    def warn(self, why: str) -> None:
        """Worth a look, but neither lost nor duplicated a job: does not fail the soak."""
        if self.verdict == "PASS":
            self.verdict = "WARN"
        self.notes.append(f"warning: {why}")

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class SoakProject(Project):
    """A conftest Project whose daemons log to files (a pipe would fill up over thousands of jobs), keep
    their scratch folders inside the app (TMPDIR), and can be crashed with SIGKILL."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        shutil.copytree(HERE / "jobs", root / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
        super().__init__(root)
        self.scratch = root / "scratch"
        self.outputs = root / "daemon-output"
        self.scratch.mkdir()
        self.outputs.mkdir()
        self.crashed: set[int] = set()  # pids we SIGKILLed
        self.stopped: set[int] = set()  # pids we SIGTERMed

    def configure(self, top: dict[str, Any] | None = None, **overrides: Any) -> None:
        """The conftest config, with top-level keys the template lacks (file_events, durability) first."""
        lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in (top or {}).items())
        self.config.write_text(lines + BASE_CONFIG.format(**(DEFAULTS | overrides)), encoding="utf-8")

    def env(self) -> dict[str, str]:
        return dict(super().env(), TMPDIR=str(self.scratch))

    def folder_of(self, proc: subprocess.Popen[str]) -> Path | None:
        marker = f"-{proc.pid}-"
        return next((p for p in self.daemon_folders() if marker in p.name), None)

    def start(self, *args: str) -> subprocess.Popen[str]:
        with (self.outputs / f"daemon-{len(self.procs)}.log").open("w", encoding="utf-8") as out:
            proc = subprocess.Popen([sys.executable, "-m", "spoold", "start", "--config", str(self.config), *args],
                                    cwd=self.root, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while self.folder_of(proc) is None:
            if proc.poll() is not None:
                raise DaemonDied(f"daemon {proc.pid} exited at start with {proc.returncode}")
            if time.monotonic() > deadline:
                raise DaemonDied(f"daemon {proc.pid} made no running/ folder within 30s")
            time.sleep(0.02)
        return proc

    def held_by(self, proc: subprocess.Popen[str]) -> set[str]:
        """The ids in the daemon's running/ folder: its claims, and the ones it is moving out (seized,
        design H3), which recovery takes back as well if it dies before their commit is done."""
        folder = self.folder_of(proc)
        if folder is None:
            return set()
        names = [name if is_job_file(name) else unseized_name(name) for name in os.listdir(folder)]
        return {name[: -len(".json")] for name in names if name is not None}

    def crash(self, proc: subprocess.Popen[str], *, holding_within: float = 10.0) -> set[str]:
        """SIGKILL a daemon, once it holds a job (or after `holding_within` seconds); returns the ids in its
        running/ folder then: the only jobs that may run twice. It is stopped (SIGSTOP) while its folder
        is listed, so nothing moves in or out meanwhile."""
        deadline = time.monotonic() + holding_within
        while True:
            quiet = not self.held_by(proc)
            if quiet and time.monotonic() < deadline:
                time.sleep(0.001)
                continue
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                held = self.held_by(proc)
            except BaseException:
                os.kill(proc.pid, signal.SIGKILL)
                raise
            if held or time.monotonic() >= deadline:
                break
            os.kill(proc.pid, signal.SIGCONT)  # it finished them between our two looks
        self.crashed.add(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return held

    def shutdown(self, proc: subprocess.Popen[str], timeout: float = 60) -> int:
        """SIGTERM and wait (SIGKILL past `timeout`): the daemon's exit code, -9 if it had to be killed."""
        if proc.poll() is not None:
            return proc.returncode
        self.stopped.add(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            return -9

    def live(self) -> list[subprocess.Popen[str]]:
        return [p for p in self.procs if p.poll() is None]

    def check_alive(self) -> None:
        """DaemonDied if a daemon we neither killed nor stopped has exited."""
        for proc in self.procs:
            if proc.poll() is not None and proc.pid not in self.crashed | self.stopped:
                raise DaemonDied(f"daemon {proc.pid} exited by itself with {proc.returncode}")

    def reap(self) -> None:
        """Kill every daemon still running and every process left working inside this app (job children
        of crashed daemons are orphans: not our children, found by their working directory)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        kill_under(self.root)

    def done_count(self) -> int:
        return count_jobs(self.spool / "done")

    def daemon_output(self) -> str:
        return "".join(p.read_text(encoding="utf-8", errors="replace")[-2000:] for p in sorted(self.outputs.iterdir()))


def wait_all_done(project: SoakProject, target: int, deadline: float, label: str,
                  on_tick: Callable[[int], None] | None = None) -> bool:
    """Poll done/ until it holds `target` jobs; False at `deadline`. Prints progress every 15 s."""
    started = last_print = time.monotonic()
    first = project.done_count()
    while True:
        done = project.done_count()
        if done >= target:
            return True
        now = time.monotonic()
        if now > deadline:
            return False
        project.check_alive()
        if on_tick is not None:
            on_tick(done)
        if now - last_print >= 15:
            last_print = now
            print(f"  [{label}] {done}/{target} done, {(done - first) / (now - started):.1f} jobs/s", flush=True)
        time.sleep(0.25)


def check_outcome(result: Result, project: SoakProject, tokens: dict[str, str], sentinel: Path,
                  may_repeat: Iterable[str] | None) -> None:
    """Every job in done/ exactly once and run at least once; no other file in the spool; runs twice only
    for ids in `may_repeat` (None: no crash happened, so no job may run twice)."""
    where = placement(project.spool)
    ids = set(tokens.values())
    counts = executions(sentinel)
    misplaced = {job_id: folders for job_id in ids if (folders := where.get(job_id, [])) != ["done"]}
    never_ran = {tokens[token] for token in tokens if counts[token] == 0}
    repeated = {tokens[token]: n for token, n in counts.items() if n >= 2 and token in tokens}
    strangers = sorted(set(where) - ids)
    unknown_tokens = sorted(set(counts) - set(tokens))
    result.lost = len(set(misplaced) | never_ran)
    result.duplicated = len(repeated)
    result.details.update(executions_total=sum(counts.values()), max_runs_of_one_job=max(counts.values(), default=0))
    if misplaced:
        sample = dict(list(misplaced.items())[:5])
        result.fail(f"{len(misplaced)} job(s) not in done/ exactly once, e.g. {sample}")
    if never_ran:
        result.fail(f"{len(never_ran)} job(s) in done/ never ran, e.g. {sorted(never_ran)[:5]}")
    if strangers:
        result.fail(f"{len(strangers)} unexpected file(s) in the spool, e.g. {strangers[:5]}")
    if unknown_tokens:
        result.fail(f"unknown tokens in the sentinel: {unknown_tokens[:5]}")
    if may_repeat is None:
        if repeated:
            result.fail(f"{len(repeated)} job(s) ran twice or more with no crash, e.g. {list(repeated.items())[:5]}")
    else:
        allowed = set(may_repeat)
        outside = {job_id: n for job_id, n in repeated.items() if job_id not in allowed}
        result.details["jobs_held_by_killed_daemons"] = len(allowed)
        if outside:
            result.fail(f"{len(outside)} job(s) ran twice though no killed daemon held them, "
                        f"e.g. {list(outside.items())[:5]}")
    result.details["scratch_folders_left"] = sum(1 for _ in project.scratch.iterdir())  # TMPDIR of the daemons
    # A killed daemon may leave a staged .part (reaped once old); a blank (spool/blanks.py) never outlives
    # the removal of its daemon's folder, nor a clean stop.
    blanks = [name for name in os.listdir(project.spool / "tmp") if name.startswith(".blank-")]
    result.details["blanks_left_in_tmp"] = len(blanks)
    if blanks:
        result.fail(f"{len(blanks)} blank file(s) left in tmp/ after every daemon stopped, e.g. {blanks[:3]}")
    leftovers = [p.name for p in project.daemon_folders()]
    if leftovers:
        result.notes.append(f"daemon folder(s) left in running/ after a clean stop: {leftovers}")


def stop_all(result: Result, project: SoakProject) -> None:
    """SIGTERM every live daemon; each must exit 0 (SPEC §6)."""
    for proc in project.live():
        code = project.shutdown(proc)
        if code != 0:
            result.fail(f"daemon {proc.pid} exited {code} after SIGTERM")


def log_statuses(project: SoakProject) -> collections.Counter[str]:
    """How many event lines of each status the daemons wrote (SPEC §8), in either log format."""
    from spoold.logs import parse_event_line

    counter: collections.Counter[str] = collections.Counter()
    for line in project.log_lines():
        event = parse_event_line(line)
        if event is not None and "status" in event.fields:
            counter[event.fields["status"]] += 1
    return counter
