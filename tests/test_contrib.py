"""contrib/: the systemd unit, the supervisord program and the launchd plist, each as far as this machine allows.

The files name the app's folder /srv/app (its bgjobs.toml, its .venv, its job code); each test puts a
Project there instead (and /srv/app/.venv is a link to the virtualenv running the tests), then runs the
exact command line the file names: start, jobs run, SIGHUP reloads, the stop signal ends it with exit 0
within the grace period. systemd itself does not run in this container, so the unit is checked by
`systemd-analyze verify` and its commands are run the way systemd would run them; supervisord runs for real;
launchd needs macOS, so the plist is parsed with plistlib and its ProgramArguments run here.
"""

from __future__ import annotations

import configparser
import dataclasses
import getpass
import json
import os
import plistlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Project, free_port, read_pid, wait_for

from spoold.config import Config

CONTRIB = REPO / "contrib"
APP = "/srv/app"
GRACE = 6.0  # the temporary config's shutdown_grace_seconds
SLEEP = "2.5"  # each job running at the stop: it finishes well within the grace period, and both
# still run when the second starts, even on a loaded machine
RELOADED = "configuration reloaded from "


def default_grace() -> float:
    """shutdown_grace_seconds when bgjobs.toml does not set it: what the files' stop timeouts must exceed."""
    [field] = [f for f in dataclasses.fields(Config) if f.name == "shutdown_grace_seconds"]
    assert isinstance(field.default, float)
    return field.default


DEFAULT_GRACE = default_grace()


def localise(text: str, project: Project) -> str:
    return text.replace(APP, str(project.root))


