"""`spoold init` and `spoold allow` on real files: what they write, and what they must never lose."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from spoold.commands.initfile import COMMENTS, allow, render_default_config, write_default_config
from spoold.config import SCALARS, TABLES, Config, load_config, parse_config
from spoold.errors import ConfigError

# A file as a person leaves it: comments everywhere, its own order, tables before and after.
HAND_WRITTEN = """\
# Config of the lessons app: ask Ana before changing the spool.
spool_dir = "queue"   # beside the app
workers = 4

[job_priority]
LessonCreatedService = "high"

[allowed_jobs]
# Lessons
LessonCreatedService = ["handle"]  # called by the web app

[retry_on]
ConnectionError = { retry_attempts = 5, retry_delay_seconds = 1, retry_backoff = "exponential" }  # flaky
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bgjobs.toml"
    path.write_bytes(text.encode("utf-8"))
    return path


def test_the_default_file_loads_to_exactly_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "bgjobs.toml"
    write_default_config(path)
    assert load_config(path) == Config(path=path, spool_dir=tmp_path / "spool",
                                       log_dir=tmp_path / "storage" / "logs")


def test_the_default_file_spells_out_every_key(tmp_path: Path) -> None:
    raw = tomllib.loads(render_default_config())
    assert list(raw) == [*SCALARS, *TABLES]
    assert raw["allowed_jobs"] == raw["job_priority"] == raw["retry_on"] == {}


def test_every_scalar_key_has_a_comment_on_the_line_above_it() -> None:
    assert set(COMMENTS) == set(SCALARS)
    lines = render_default_config().splitlines()
    for key in SCALARS:
        (index,) = [i for i, line in enumerate(lines) if line.startswith(f"{key} = ")]
        assert lines[index - 1] == f"# {COMMENTS[key]}"


def test_the_empty_retry_on_table_shows_a_commented_out_example() -> None:
    text = render_default_config()
    assert ('[retry_on]\n# ConnectionError = { retry_attempts = 5, retry_delay_seconds = 1, '
            'retry_backoff = "exponential" }\n') in text


def test_the_default_file_can_start_with_allowed_jobs_and_priorities(tmp_path: Path) -> None:
    path = tmp_path / "bgjobs.toml"
    write_default_config(path, allowed_jobs={"LessonCreatedService": ["handle", "resend"]},
                         job_priority={"LessonCreatedService": "high"})
    config = load_config(path)
    assert config.allowed_jobs == {"LessonCreatedService": ("handle", "resend")}
    assert config.job_priority == {"LessonCreatedService": "high"}
    assert config.workers == 2


def test_init_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    with pytest.raises(ConfigError) as raised:
        write_default_config(path)
    assert str(raised.value) == f"{path}: already exists (use --force to overwrite)"
    assert path.read_text(encoding="utf-8") == HAND_WRITTEN


def test_init_overwrites_with_force_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    write_default_config(path, force=True)
    assert path.read_text(encoding="utf-8") == render_default_config()
    assert os.listdir(tmp_path) == ["bgjobs.toml"]


