"""The example job classes in services/, called directly the way the daemon's child calls them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services._storage import dashboards_dir, log_dir
from services.lesson_created_service import LessonCreatedService
from services.lesson_ended_service import LessonEndedService
from services.lesson_started_service import LessonStartedService
from services.user_dashboard_service import UserDashboardService, default_dashboard
from services.user_login_service import UserLoginService
from services.user_logout_service import UserLogoutService

REPO_ROOT = Path(__file__).resolve().parent.parent
T1 = datetime(2026, 11, 28, 19, 26, 15, 123456, tzinfo=UTC)
T1_ISO = "2026-11-28T19:26:15.123456+00:00"
T2 = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
T2_ISO = "2026-11-28T20:00:00+00:00"
DEFAULTS = {
    "user_id": "42",
    "theme": "light",
    "widgets": ["upcoming_lessons", "recent_activity"],
    "last_login": None,
}
BAD_USER_IDS = ["../evil", "a/b", "a\\b", "..", ".", "", "a..b", "/etc/passwd", " 42", "42\n", "ä"]


@pytest.fixture
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPOOLD_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path / "logs"


def login_at(moment: datetime) -> UserLoginService:
    return UserLoginService(clock=lambda: moment)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def test_lesson_created_appends_one_line_to_lessons_log_and_returns_the_event(logs: Path) -> None:
    result = LessonCreatedService(clock=lambda: T1).handle("English Grammar 101")

    assert result == {"lesson": "English Grammar 101", "event": "created", "at": T1_ISO}
    assert lines(logs / "lessons.log") == [f'{T1_ISO} event=created lesson="English Grammar 101"']


def test_the_three_lesson_services_share_lessons_log_in_the_order_they_ran(logs: Path) -> None:
    for service in (LessonCreatedService, LessonStartedService, LessonEndedService):
        service(clock=lambda: T1).handle("Algebra")

    assert lines(logs / "lessons.log") == [
        f'{T1_ISO} event=created lesson="Algebra"',
        f'{T1_ISO} event=started lesson="Algebra"',
        f'{T1_ISO} event=ended lesson="Algebra"',
    ]
    assert sorted(p.name for p in logs.iterdir()) == ["lessons.log"]


def test_lesson_started_and_ended_return_their_own_event(logs: Path) -> None:
    started = LessonStartedService(clock=lambda: T1).handle("Algebra")
    ended = LessonEndedService(clock=lambda: T2).handle("Algebra")

    assert started == {"lesson": "Algebra", "event": "started", "at": T1_ISO}
    assert ended == {"lesson": "Algebra", "event": "ended", "at": T2_ISO}


def test_a_lesson_name_with_quotes_and_equals_signs_stays_one_quoted_field(logs: Path) -> None:
    LessonCreatedService(clock=lambda: T1).handle('Café "x=1" day')

    assert lines(logs / "lessons.log") == [f'{T1_ISO} event=created lesson="Café \\"x=1\\" day"']


def test_the_default_clock_writes_the_current_utc_time(logs: Path) -> None:
    before = datetime.now(UTC)
    result = LessonEndedService().handle("Algebra")
    after = datetime.now(UTC)

    moment = datetime.fromisoformat(result["at"])
    assert moment.utcoffset() == timedelta(0)
    assert before <= moment <= after
    assert lines(logs / "lessons.log") == [f'{result["at"]} event=ended lesson="Algebra"']


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "lesson_name: expected a non-blank name, got ''"),
        ("   ", "lesson_name: expected a non-blank name, got '   '"),
        ("a\nb", "lesson_name: expected no control characters or line breaks, got 'a\\nb'"),
        ("a\u2028b", "lesson_name: expected no control characters or line breaks, got 'a\\u2028b'"),
        ("x" * 201, "lesson_name: expected at most 200 characters, got 201"),
        (101, "lesson_name: expected a string, got int"),
    ],
)
def test_a_bad_lesson_name_raises_value_error_and_writes_nothing(logs: Path, name: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        LessonCreatedService().handle(name)

    assert str(excinfo.value) == message
    assert not logs.exists()


def test_a_relative_log_dir_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPOOLD_LOG_DIR", "var/log")

    LessonCreatedService(clock=lambda: T1).handle("Algebra")

    assert log_dir() == tmp_path / "var" / "log"
    assert dashboards_dir() == tmp_path / "var" / "dashboards"
    assert lines(tmp_path / "var" / "log" / "lessons.log") == [f'{T1_ISO} event=created lesson="Algebra"']


def test_without_spoold_log_dir_logs_go_to_storage_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPOOLD_LOG_DIR", raising=False)

    login_at(T1).handle("42")

    assert lines(tmp_path / "storage" / "logs" / "users.log") == [f"{T1_ISO} event=login user_id=42"]
    assert (tmp_path / "storage" / "dashboards" / "42.json").is_file()


def test_login_logs_the_time_and_stamps_last_login_on_the_dashboard(logs: Path) -> None:
    result = login_at(T1).handle("42")

    expected_dashboard = {**DEFAULTS, "last_login": T1_ISO}
    assert result == {"user_id": "42", "event": "login", "at": T1_ISO, "dashboard": expected_dashboard}
    assert lines(logs / "users.log") == [f"{T1_ISO} event=login user_id=42"]
    assert read_json(logs.parent / "dashboards" / "42.json") == expected_dashboard


def test_a_second_login_keeps_the_users_customisations(logs: Path) -> None:
    UserDashboardService().customise("42", theme="dark")

    result = login_at(T2).handle("42")

    assert result["dashboard"] == {**DEFAULTS, "theme": "dark", "last_login": T2_ISO}
    assert read_json(logs.parent / "dashboards" / "42.json") == result["dashboard"]


def test_an_integer_user_id_from_json_params_is_used_as_text(logs: Path) -> None:
    result = login_at(T1).handle(42)

    assert result["user_id"] == "42"
    assert (logs.parent / "dashboards" / "42.json").is_file()


def test_logout_logs_the_time_and_leaves_the_dashboard_alone_by_default(logs: Path) -> None:
    login_at(T1).handle("42")
    UserDashboardService().customise("42", theme="dark")

    result = UserLogoutService(clock=lambda: T2).handle("42")

    assert result == {
        "user_id": "42",
        "event": "logout",
        "at": T2_ISO,
        "dashboard_reset": False,
        "dashboard": None,
    }
    assert lines(logs / "users.log") == [
        f"{T1_ISO} event=login user_id=42",
        f"{T2_ISO} event=logout user_id=42 reset_dashboard=false",
    ]
    assert read_json(logs.parent / "dashboards" / "42.json") == {
        **DEFAULTS,
        "theme": "dark",
        "last_login": T1_ISO,
    }


@pytest.mark.parametrize("flag", [True, "true", "1", "yes", " YES ", "on"])
def test_logout_with_reset_restores_the_default_dashboard(logs: Path, flag: bool | str) -> None:
    login_at(T1).handle("42")
    UserDashboardService().customise("42", theme="dark", widgets=["grades"])

    result = UserLogoutService(clock=lambda: T2).handle("42", flag)

    assert result["dashboard_reset"] is True
    assert result["dashboard"] == DEFAULTS
    assert read_json(logs.parent / "dashboards" / "42.json") == DEFAULTS
    assert lines(logs / "users.log")[-1] == f"{T2_ISO} event=logout user_id=42 reset_dashboard=true"


@pytest.mark.parametrize("flag", [False, "false", "0", "no", "No", "off", ""])
def test_logout_with_a_false_flag_does_not_reset(logs: Path, flag: bool | str) -> None:
    UserDashboardService().customise("42", theme="dark")

    result = UserLogoutService().handle("42", flag)

    assert result["dashboard_reset"] is False
    assert read_json(logs.parent / "dashboards" / "42.json") == {**DEFAULTS, "theme": "dark"}


def test_logout_rejects_a_reset_flag_it_cannot_read_and_writes_nothing(logs: Path) -> None:
    with pytest.raises(ValueError, match=r"^reset_dashboard: expected true or false .*, got 'maybe'$"):
        UserLogoutService().handle("42", "maybe")

    assert not logs.exists()


@pytest.mark.parametrize("user_id", BAD_USER_IDS)
def test_a_user_id_that_could_leave_the_dashboards_folder_raises_value_error(
    tmp_path: Path, logs: Path, user_id: str
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: UserLoginService().handle(user_id),
        lambda: UserLogoutService().handle(user_id, "true"),
        lambda: UserDashboardService().customise(user_id, theme="dark"),
        lambda: UserDashboardService().reset(user_id),
        lambda: UserDashboardService().load(user_id),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"^user_id: expected 1-128 letters, .*, got "):
            call()

    assert list(tmp_path.rglob("*")) == []


def test_a_user_id_that_is_neither_text_nor_an_integer_raises_value_error(logs: Path) -> None:
    with pytest.raises(ValueError, match=r"^user_id: expected a string or an integer, got NoneType$"):
        UserLoginService().handle(None)  # type: ignore[arg-type]


def test_load_returns_the_defaults_without_writing_when_nothing_is_saved(logs: Path) -> None:
    assert UserDashboardService().load("42") == DEFAULTS
    assert not (logs.parent / "dashboards").exists()


def test_customise_merges_new_settings_into_the_saved_ones(logs: Path) -> None:
    dashboards = UserDashboardService()
    dashboards.customise("42", theme="dark")

    result = dashboards.customise("42", widgets=["grades"], language="fr")

    assert result == {**DEFAULTS, "theme": "dark", "widgets": ["grades"], "language": "fr"}
    assert dashboards.load("42") == result
    assert read_json(logs.parent / "dashboards" / "42.json") == result


def test_customise_leaves_no_temp_file_behind(logs: Path) -> None:
    for theme in ("dark", "light", "dark"):
        UserDashboardService().customise("42", theme=theme)

    assert sorted(p.name for p in (logs.parent / "dashboards").iterdir()) == ["42.json"]
    assert os.stat(logs.parent / "dashboards" / "42.json").st_mode & 0o777 == 0o644


def test_a_setting_that_is_not_json_leaves_the_saved_dashboard_untouched(logs: Path) -> None:
    dashboards = UserDashboardService()
    dashboards.customise("42", theme="dark")
    saved = (logs.parent / "dashboards" / "42.json").read_bytes()

    with pytest.raises(TypeError):
        dashboards.customise("42", theme=object())

    assert (logs.parent / "dashboards" / "42.json").read_bytes() == saved
    assert sorted(p.name for p in (logs.parent / "dashboards").iterdir()) == ["42.json"]


def test_dashboard_handle_stamps_last_login_with_now(logs: Path) -> None:
    result = UserDashboardService(clock=lambda: T1).handle("42")

    assert result == {**DEFAULTS, "last_login": T1_ISO}
    assert read_json(logs.parent / "dashboards" / "42.json") == result


def test_a_corrupt_dashboard_file_raises_value_error_naming_the_file(logs: Path) -> None:
    path = logs.parent / "dashboards" / "42.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")

    with pytest.raises(ValueError, match=r"42\.json: bad JSON: Expecting property name"):
        UserDashboardService().load("42")


def test_a_dashboard_file_holding_a_list_raises_value_error(logs: Path) -> None:
    path = logs.parent / "dashboards" / "42.json"
    path.parent.mkdir(parents=True)
    path.write_text("[]", encoding="utf-8")

    with pytest.raises(ValueError, match=r"42\.json: expected a JSON object, got list$"):
        UserDashboardService().load("42")


def test_reset_returns_the_same_defaults_default_dashboard_describes(logs: Path) -> None:
    assert UserDashboardService().reset("42") == default_dashboard("42") == DEFAULTS


def test_every_result_survives_a_json_round_trip(logs: Path) -> None:
    results = [
        LessonCreatedService().handle("Algebra"),
        LessonStartedService().handle("Algebra"),
        LessonEndedService().handle("Algebra"),
        UserLoginService().handle("42"),
        UserLogoutService().handle("42"),
        UserLogoutService().handle("42", "yes"),
        UserDashboardService().handle("42"),
        UserDashboardService().customise("42", theme="dark"),
        UserDashboardService().reset("42"),
        UserDashboardService().load("42"),
    ]

    for result in results:
        assert json.loads(json.dumps(result)) == result


def test_the_services_package_imports_no_job_module_until_asked() -> None:
    code = (
        "import importlib, sys, services\n"
        "print(sorted(m for m in sys.modules if m.startswith('services')))\n"
        "for cls in ['LessonCreatedService', 'LessonStartedService', 'LessonEndedService',\n"
        "            'UserLoginService', 'UserLogoutService', 'UserDashboardService']:\n"
        "    snake = ''.join('_' + c.lower() if c.isupper() else c for c in cls).lstrip('_')\n"
        "    assert not hasattr(services, cls), cls\n"
        "    assert getattr(importlib.import_module('services.' + snake), cls).__name__ == cls\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['services']", "ok"]