def install_app(project: Project) -> None:
    """The layout the contrib files expect: /srv/app/.venv/bin/spoold and the log folder of their output."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "spoold").is_file():
        pytest.fail(f"{venv}/bin/spoold is missing: the tests must run from a virtualenv with spoold installed "
                    "(make test sets one up)")
    (project.root / ".venv").symlink_to(venv, target_is_directory=True)
    (project.root / "storage" / "logs").mkdir(parents=True)
    project.configure(workers=1, shutdown_grace_seconds=GRACE)


def clean_env(project: Project) -> dict[str, str]:
    """What systemd and launchd give a service: a short PATH and little else (none of the test's variables)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(project.root), "LANG": "C.UTF-8"}


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def daemon_pid(project: Project) -> int:
    """The pid of the one live daemon's folder in running/ (its `.info`)."""
    def live() -> int | None:
        for folder in project.daemon_folders():
            try:
                info = json.loads((folder / ".info").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(info.get("pid"), int) and _alive(info["pid"]):
                return int(info["pid"])
        return None

    return int(wait_for(live, 15, "a live daemon in running/"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = read(Path(f"/proc/{pid}/stat"))
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_quietly(pid: int) -> None:
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def runs_a_job(project: Project) -> None:
    job_id = project.submit("Echo", "handle", ["hello"])
    wait_for(lambda: project.has("done", job_id), 15, f"job {job_id} in done/")
    assert project.doc("done", job_id)["result"] == ["hello"]


def reloads_to_two_workers(project: Project, send_hup: Callable[[], None], output: Path) -> None:
    """SIGHUP re-reads bgjobs.toml: workers 1 -> 2, seen in the log and in two jobs running at once."""
    project.configure(workers=2, shutdown_grace_seconds=GRACE)
    before = read(output).count(RELOADED)
    send_hup()
    wait_for(lambda: read(output).count(RELOADED) > before, 10, f"'{RELOADED}' in {output}")


def stops_cleanly(project: Project, tmp_path: Path, stop: Callable[[], None],
                  stopped: Callable[[], int | None], limit: float) -> None:
    """Two jobs running at once (so the reload took), then the stop: both finish, exit 0, within the grace."""
    markers = [tmp_path / f"sleep{i}.pid" for i in range(2)]
    ids = [project.submit("Sleep", "handle", [SLEEP, str(marker)]) for marker in markers]
    for marker in markers:
        read_pid(marker)
    assert not any(project.has("done", job_id) for job_id in ids), "both jobs started while both still run"
    asked = time.monotonic()
    stop()
    code = wait_for(lambda: (c := stopped()) is not None and (c,), limit + 5, "the daemon exited")[0]
    took = time.monotonic() - asked
    assert code == 0
    assert took < GRACE < limit, f"stopped in {took:.1f}s; grace {GRACE}s, the file's stop timeout {limit}s"
    assert all(project.has("done", job_id) for job_id in ids), "the running jobs finished before the exit"
    assert project.daemon_folders() == []


# -- systemd --------------------------------------------------------------------------------------------


def unit_service(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(text)
    return dict(parser["Service"])


def test_the_systemd_unit_passes_systemd_analyze_verify(project: Project, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (.ci/run installs it when missing)")
    install_app(project)
    unit = tmp_path / "spoold.service"
    unit.write_text(localise((CONTRIB / "systemd" / "spoold.service").read_text(), project))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too, with a warning: any output is a failure.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done.stdout + done.stderr


def test_the_systemd_unit_says_how_to_stop_and_restart_spoold() -> None:
    service = unit_service((CONTRIB / "systemd" / "spoold.service").read_text())
    assert service["Type"] in ("simple", "exec")
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert float(service["TimeoutStopSec"]) > DEFAULT_GRACE
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["User"] and service["WorkingDirectory"] == APP
    assert shlex.split(service["ExecStart"]) == [f"{APP}/.venv/bin/spoold", "start", "--config",
                                                  f"{APP}/bgjobs.toml"]


def test_the_systemd_units_commands_start_reload_and_stop_spoold(project: Project, tmp_path: Path) -> None:
    install_app(project)
    service = unit_service(localise((CONTRIB / "systemd" / "spoold.service").read_text(), project))
    journal = tmp_path / "journal.log"
    with journal.open("ab") as out:  # systemd sends both streams to the journal
        proc = subprocess.Popen(shlex.split(service["ExecStart"]), cwd=service["WorkingDirectory"],
                                env=clean_env(project), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    project.procs.append(proc)  # type: ignore[arg-type]  # reaped (killpg) whatever happens
    assert daemon_pid(project) == proc.pid  # Type=exec: the main pid is spoold itself
    runs_a_job(project)

    def reload() -> None:
        argv = [word.replace("$MAINPID", str(proc.pid)) for word in shlex.split(service["ExecReload"])]
        subprocess.run(argv, check=True, timeout=10)

    reloads_to_two_workers(project, reload, journal)
    kill_signal = signal.Signals[service["KillSignal"]]
    stops_cleanly(project, tmp_path, lambda: proc.send_signal(kill_signal), proc.poll,
                  float(service["TimeoutStopSec"]))
    assert "stopping: 2 running job(s) get 6s to finish" in read(journal)


# -- supervisord ----------------------------------------------------------------------------------------


SUPERVISORD_CONF = """\
[supervisord]
nodaemon=true
logfile={root}/supervisord.log
pidfile={root}/supervisord.pid
childlogdir={root}
loglevel=info

[inet_http_server]
port=127.0.0.1:{port}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=http://127.0.0.1:{port}

[include]
files = {root}/conf.d/*.conf
"""


class Supervisor:
    """A supervisord of the test's own, with the contrib program included, and its supervisorctl."""

    def __init__(self, project: Project, root: Path) -> None:
        self.root, self.port = root, free_port()
        (root / "conf.d").mkdir(parents=True)
        self.conf = root / "supervisord.conf"
        self.conf.write_text(SUPERVISORD_CONF.format(root=root, port=self.port))
        program = localise((CONTRIB / "supervisord" / "spoold.conf").read_text(), project)
        program = re.sub(r"(?m)^user=.*$", f"user={getpass.getuser()}", program)  # who runs the test
        (root / "conf.d" / "spoold.conf").write_text(program)
        self.program = configparser.ConfigParser(interpolation=None)
        self.program.read_string(program)
        bin_dir = Path(sys.prefix) / "bin"
        self.proc = subprocess.Popen([str(bin_dir / "supervisord"), "-c", str(self.conf)], cwd=root,
                                     env=clean_env(project), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        project.procs.append(self.proc)  # type: ignore[arg-type]
        self.spoold_pids: set[int] = set()

    def ctl(self, *args: str) -> str:
        done = subprocess.run([str(Path(sys.prefix) / "bin" / "supervisorctl"), "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=30)
        return done.stdout + done.stderr

    def state(self) -> str:
        words = self.ctl("status", "spoold").split()
        return words[1] if len(words) > 1 else ""

    def running_pid(self) -> int:
        """The pid of spoold once supervisord counts it RUNNING (up for startsecs)."""
        def up() -> int | None:
            words = self.ctl("status", "spoold").split()
            if len(words) >= 4 and words[1] == "RUNNING" and words[2] == "pid":
                return int(words[3].rstrip(","))
            return None

        pid = int(wait_for(up, 20, "spoold RUNNING under supervisord"))
        self.spoold_pids.add(pid)
        return pid

    def log(self) -> str:
        return read(self.root / "supervisord.log")

    def close(self) -> None:
        """spoold runs in a process group of its own (supervisord's setpgrp), so the reaper would miss it."""
        for pid in self.spoold_pids:
            kill_quietly(pid)


@pytest.fixture
def supervisor(project: Project, tmp_path: Path) -> Iterator[Supervisor]:
    install_app(project)
    sup = Supervisor(project, tmp_path / "sv")
    try:
        yield sup
    finally:
        sup.close()


def test_the_supervisord_program_says_how_to_stop_and_restart_spoold() -> None:
    program = configparser.ConfigParser(interpolation=None)
    program.read_string((CONTRIB / "supervisord" / "spoold.conf").read_text())
    section = program["program:spoold"]
    assert shlex.split(section["command"]) == [f"{APP}/.venv/bin/spoold", "start", "--config", f"{APP}/bgjobs.toml"]
    assert section["directory"] == APP and section["user"]
    assert section["stopsignal"] == "TERM" and float(section["stopwaitsecs"]) > DEFAULT_GRACE
    assert section["autorestart"] == "unexpected" and section["exitcodes"] == "0,2"
    assert section["stopasgroup"] == "false" and section["killasgroup"] == "true"


def test_supervisord_runs_spoold_restarts_it_after_a_sigkill_and_stops_it_cleanly(
        project: Project, supervisor: Supervisor, tmp_path: Path) -> None:
    first = supervisor.running_pid()
    assert daemon_pid(project) == first
    runs_a_job(project)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: "exited: spoold (terminated by SIGKILL; not expected)" in supervisor.log(), 10,
             "supervisord saw the SIGKILL")
    second = supervisor.running_pid()
    assert second != first
    wait_for(lambda: daemon_pid(project) == second, 10, "the restarted daemon in running/")
    runs_a_job(project)
    output = Path(supervisor.program["program:spoold"]["stdout_logfile"])

    def reload() -> None:
        assert supervisor.ctl("signal", "HUP", "spoold").strip() == "spoold: signalled"

    reloads_to_two_workers(project, reload, output)
    stopping: dict[str, Any] = {}

    def stop() -> None:
        stopping["proc"] = subprocess.Popen([str(Path(sys.prefix) / "bin" / "supervisorctl"), "-c",
                                             str(supervisor.conf), "stop", "spoold"],
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stopped() -> int | None:
        if "stopped: spoold (exit status 0)" in supervisor.log():
            return 0
        if re.search(r"stopped: spoold \((?!exit status 0)", supervisor.log()):
            return 1
        return None

    stops_cleanly(project, tmp_path, stop, stopped, float(supervisor.program["program:spoold"]["stopwaitsecs"]))
    out, _ = stopping["proc"].communicate(timeout=30)
    assert out.strip() == "spoold: stopped"
    assert supervisor.state() == "STOPPED"
    assert "stopping: 2 running job(s) get 6s to finish" in read(output)


# -- launchd --------------------------------------------------------------------------------------------


def load_plist(project: Project | None = None) -> dict[str, Any]:
    text = (CONTRIB / "launchd" / "org.spoold.daemon.plist").read_text()
    plist: dict[str, Any] = plistlib.loads((localise(text, project) if project else text).encode())
    return plist


def test_the_launchd_plist_parses_and_says_how_to_stop_and_restart_spoold() -> None:
    plist = load_plist()
    assert plist["Label"] == "org.spoold.daemon"
    assert plist["ProgramArguments"] == [f"{APP}/.venv/bin/spoold", "start", "--config", f"{APP}/bgjobs.toml"]
    assert plist["WorkingDirectory"] == APP and plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ExitTimeOut"] > DEFAULT_GRACE
    assert plist["StandardOutPath"].startswith(APP) and plist["StandardErrorPath"].startswith(APP)


def test_the_launchd_program_arguments_start_reload_and_stop_spoold(project: Project, tmp_path: Path) -> None:
    install_app(project)
    plist = load_plist(project)
    err = Path(plist["StandardErrorPath"])
    with Path(plist["StandardOutPath"]).open("ab") as out, err.open("ab") as errors:  # launchd appends
        proc = subprocess.Popen(plist["ProgramArguments"], cwd=plist["WorkingDirectory"],
                                env=clean_env(project) | {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=errors, start_new_session=True)
    project.procs.append(proc)  # type: ignore[arg-type]
    assert daemon_pid(project) == proc.pid
    runs_a_job(project)
    reloads_to_two_workers(project, lambda: proc.send_signal(signal.SIGHUP), err)  # launchctl kill HUP
    stops_cleanly(project, tmp_path, lambda: proc.send_signal(signal.SIGTERM), proc.poll,
                  float(plist["ExitTimeOut"]))
    assert "stopping: 2 running job(s) get 6s to finish" in read(err)