def test_allow_adds_a_new_class_and_keeps_everything_else_byte_for_byte(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    assert allow(path, "UserLoginService", ["handle"]) == ("handle",)
    entry = 'LessonCreatedService = ["handle"]  # called by the web app\n'
    added = 'UserLoginService = [\n    "handle",\n]\n'
    assert path.read_text(encoding="utf-8") == HAND_WRITTEN.replace(entry, entry + added)
    assert load_config(path).allowed_jobs == {"LessonCreatedService": ("handle",),
                                              "UserLoginService": ("handle",)}


def test_allow_merges_methods_into_a_single_line_entry(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    assert allow(path, "LessonCreatedService", ["notify", "handle", "notify"]) == ("handle", "notify")
    assert path.read_text(encoding="utf-8") == HAND_WRITTEN.replace(
        '= ["handle"]  # called', '= ["handle", "notify"]  # called')


def test_allow_merges_methods_into_a_multi_line_entry_keeping_its_comments(tmp_path: Path) -> None:
    before = 'LessonCreatedService = [\n    "handle",  # the web app [main]\n    "resend"\n]\n'
    after = 'LessonCreatedService = [\n    "handle",  # the web app [main]\n    "resend",\n    "notify",\n]\n'
    around = 'workers = 1\n\n[allowed_jobs]\n{}\n[job_priority]\nA = "low"\n'
    path = write(tmp_path, around.format(before))
    assert allow(path, "LessonCreatedService", ["notify"]) == ("handle", "resend", "notify")
    assert path.read_text(encoding="utf-8") == around.format(after)


def test_allow_adds_to_the_empty_section_of_a_default_file_below_its_example(tmp_path: Path) -> None:
    path = tmp_path / "bgjobs.toml"
    write_default_config(path)
    allow(path, "Echo", ["handle"])
    text = path.read_text(encoding="utf-8")
    assert '[allowed_jobs]\n# LessonCreatedService = ["handle"]\nEcho = [\n    "handle",\n]\n\n' in text
    assert text.replace('Echo = [\n    "handle",\n]\n', "") == render_default_config()


def test_allow_creates_the_section_at_the_end_when_it_is_missing(tmp_path: Path) -> None:
    original = 'workers = 4  # no allowlist yet\n\n[job_priority]\nEcho = "high"'  # no final newline
    path = write(tmp_path, original)
    assert allow(path, "Echo", ["handle", "shout"]) == ("handle", "shout")
    text = path.read_text(encoding="utf-8")
    assert text.startswith(original + "\n\n# ")
    assert text.endswith('\n[allowed_jobs]\nEcho = [\n    "handle",\n    "shout",\n]\n')
    assert load_config(path).allowed_jobs == {"Echo": ("handle", "shout")}
    assert load_config(path).job_priority == {"Echo": "high"}


@pytest.mark.parametrize(("class_name", "methods", "key", "problem"), [
    ("LessonCreatedService", ["handle", "_private"], "allowed_jobs.LessonCreatedService",
     "method '_private' starts with '_': private methods are never allowed"),
    ("a.b", ["handle"], "allowed_jobs.a.b", "'a.b' is not a plain class name (letters, digits, _; no dots)"),
    ("Echo", ["a.b"], "allowed_jobs.Echo", "expected method names, got 'a.b'"),
])
def test_allow_refuses_bad_names_and_leaves_the_file_untouched(
        tmp_path: Path, class_name: str, methods: list[str], key: str, problem: str) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    before = path.stat()
    with pytest.raises(ConfigError) as raised:
        allow(path, class_name, methods)
    assert str(raised.value) == f"{path}: {key}: {problem}"
    assert (raised.value.key, raised.value.problem) == (key, problem)
    assert path.read_text(encoding="utf-8") == HAND_WRITTEN
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert os.listdir(tmp_path) == ["bgjobs.toml"]


def test_allow_refuses_an_allowlist_written_as_an_inline_table_and_leaves_it_alone(tmp_path: Path) -> None:
    original = 'allowed_jobs = { Echo = ["handle"] }\n'
    path = write(tmp_path, original)
    with pytest.raises(ConfigError) as raised:
        allow(path, "Sleep", ["handle"])
    assert raised.value.key == "allowed_jobs"
    assert "not written as an [allowed_jobs] table" in raised.value.problem
    assert path.read_text(encoding="utf-8") == original


def test_allow_of_methods_already_listed_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    before = path.stat().st_mtime_ns
    assert allow(path, "LessonCreatedService", ["handle"]) == ("handle",)
    assert path.stat().st_mtime_ns == before


def test_allow_keeps_the_file_mode_and_crlf_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN.replace("\n", "\r\n"))
    path.chmod(0o640)
    allow(path, "UserLoginService", ["handle"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    data = path.read_bytes()
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b'UserLoginService = [\r\n    "handle",\r\n]\r\n' in data
    assert parse_config(path, tomllib.loads(data.decode()))


def test_allow_on_a_missing_file_says_to_run_init(tmp_path: Path) -> None:
    path = tmp_path / "bgjobs.toml"
    with pytest.raises(ConfigError) as raised:
        allow(path, "Echo", ["handle"])
    assert str(raised.value) == f"{path}: file not found (create one with `spoold init`)"
    assert not path.exists()
