"""Real daemons and CLIs as subprocesses on a spool under tmp_path; every process is reaped."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from spoold import run_background_job
from spoold.paths import SpoolPaths

HERE = Path(__file__).parent
REPO = HERE.parent

BASE_CONFIG = """\
spool_dir = "spool"
log_dir = "logs"
namespace = "jobs"
workers = {workers}
retry_attempts = {retry_attempts}
retry_delay_seconds = {retry_delay_seconds}
max_execution_time = {max_execution_time}
settle_seconds = {settle_seconds}
shutdown_grace_seconds = {shutdown_grace_seconds}
rescan_seconds = {rescan_seconds}
max_job_bytes = {max_job_bytes}

[allowed_jobs]
Echo = ["handle", "shout"]
Sleep = ["handle"]
Raise = ["handle"]
KillSelf = ["handle"]
WriteSentinel = ["handle"]
SlowSentinel = ["handle"]
Allocate = ["handle"]
KillParent = ["handle"]
WhoAmI = ["handle"]
SpawnGrandchild = ["handle"]
FailTimes = ["handle"]
NotSerializable = ["handle"]
Missing = ["handle"]
{extra}
"""
DEFAULTS: dict[str, Any] = {"workers": 2, "retry_attempts": 0, "retry_delay_seconds": 0,
                            "max_execution_time": 30, "settle_seconds": 0.5, "shutdown_grace_seconds": 2,
                            "rescan_seconds": 1, "max_job_bytes": 65536, "extra": ""}


class Condition(Protocol):
    """What wait_for polls: called with no arguments, true once the wait is over.

    A Protocol rather than Callable[[], Any]: mypy cannot infer a lambda with a default argument
    (`lambda job_id=job_id: ...`, the way to bind a loop variable) against a Callable context
    (python/mypy#15459), while it checks one against this protocol.
    """

    def __call__(self) -> Any: ...


def wait_for(predicate: Condition, timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"not true within {timeout}s: {what or predicate}"
        time.sleep(0.02)
    return value


def child_pids(pid: int) -> set[int]:
    """The live children of `pid`, from /proc (Linux): what to kill with a process that did not reap them."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def process_gone(pid: int) -> bool:
    """True once `pid` has exited; a zombie left to a reaper that is not the daemon (pid 1) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


class Project:
    """A folder with bgjobs.toml, a `jobs` namespace and a spool: what a user's app looks like."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "bgjobs.toml"
        self.spool = root / "spool"
        self.logs = root / "logs"
        self.procs: list[subprocess.Popen[str]] = []

    def configure(self, **overrides: Any) -> None:
        self.config.write_text(BASE_CONFIG.format(**(DEFAULTS | overrides)), encoding="utf-8")

    def set_keys(self, **keys: object) -> None:
        """Add top-level keys (values as TOML text) to the config; they must come before its tables."""
        lines = "".join(f"{key} = {value}\n" for key, value in keys.items())
        self.config.write_text(self.config.read_text().replace("[allowed_jobs]", lines + "\n[allowed_jobs]"))

    # -- submitting and dropping ---------------------------------------------------------------
    def submit(self, class_name: str, method: str = "handle", params: Any = None, **kwargs: Any) -> str:
        return run_background_job(class_name, method, params, config=self.config, **kwargs)

    def drop(self, folder: str, name: str, content: bytes | str | dict[str, Any]) -> Path:
        path = self.spool / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            content = json.dumps(content)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    # -- processes -----------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        # XDG_CACHE_HOME: what a dashboard keeps between its runs stays in the test's own folder.
        return dict(os.environ, PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(self.root / ".cache"))

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "spoold", "start", "--config", str(self.config), *args],
                                cwd=self.root, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        self.procs.append(proc)
        wait_for(lambda: self.daemon_folders(), 10, "daemon folder in running/")
        return proc

    def cli(self, *args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "spoold", *args], cwd=cwd or self.root, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def run_job(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(REPO / "run_job.py"), *args, "--config", str(self.config)],
                              cwd=self.root, env=self.env(), capture_output=True, text=True, timeout=timeout)

    def start_run_job(self, *args: str, stderr: int = subprocess.PIPE) -> subprocess.Popen[str]:
        """`run_job.py ARGS --config F` left running (a `--now` run to signal or cancel); reaped at the end."""
        proc = subprocess.Popen([sys.executable, str(REPO / "run_job.py"), *args, "--config", str(self.config)],
                                cwd=self.root, env=self.env(), stdout=subprocess.PIPE, stderr=stderr, text=True,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def drain(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.cli("start", "--drain", "--config", str(self.config), *args, timeout=timeout)

    def stop(self, proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str]:
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out

    # -- looking at the spool ------------------------------------------------------------------
    def daemon_folders(self) -> list[Path]:
        running = self.spool / "running"
        if not running.is_dir():
            return []
        return [p for p in running.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def names(self, folder: str) -> list[str]:
        """Job file names in a state folder ("running": in every daemon's folder), sorted."""
        folders = self.daemon_folders() if folder == "running" else [self.spool / folder]
        names = []
        for path in folders:
            try:  # a daemon's folder goes away when it stops
                names += [name for name in os.listdir(path) if name.endswith(".json") and not name.startswith(".")]
            except FileNotFoundError:
                continue
        return sorted(names)

    def doc(self, folder: str, job_id: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads((self.spool / folder / f"{job_id}.json").read_text(encoding="utf-8"))
        return value

    def has(self, folder: str, job_id: str) -> bool:
        return f"{job_id}.json" in self.names(folder)

    def log_lines(self, errors: bool = False) -> list[str]:
        path = self.logs / ("background_jobs_errors.log" if errors else "background_jobs.log")
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def events(self, job_id: str) -> list[str]:
        """`status=` values of the job's log lines, in order."""
        return [part.split("=", 1)[1] for line in job_lines(self, job_id)
                for part in line.split() if part.startswith("status=")]

    def reap(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()
            if proc.stderr:
                proc.stderr.close()


# -- helpers several test files share ----------------------------------------------------------------

def job_lines(project: Project, job_id: str, *, errors: bool = False) -> list[str]:
    """The job's lines in the event log (or the errors log), in order."""
    return [line for line in project.log_lines(errors) if f" job={job_id} " in line]


def settled_events(project: Project, job_id: str, count: int) -> list[str]:
    """The job's `status=` values once `count` are logged: a running daemon moves the file, then logs."""
    wait_for(lambda: len(project.events(job_id)) >= count, 5, f"{count} log lines for job {job_id}")
    return project.events(job_id)


def copies(project: Project, job_id: str) -> list[str]:
    """Every place in the spool holding a file named ID.json (running/ and day shards included), as paths
    relative to the spool."""
    return sorted(str(p.relative_to(project.spool)) for p in project.spool.rglob(f"{job_id}.json"))


def read_pid(path: Path) -> int:
    """The pid a job wrote to `path` (Sleep's marker, SpawnGrandchild's pid file), once it is there."""
    return int(wait_for(lambda: path.exists() and path.read_text().strip(), 10, f"pid in {path}"))


@pytest.fixture
def paths(tmp_path: Path) -> SpoolPaths:
    """An empty spool with its state folders, for the spool's classes used without a daemon."""
    spool = SpoolPaths(tmp_path / "spool")
    spool.create()
    return spool


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "app"
    root.mkdir()
    shutil.copytree(HERE / "jobs", root / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    proj = Project(root)
    proj.configure()
    try:
        yield proj
    finally:
        proj.reap()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_ok(url: str) -> bool:
    """True once `url` answers 200 (a server still starting refuses the connection)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


HOSTILE = ["<script>alert(1)</script>", '<img src=x onerror="alert(1)">']


def fill_for_dashboard(project: Project) -> tuple[list[str], list[str], str]:
    """What the dashboard tests look at: two done, two failed (a RuntimeError "boom" and a ValueError),
    one rejected file, as a real daemon leaves them (`spoold start --drain`), then a hostile job waiting
    in low/. Returns (done ids, failed ids, the waiting id)."""
    done = [project.submit("Echo", "handle", [str(i)]) for i in range(2)]
    failed = [project.submit("Raise", "handle", ["RuntimeError", "boom"]),
              project.submit("Raise", "handle", ["ValueError", "bad input"])]
    project.drop("medium", "broken.json", "{not json")
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    return done, failed, project.submit("Echo", "handle", HOSTILE, priority="low")


@pytest.fixture
def crash() -> Iterator[Any]:
    """A crashfs (tests/crashfs.py), not mounted yet; a machine without FUSE fails the test with the reason."""
    from crashfs import CrashFS, CrashFSError  # only the tests that use it load it

    problem = None
    try:
        fs = CrashFS()
    except CrashFSError as e:
        problem = e
    if problem is not None:
        pytest.fail(str(problem), pytrace=False)
    try:
        yield fs
    finally:
        fs.close()
