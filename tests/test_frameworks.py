"""`bootstrap` (SPEC §10) with real frameworks: a small Django project on SQLite and a small Flask app,
copied into a temporary folder, their jobs run by a real daemon in each isolation mode."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import HERE, Project, wait_for

APPS = HERE / "apps"
MODES = [pytest.param("auto", "process", id="process"), pytest.param("auto", "worker", id="worker")]


def framework_project(tmp_path: Path, app: str, *, namespace: str, bootstrap: str, allowed: str,
                      start_method: str, isolation: str) -> Project:
    root = tmp_path / app
    shutil.copytree(APPS / app, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "bgjobs.toml").write_text(f"""\
spool_dir = "spool"
log_dir = "logs"
namespace = "{namespace}"
bootstrap = "{bootstrap}"
workers = 2
start_method = "{start_method}"
isolation = "{isolation}"
retry_attempts = 0
settle_seconds = 0.5
rescan_seconds = 1

[allowed_jobs]
{allowed} = ["handle"]
""", encoding="utf-8")
    return Project(root)


def setups(project: Project) -> list[int]:
    """The pid of every process that ran the bootstrap, one line per run."""
    log = project.root / "setups.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def results(project: Project) -> list[Any]:
    return [project.doc("done", name.removesuffix(".json"))["result"] for name in project.names("done")]


# -- Django ------------------------------------------------------------------------------------------

def django_env(project: Project) -> dict[str, str]:
    return dict(project.env(), DJANGO_SETTINGS_MODULE="djsite.settings")


def drain_django(project: Project, *, timeout: float) -> None:
    """`spoold start --drain` with the Django settings in its environment, as `manage.py` would have them."""
    drained = subprocess.run([sys.executable, "-m", "spoold", "start", "--drain", "--config", str(project.config)],
                             cwd=project.root, env=django_env(project), capture_output=True, text=True, timeout=timeout)
    assert drained.returncode == 0, drained.stderr


def manage(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "django", *args], cwd=project.root, env=django_env(project),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("start_method", "isolation"), MODES)
def test_500_orm_jobs_on_two_workers_write_every_row_with_setup_once_per_process(
        tmp_path: Path, start_method: str, isolation: str) -> None:
    project = framework_project(tmp_path, "django_site", namespace="notejobs", bootstrap="djsite.jobsetup:setup",
                                allowed="CreateNote", start_method=start_method, isolation=isolation)
    manage(project, "migrate", "--run-syncdb", "--verbosity", "0")
    manage(project, "enqueue_notes", "500")  # submits from transaction.on_commit
    assert len(project.names("medium")) == 500

    drain_django(project, timeout=200)

    assert len(project.names("done")) == 500
    assert project.names("failed") == [] and project.names("rejected") == []
    assert not any("locked" in line for line in project.log_lines(errors=True))
    with sqlite3.connect(project.root / "db.sqlite3") as db:
        rows = db.execute("SELECT title, pid FROM notes_note").fetchall()
    assert sorted(title for title, _ in rows) == sorted(f"note-1-{i}" for i in range(500))
    assert sorted(results(project)) == sorted(range(1, 501))  # each job returned its row's key
    ran = setups(project)
    writers = {pid for _, pid in rows}
    if isolation == "process":
        # Once, in the fork server; every job is a fork of it, none ran the bootstrap again.
        assert len(ran) == 1
        assert ran[0] not in writers and len(writers) > 2
    else:
        # Once in each long-lived worker (two slots, two workers), and nowhere else.
        assert len(ran) == len(set(ran)) <= 2
        assert writers == set(ran)


def test_django_jobs_under_spawn_bootstrap_in_each_child(tmp_path: Path) -> None:
    project = framework_project(tmp_path, "django_site", namespace="notejobs", bootstrap="djsite.jobsetup:setup",
                                allowed="CreateNote", start_method="spawn", isolation="process")
    manage(project, "migrate", "--run-syncdb", "--verbosity", "0")
    manage(project, "enqueue_notes", "8")
    drain_django(project, timeout=100)
    assert len(project.names("done")) == 8 and project.names("failed") == []
    with sqlite3.connect(project.root / "db.sqlite3") as db:
        writers = {pid for (pid,) in db.execute("SELECT pid FROM notes_note")}
    assert len(setups(project)) == 9 and writers < set(setups(project))  # 8 children and the check at start


def test_a_now_run_bootstraps_its_child(project: Project) -> None:
    write_failing_app(project)
    project.set_keys(bootstrap='"appsetup:setup"')
    project.config.write_text(project.config.read_text().replace("[allowed_jobs]",
                                                                 '[allowed_jobs]\nBootstrapped = ["handle"]'))
    result = project.run_job("Bootstrapped", "handle", "--now")
    assert result.returncode == 0, result.stderr
    assert '"ready": true' in result.stdout
    assert len(setups(project)) == 1


def test_a_fork_server_child_does_not_reuse_a_connection_the_server_opened(tmp_path: Path) -> None:
    """A job module that queries while it is imported leaves a connection open in the fork server; the
    children forget it (they never close the server's) and open their own."""
    project = framework_project(tmp_path, "django_site", namespace="notejobs", bootstrap="djsite.jobsetup:setup",
                                allowed="CreateNote", start_method="auto", isolation="process")
    (project.root / "notejobs" / "create_note.py").write_text(
        (project.root / "notejobs" / "create_note.py").read_text()
        + "\nfrom django.db import connection\n\nSERVER_CONNECTION = id(connection.cursor().connection)\n")
    manage(project, "migrate", "--run-syncdb", "--verbosity", "0")
    manage(project, "enqueue_notes", "20")
    drain_django(project, timeout=100)
    assert len(project.names("done")) == 20 and project.names("failed") == []


# -- Flask -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("start_method", "isolation"),
                         [*MODES, pytest.param("spawn", "process", id="spawn")])
