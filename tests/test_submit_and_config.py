"""Submitting a job and finding and checking bgjobs.toml (SPEC §4, §6, §7), through every front door."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Project

import spoold
from spoold import SubmitError, run_background_job
from spoold.errors import ConfigError

SPOOLD_SCRIPT = Path(sys.executable).parent / "spoold"
KNOWN_KEYS = ("spool_dir, log_dir, namespace, workers, retry_attempts, retry_delay_seconds, retry_backoff, "
              "max_execution_time, max_job_bytes, settle_seconds, shutdown_grace_seconds, rescan_seconds, "
              "priority_aging_seconds, keep_done_days, keep_failed_days, durability, file_events, observer, "
              "memory_limit_mb, "
              "start_method, isolation, max_jobs_per_worker, bootstrap, log_format, metrics_port, metrics_host, "
              "heartbeat_seconds, lease_seconds, "
              "allowed_jobs, job_priority, retry_on, dashboard, schedule, concurrency")


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A front door as a real process, with $BGJOBS_CONFIG removed unless `env` sets it."""
    full = {k: v for k, v in os.environ.items() if k != "BGJOBS_CONFIG"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run(argv, cwd=cwd, env=full | (env or {}), capture_output=True, text=True, timeout=60)


def spoold_cmd(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "spoold", *args], cwd, env)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a folder): what "nothing written" compares."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in root.rglob("*")}


def job_files(spool: Path) -> list[str]:
    return sorted(str(p.relative_to(spool)) for p in spool.rglob("*.json")) if spool.exists() else []


def minimal_config(spool_dir: str = "spool", body: str = "") -> str:
    return (f'spool_dir = "{spool_dir}"\nlog_dir = "logs"\nnamespace = "jobs"\n{body}\n'
            '[allowed_jobs]\nEcho = ["handle"]\n')


# -- run_background_job ------------------------------------------------------------------------------

def test_run_background_job_returns_the_id_of_a_ready_file_in_medium(project: Project) -> None:
    before = datetime.now(UTC)
    job_id = project.submit("Echo", "handle", ["a", 1])
    after = datetime.now(UTC)
    assert job_files(project.spool) == [f"medium/{job_id}.json"]
    doc = project.doc("medium", job_id)
    assert doc["id"] == job_id
    assert (doc["class"], doc["method"], doc["params"]) == ("Echo", "handle", ["a", 1])
    assert (doc["status"], doc["attempts"]) == ("ready", 0)
    assert before <= datetime.fromisoformat(doc["created_at"]) <= after
    assert list((project.spool / "tmp").iterdir()) == []


def test_run_background_job_without_params_stores_an_empty_list(project: Project) -> None:
    job_id = project.submit("Echo", "handle")
    assert project.doc("medium", job_id)["params"] == []


@pytest.mark.parametrize(("priority", "configured", "folder"), [
    (None, "", "medium"),
    ("high", "", "high"),
    ("low", "", "low"),
    (None, '[job_priority]\nEcho = "high"', "high"),
    ("low", '[job_priority]\nEcho = "high"', "low"),
])
def test_the_folder_is_the_priority_argument_else_job_priority_else_medium(
        project: Project, priority: str | None, configured: str, folder: str) -> None:
    project.configure(extra=configured)
    job_id = project.submit("Echo", "handle", [], priority=priority)
    assert job_files(project.spool) == [f"{folder}/{job_id}.json"]
    assert list((project.spool / "tmp").iterdir()) == []


def test_job_priority_of_another_class_does_not_move_this_one(project: Project) -> None:
    project.configure(extra='[job_priority]\nSleep = "high"')
    job_id = project.submit("Echo")
    assert job_files(project.spool) == [f"medium/{job_id}.json"]


def test_a_delayed_job_waits_in_scheduled_with_run_at_that_many_seconds_ahead(project: Project) -> None:
    before = datetime.now(UTC)
    job_id = project.submit("Echo", "handle", ["later"], delay=5)
    after = datetime.now(UTC)
    assert job_files(project.spool) == [f"scheduled/{job_id}.json"]
    doc = project.doc("scheduled", job_id)
    assert doc["status"] == "scheduled" and doc["attempts"] == 0
    run_at = datetime.fromisoformat(doc["run_at"])
    assert run_at.utcoffset() is not None
    assert before + timedelta(seconds=5) <= run_at <= after + timedelta(seconds=5)