def test_flask_jobs_run_inside_the_app_context_set_up_once_per_process(
        tmp_path: Path, start_method: str, isolation: str) -> None:
    project = framework_project(tmp_path, "flask_site", namespace="flaskjobs", bootstrap="flaskapp.jobsetup:setup",
                                allowed="SendWelcome", start_method=start_method, isolation=isolation)
    names = [f"user{i}" for i in range(12)]
    submit = ("import sys\nfrom flaskapp import create_app\nclient = create_app().test_client()\n"
              "for name in sys.argv[1:]:\n    print(client.post(f'/signup/{name}').get_json()['id'])\n")
    submitted = subprocess.run([sys.executable, "-c", submit, *names], cwd=project.root, env=project.env(),
                               capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    assert len(submitted.stdout.split()) == 12

    drained = project.drain()
    assert drained.returncode == 0, drained.stderr

    done = results(project)
    assert len(done) == 12 and project.names("failed") == []
    assert {r["message"] for r in done} == {f"Welcome, {n}!" for n in names}
    assert {r["app"] for r in done} == {"flaskapp"}
    assert sorted(p.name for p in (project.root / "outbox").iterdir()) == sorted(f"{n}.txt" for n in names)
    ran, job_pids = setups(project), {r["pid"] for r in done}
    if start_method == "spawn":
        # Each spawned child bootstraps itself, and the check at start once more.
        assert len(ran) == 13 and job_pids < set(ran)
    elif isolation == "worker":
        assert len(ran) <= 2 and job_pids == set(ran)
    else:
        assert len(ran) == 1 and not job_pids & set(ran)


# -- a bootstrap or a job module that fails ----------------------------------------------------------

BROKEN_MODULES = {
    "syntax_error_job": "class SyntaxErrorJob:\n    def handle(self) -> None\n        pass\n",
    "missing_dependency_job": "import no_such_library_anywhere\n\n\nclass MissingDependencyJob:\n    pass\n",
    "raising_job": "raise RuntimeError('cannot read its settings')\n",
}


def write_failing_app(project: Project) -> None:
    (project.root / "appsetup.py").write_text(
        "import os\nfrom pathlib import Path\n\nSTATE = {}\n\n\n"
        "def setup() -> None:\n    Path(__file__).with_name('setups.log').open('a').write(f'{os.getpid()}\\n')\n"
        "    STATE['ready'] = True\n\n\n"
        "def broken() -> None:\n    raise ConnectionError('database unreachable')\n")
    (project.root / "jobs" / "bootstrapped.py").write_text(
        "import asyncio\nimport os\n\nimport appsetup\n\n\nclass Bootstrapped:\n"
        "    def handle(self) -> dict[str, object]:\n"
        "        return {'ready': appsetup.STATE.get('ready', False), 'pid': os.getpid()}\n\n"
        "    async def later(self, value: int) -> int:\n        await asyncio.sleep(0.01)\n        return value * 2\n")
    for module, text in BROKEN_MODULES.items():
        (project.root / "jobs" / f"{module}.py").write_text(text)
    (project.root / "jobs" / "namespaced").mkdir()
    (project.root / "jobs" / "namespaced" / "__init__.py").write_text("raise ImportError('half-installed')\n")


ALL_MODES = [*MODES, pytest.param("spawn", "process", id="spawn")]


@pytest.mark.parametrize(("start_method", "isolation"), ALL_MODES)
def test_a_bootstrap_that_raises_stops_start_with_exit_2_before_anything_is_claimed(
        project: Project, start_method: str, isolation: str) -> None:
    write_failing_app(project)
    project.set_keys(bootstrap='"appsetup:broken"', start_method=f'"{start_method}"', isolation=f'"{isolation}"')
    project.config.write_text(project.config.read_text().replace("[allowed_jobs]", "[allowed_jobs]\n"
                                                                 'Bootstrapped = ["handle"]'))
    job_id = project.submit("Bootstrapped")
    result = project.drain()
    assert result.returncode == 2
    assert (f"spoold: {project.config}: bootstrap: bootstrap appsetup:broken raised ConnectionError: "
            "database unreachable") in result.stderr.splitlines()
    assert project.names("medium") == [f"{job_id}.json"]  # never claimed, never run
    assert project.daemon_folders() == []


@pytest.mark.parametrize(("start_method", "isolation"), ALL_MODES)
def test_allowed_classes_that_do_not_import_are_named_at_start_and_the_others_run(
        project: Project, start_method: str, isolation: str) -> None:
    write_failing_app(project)
    project.set_keys(bootstrap='"appsetup:setup"', start_method=f'"{start_method}"', isolation=f'"{isolation}"')
    allowed = ['Bootstrapped = ["handle", "later"]', 'SyntaxErrorJob = ["handle"]',
               'MissingDependencyJob = ["handle"]', 'RaisingJob = ["handle"]', 'Namespaced = ["handle"]']
    project.config.write_text(project.config.read_text().replace("[allowed_jobs]",
                                                                 "[allowed_jobs]\n" + "\n".join(allowed)))
    good, doubled = project.submit("Bootstrapped"), project.submit("Bootstrapped", "later", [21])
    bad = project.submit("SyntaxErrorJob")
    result = project.drain()
    assert result.returncode == 0, result.stderr
    problems = {line.split("allowed job ", 1)[1].split(" ", 1)[0]: line for line in result.stderr.splitlines()
                if "cannot be imported" in line}
    assert set(problems) == {"SyntaxErrorJob", "MissingDependencyJob", "RaisingJob", "Namespaced", "Missing"}
    assert "SyntaxError" in problems["SyntaxErrorJob"]
    assert "ModuleNotFoundError: No module named 'no_such_library_anywhere'" in problems["MissingDependencyJob"]
    assert "RuntimeError: cannot read its settings" in problems["RaisingJob"]
    assert "ImportError: half-installed" in problems["Namespaced"]
    # The others run, with what the bootstrap set up; an `async def` method is awaited.
    assert project.doc("done", good)["result"]["ready"] is True
    assert project.doc("done", doubled)["result"] == 42
    assert project.doc("failed", bad)["error"]["type"] == "SyntaxError"


def test_each_spawned_child_bootstraps_itself_and_a_failing_bootstrap_later_fails_its_job(project: Project) -> None:
    """A bootstrap that starts failing after the daemon started (here: its module edited) fails each
    job it should have prepared, with BootstrapError naming the cause; the daemon goes on."""
    write_failing_app(project)
    project.set_keys(bootstrap='"appsetup:setup"', start_method='"spawn"')
    project.config.write_text(project.config.read_text().replace("[allowed_jobs]",
                                                                 '[allowed_jobs]\nBootstrapped = ["handle"]'))
    daemon = project.start()
    first = project.submit("Bootstrapped")
    wait_for(lambda: project.has("done", first), 20, "the first job done")
    (project.root / "appsetup.py").write_text("def setup() -> None:\n    raise OSError('settings file gone')\n")
    second = project.submit("Bootstrapped")
    wait_for(lambda: project.has("failed", second), 20, "the second job failed")
    error = project.doc("failed", second)["error"]
    assert error["type"] == "BootstrapError"
    assert error["message"] == "bootstrap appsetup:setup raised OSError: settings file gone"
    assert project.stop(daemon)[0] == 0
    assert project.doc("done", first)["result"]["ready"] is True
    assert len(setups(project)) == 2  # the check at start, and the first job's child