REFUSALS: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
    ("class not allowed", ("Nope", "handle", []), {}, "class 'Nope' is not allowed (not in [allowed_jobs])"),
    ("method not allowed", ("Echo", "whisper", []), {}, "method Echo.whisper is not allowed (allowed: handle, shout)"),
    ("private method", ("Echo", "_secret", []), {}, "private method '_secret' is never allowed"),
    ("dotted class", ("jobs.Echo", "handle", []), {}, "'jobs.Echo' is not a plain class name"),
    ("path as class", ("../Echo", "handle", []), {}, "'../Echo' is not a plain class name"),
    ("params a string", ("Echo", "handle", "a,b"), {}, "field 'params': expected an array or object"),
    ("params a number", ("Echo", "handle", 42), {}, "field 'params': expected an array or object"),
    ("negative delay", ("Echo", "handle", []), {"delay": -1}, "delay: expected a number of seconds >= 0, got -1"),
    ("unknown priority", ("Echo", "handle", []), {"priority": "urgent"},
     "priority: expected one of high, medium, low, got 'urgent'"),
    ("chain step not allowed", ("Echo", "handle", []), {"chain": [{"class": "Nope"}]},
     "class 'Nope' is not allowed (not in [allowed_jobs])"),
]


@pytest.mark.parametrize(("args", "kwargs", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_a_refused_job_raises_submit_error_and_writes_nothing(
        project: Project, args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    project.submit("Echo")  # the spool exists, with tmp/ and medium/
    before = tree(project.spool)
    with pytest.raises(SubmitError) as raised:
        project.submit(*args, **kwargs)
    assert isinstance(raised.value, ValueError)
    assert raised.value is not None and message in str(raised.value)
    assert tree(project.spool) == before


def test_submit_error_is_exported_by_spoold_and_is_a_value_error() -> None:
    assert spoold.SubmitError is SubmitError
    assert issubclass(SubmitError, ValueError)


def test_a_job_bigger_than_max_job_bytes_is_refused_and_nothing_is_written(project: Project) -> None:
    project.configure(max_job_bytes=2000)
    with pytest.raises(SubmitError) as raised:
        project.submit("Echo", "handle", ["x" * 2000])
    assert "job is too large: " in str(raised.value)
    assert "bytes > max_job_bytes 2000" in str(raised.value)
    assert tree(project.spool) == {}
    small = project.submit("Echo", "handle", ["x" * 100])
    assert job_files(project.spool) == [f"medium/{small}.json"]


@pytest.mark.parametrize("front_door", ["api", "cli"])
def test_submitting_imports_neither_the_jobs_code_nor_watchdog(project: Project, front_door: str) -> None:
    call = {
        "api": f"from spoold import run_background_job; run_background_job('Echo', 'handle', ['a'], "
               f"config={str(project.config)!r})",
        "cli": f"from spoold.commands.cli import main; assert main(['submit', 'Echo', 'handle', 'a', "
               f"'--config', {str(project.config)!r}]) == 0",
    }[front_door]
    code = ("import sys\n" + call + "\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('watchdog', 'jobs')), file=sys.stderr)\n")
    result = run([sys.executable, "-c", code], project.root)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "[]"
    assert len(project.names("medium")) == 1


# -- the command line --------------------------------------------------------------------------------

@pytest.mark.parametrize(("argument", "params"), [
    ("a,b", ["a", "b"]),
    ("single", ["single"]),
    ('["x", 1]', ["x", 1]),
    ('{"k": 2}', {"k": 2}),
    (' [true, null]', [True, None]),
])
def test_command_line_params_are_a_comma_list_or_json(project: Project, argument: str, params: Any) -> None:
    result = project.cli("submit", "Echo", "handle", argument, "--config", str(project.config))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.splitlines()[0]
    assert project.doc("medium", job_id)["params"] == params


def test_no_params_on_the_command_line_is_an_empty_list(project: Project) -> None:
    result = project.run_job("Echo", "handle")
    assert result.returncode == 0, result.stderr
    assert project.doc("medium", result.stdout.splitlines()[0])["params"] == []


@pytest.mark.parametrize("argument", ["[1,", '{"k": }', "{'k': 1}"])
def test_bad_json_params_exit_2_with_a_message_and_write_nothing(project: Project, argument: str) -> None:
    result = project.cli("submit", "Echo", "handle", argument, "--config", str(project.config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("spoold: params: bad JSON: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree(project.spool) == {}


def test_json_object_params_reach_the_method_as_keywords(project: Project) -> None:
    result = project.cli("submit", "Echo", "handle", '{"k": 2}', "--config", str(project.config))
    job_id = result.stdout.splitlines()[0]
    drained = project.drain()
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert project.doc("done", job_id)["result"] == {"args": [], "kwargs": {"k": 2}}


FRONT_DOORS = {
    "python -m spoold submit": [sys.executable, "-m", "spoold", "submit"],
    "spoold submit": [str(SPOOLD_SCRIPT), "submit"],
    "python run_job.py": [sys.executable, str(REPO / "run_job.py")],
}


@pytest.mark.parametrize("door", FRONT_DOORS)
def test_each_front_door_prints_the_id_then_the_path_and_exits_0(project: Project, door: str) -> None:
    result = run([*FRONT_DOORS[door], "Echo", "shout", "hi", "--priority", "low",
                  "--config", str(project.config)], project.root)
    assert result.returncode == 0, result.stderr
    job_id, path = result.stdout.splitlines()
    assert Path(path) == project.spool / "low" / f"{job_id}.json"
    assert job_files(project.spool) == [f"low/{job_id}.json"]
    doc = project.doc("low", job_id)
    assert (doc["class"], doc["method"], doc["params"]) == ("Echo", "shout", ["hi"])


@pytest.mark.parametrize("door", FRONT_DOORS)
def test_each_front_door_refuses_a_disallowed_class_with_one_line_and_exit_2(project: Project, door: str) -> None:
    result = run([*FRONT_DOORS[door], "Nope", "handle", "a", "--config", str(project.config)], project.root)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.endswith("\n") and len(result.stderr.splitlines()) == 1
    assert "class 'Nope' is not allowed (not in [allowed_jobs])" in result.stderr
    assert tree(project.spool) == {}


def test_the_command_line_refuses_a_private_method_before_writing(project: Project) -> None:
    result = project.run_job("Echo", "_secret")
    assert result.returncode == 2
    assert "private method '_secret' is never allowed" in result.stderr
    assert tree(project.spool) == {}


# -- finding bgjobs.toml -----------------------------------------------------------------------------

@pytest.fixture
def three_configs(tmp_path: Path) -> dict[str, Path]:
    """A cwd config, an explicit one and an $BGJOBS_CONFIG one, each with its own spool name."""
    found = {}
    for name in ("cwd", "explicit", "env"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "bgjobs.toml").write_text(minimal_config(f"spool-{name}"), encoding="utf-8")
        found[name] = folder
    return found


def test_config_option_wins_over_env_and_cwd(three_configs: dict[str, Path]) -> None:
    cwd, explicit, env = three_configs["cwd"], three_configs["explicit"], three_configs["env"]
    result = spoold_cmd("submit", "Echo", "handle", "--config", str(explicit / "bgjobs.toml"), cwd=cwd,
                        env={"BGJOBS_CONFIG": str(env / "bgjobs.toml")})
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.splitlines()[1]).parent == explicit / "spool-explicit" / "medium"
    assert job_files(cwd / "spool-cwd") == job_files(env / "spool-env") == []


def test_env_variable_wins_over_a_bgjobs_toml_in_the_cwd(three_configs: dict[str, Path]) -> None:
    cwd, env = three_configs["cwd"], three_configs["env"]
    result = spoold_cmd("submit", "Echo", "handle", cwd=cwd, env={"BGJOBS_CONFIG": str(env / "bgjobs.toml")})
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.splitlines()[1]).parent == env / "spool-env" / "medium"
    assert job_files(cwd / "spool-cwd") == []


def test_without_option_or_env_the_bgjobs_toml_of_the_cwd_is_used(three_configs: dict[str, Path]) -> None:
    cwd = three_configs["cwd"]
    result = spoold_cmd("submit", "Echo", "handle", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.splitlines()[1]).parent == cwd / "spool-cwd" / "medium"


def test_a_bgjobs_toml_in_a_parent_folder_is_found_from_a_nested_subfolder(project: Project) -> None:
    nested = project.root / "web" / "views" / "deep"
    nested.mkdir(parents=True)
    result = spoold_cmd("submit", "Echo", "handle", "a", cwd=nested)
    assert result.returncode == 0, result.stderr
    job_id, path = result.stdout.splitlines()
    assert Path(path) == project.spool / "medium" / f"{job_id}.json"
    assert not (nested / "spool").exists()
    drained = spoold_cmd("start", "--drain", cwd=nested)
    assert drained.returncode == 0, drained.stderr
    assert project.has("done", job_id)
    assert project.events(job_id) == ["started", "success"]


def test_paths_in_the_config_are_relative_to_the_file_not_the_cwd(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "app"
    conf.mkdir(parents=True)
    (conf / "bgjobs.toml").write_text(minimal_config("../queue"), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = spoold_cmd("submit", "Echo", "handle", "--config", str(conf / "bgjobs.toml"), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.splitlines()[0]
    assert job_files(tmp_path / "etc" / "queue") == [f"medium/{job_id}.json"]
    assert list(elsewhere.iterdir()) == []


def test_the_api_without_config_finds_bgjobs_toml_above_the_cwd(project: Project,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    nested = project.root / "web" / "views"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    monkeypatch.delenv("BGJOBS_CONFIG", raising=False)
    job_id = run_background_job("Echo", "handle", ["x"])
    assert job_files(project.spool) == [f"medium/{job_id}.json"]
    assert list(nested.iterdir()) == []


def test_the_api_uses_the_env_variable_when_no_config_is_given(three_configs: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(three_configs["cwd"])
    monkeypatch.setenv("BGJOBS_CONFIG", str(three_configs["env"] / "bgjobs.toml"))
    job_id = run_background_job("Echo")
    assert job_files(three_configs["env"] / "spool-env") == [f"medium/{job_id}.json"]
    assert job_files(three_configs["cwd"] / "spool-cwd") == []


def test_no_config_anywhere_exits_2_and_points_to_spoold_init(tmp_path: Path) -> None:
    empty = tmp_path / "nothing" / "here"
    empty.mkdir(parents=True)
    above = [p for p in empty.parents if (p / "bgjobs.toml").is_file()]
    if above:
        pytest.skip(f"a bgjobs.toml above the temp folder would be found: {above[0]}")
    for args in (("submit", "Echo", "handle"), ("start", "--drain"), ("allow", "Echo", "handle")):
        result = spoold_cmd(*args, cwd=empty)
        assert result.returncode == 2, args
        assert result.stderr == (f"spoold: no bgjobs.toml found in {empty} or its parents "
                                 "(give --config, set $BGJOBS_CONFIG, or run `spoold init`)\n")
    assert list(empty.iterdir()) == []


def test_an_env_variable_naming_a_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "gone.toml"
    result = spoold_cmd("submit", "Echo", "handle", cwd=tmp_path, env={"BGJOBS_CONFIG": str(missing)})
    assert result.returncode == 2
    assert result.stderr == f"spoold: {missing}: file not found\n"


# -- bad configuration -------------------------------------------------------------------------------

BAD_CONFIGS: list[tuple[str, str, str, str]] = [
    # id, text after the paths (before [allowed_jobs]), then text after [allowed_jobs], the whole message
    ("unknown key", "colour = 1", "", f"colour: unknown key (known keys: {KNOWN_KEYS})"),
    ("workers a string", 'workers = "two"', "", "workers: expected an integer >= 1, got 'two'"),
    ("workers zero", "workers = 0", "", "workers: expected an integer >= 1, got 0"),
    ("workers a bool", "workers = true", "", "workers: expected an integer >= 1, got True"),
    ("retry_backoff unknown", 'retry_backoff = "linear"', "",
     "retry_backoff: expected one of 'fixed', 'exponential', got 'linear'"),
    ("max_execution_time zero", "max_execution_time = 0", "", "max_execution_time: expected a number > 0, got 0"),
    ("settle_seconds negative", "settle_seconds = -1", "", "settle_seconds: expected a number >= 0, got -1"),
    ("bootstrap without a function", 'bootstrap = "myapp.setup"', "",
     "bootstrap: expected \"package.module:function\" (or \"\" for none), got 'myapp.setup'"),
    ("log_format unknown", 'log_format = "xml"', "", "log_format: expected one of 'text', 'json', got 'xml'"),
    ("metrics_port too big", "metrics_port = 70000", "",
     "metrics_port: expected a port number from 1 to 65535, or 0 for off, got 70000"),
    ("lease shorter than 3 heartbeats", "heartbeat_seconds = 5\nlease_seconds = 12", "",
     "lease_seconds: expected at least 3 x heartbeat_seconds (15), got 12"),
    ("metrics_host empty", 'metrics_host = ""', "", "metrics_host: expected a non-empty string, got ''"),
    ("private allowed method", "", 'X = ["_p"]',
     "allowed_jobs.X: method '_p' starts with '_': private methods are never allowed"),
    ("dotted allowed class", "", '"a.b" = ["handle"]',
     "allowed_jobs.a.b: 'a.b' is not a plain class name (letters, digits, _; no dots)"),
    ("allowed methods not a list", "", 'X = "handle"',
     "allowed_jobs.X: expected a non-empty array of method names, got 'handle'"),
    ("unknown job priority", "", '[job_priority]\nX = "urgent"',
     "job_priority.X: expected one of 'high', 'medium', 'low', got 'urgent'"),
    ("unknown retry_on key", "", "[retry_on]\nE = { bad = 1 }",
     "retry_on.E: unknown key 'bad' (allowed: retry_attempts, retry_delay_seconds, retry_backoff)"),
    ("retry_on bad value", "", "[retry_on]\nE = { retry_attempts = -1 }",
     "retry_on.E: retry_attempts: expected an integer >= 0, got -1"),
]


@pytest.mark.parametrize(("top", "tables", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_key_exits_2_with_one_line_naming_the_file_the_key_and_what_was_expected(
        project: Project, top: str, tables: str, message: str) -> None:
    project.config.write_text(minimal_config("spool", top) + tables + "\n", encoding="utf-8")
    for args in (("start", "--drain"), ("submit", "Echo", "handle")):
        result = project.cli(*args, "--config", str(project.config))
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
        assert result.stderr == f"spoold: {project.config}: {message}\n"
    assert not project.spool.exists()


def test_a_bad_key_makes_the_api_refuse_too(project: Project) -> None:
    project.config.write_text(minimal_config("spool", "workers = 0"), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        project.submit("Echo")
    assert f"{project.config}: workers: expected an integer >= 1, got 0" in str(raised.value)
    assert not project.spool.exists()


def test_a_file_that_is_not_toml_exits_2_naming_the_file(project: Project) -> None:
    project.config.write_text("workers = = 2\n[allowed_jobs\n", encoding="utf-8")
    result = project.cli("start", "--drain", "--config", str(project.config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"spoold: {project.config}: not valid TOML: ")
    assert len(result.stderr.splitlines()) == 1
    assert not project.spool.exists()


# -- init and allow ----------------------------------------------------------------------------------

def test_init_writes_a_config_that_start_drain_accepts(tmp_path: Path) -> None:
    app = tmp_path / "fresh"
    app.mkdir()
    result = spoold_cmd("init", cwd=app)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"wrote {app / 'bgjobs.toml'}"
    assert sorted(p.name for p in app.iterdir()) == ["bgjobs.toml", "services", "spool"]  # tests/test_starter.py
    drained = spoold_cmd("start", "--drain", cwd=app)
    assert drained.returncode == 0, drained.stderr
    assert sorted(p.name for p in (app / "spool").iterdir()) == [
        "done", "failed", "high", "low", "medium", "rejected", "running", "scheduled", "tmp"]


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    config = tmp_path / "bgjobs.toml"
    spoold_cmd("init", cwd=tmp_path)
    default = config.read_bytes()
    config.write_bytes(b"# mine\n" + default)
    result = spoold_cmd("init", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"spoold: {config}: already exists (use --force to overwrite)\n"
    assert config.read_bytes() == b"# mine\n" + default
    forced = spoold_cmd("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert config.read_bytes() == default


HAND_WRITTEN_HEAD = """\
# Our app's jobs: ask Ana before changing the spool.
spool_dir = "spool"   # beside the app
log_dir = "logs"
namespace = "jobs"

[allowed_jobs]
# Echo is used by the tests
Echo = ["handle"]  # keep
"""
HAND_WRITTEN_TAIL = """
# Night jobs go last.
[job_priority]
Echo = "low"
"""


def test_allow_adds_the_class_and_keeps_every_other_byte(project: Project) -> None:
    project.config.write_text(HAND_WRITTEN_HEAD + HAND_WRITTEN_TAIL, encoding="utf-8")
    with pytest.raises(SubmitError):
        project.submit("Foo", "other")
    result = project.cli("allow", "Foo", "handle", "other", "--config", str(project.config))
    assert result.returncode == 0, result.stderr
    text = project.config.read_text(encoding="utf-8")
    assert text == HAND_WRITTEN_HEAD + 'Foo = [\n    "handle",\n    "other",\n]\n' + HAND_WRITTEN_TAIL
    submitted = project.cli("submit", "Foo", "other", "--config", str(project.config))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    assert project.doc("medium", job_id)["class"] == "Foo"
    assert project.has("medium", project.submit("Foo", "handle"))


def test_allow_refuses_a_private_method_and_leaves_the_file_alone(project: Project) -> None:
    before = project.config.read_bytes()
    result = project.cli("allow", "Foo", "_hidden", "--config", str(project.config))
    assert result.returncode == 2
    assert result.stderr == (f"spoold: {project.config}: allowed_jobs.Foo: method '_hidden' starts with '_': "
                             "private methods are never allowed\n")
    assert project.config.read_bytes() == before


# -- the two ways to call spoold ---------------------------------------------------------------------

@pytest.mark.parametrize("command", [[sys.executable, "-m", "spoold"], [str(SPOOLD_SCRIPT)]],
                         ids=["python -m spoold", "console script"])
def test_help_works_from_python_m_and_the_console_script(tmp_path: Path, command: list[str]) -> None:
    result = run([*command, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: spoold ")
    for name in ("start", "submit", "init", "allow"):
        assert f"\n    {name} " in result.stdout


def test_the_console_script_is_installed_beside_the_interpreter() -> None:
    assert SPOOLD_SCRIPT.is_file() and os.access(SPOOLD_SCRIPT, os.X_OK)



@pytest.mark.parametrize(("table", "message"), [
    ('port = 0', "dashboard.port: expected a port number from 1 to 65535, got 0"),
    ('colour = "red"', "dashboard.colour: unknown key 'colour' (allowed: host, port, token, read_token)"),
    ('token = ""', "dashboard.token: expected a non-empty string, got ''"),
    ('token = "same"\nread_token = "same"', "dashboard.read_token: must differ from dashboard.token"),
])
def test_a_bad_dashboard_table_names_its_key(project: Project, table: str, message: str) -> None:
    project.config.write_text(project.config.read_text() + f"\n[dashboard]\n{table}\n")
    result = project.cli("status", "--config", str(project.config))
    assert (result.returncode, result.stderr) == (2, f"spoold: {project.config}: {message}\n")
