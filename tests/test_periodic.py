"""[schedule] and [concurrency] (SPEC §12): the slots of each entry, computed for real, and every config error."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import REPO

from spoold.commands.initfile import TABLE_DOCS, render_default_config, write_default_config
from spoold.config import Config, load_config, parse_config
from spoold.errors import ConfigError
from spoold.periodic import Entry, describe, latest_due, next_due, parse_every, slot_id

ALLOWED = '[allowed_jobs]\nReport = ["handle", "send"]\n'


def at(text: str) -> float:
    """UTC epoch seconds of an ISO time; a bare time is UTC."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def utc(seconds: float | None) -> str:
    assert seconds is not None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def slots(entry: Entry, start: str, end: str) -> list[str]:
    """Every slot in [start, end), as UTC text, found by walking next_due."""
    found, now, stop = [], at(start) - 1, at(end)
    while (now := next_due(entry, now)) < stop:
        found.append(utc(now))
    return found


def cron(expression: str, timezone: str = "UTC") -> Entry:
    return Entry("e", "Report", cron=expression, timezone=timezone)


# every: a grid of whole multiples of the interval since 1970-01-01T00:00Z

def test_every_15m_falls_on_the_quarter_hours_of_the_epoch_grid() -> None:
    entry = Entry("e", "Report", every=parse_every("15m"))
    assert utc(latest_due(entry, at("2024-05-01 10:07:30"))) == "2024-05-01 10:00:00"
    assert utc(next_due(entry, at("2024-05-01 10:07:30"))) == "2024-05-01 10:15:00"


def test_at_exactly_a_slot_latest_due_is_that_slot_and_next_due_the_one_after() -> None:
    entry = Entry("e", "Report", every=900.0)
    assert utc(latest_due(entry, at("2024-05-01 10:15:00"))) == "2024-05-01 10:15:00"
    assert utc(next_due(entry, at("2024-05-01 10:15:00"))) == "2024-05-01 10:30:00"
    assert utc(latest_due(entry, at("2024-05-01 10:14:59.999"))) == "2024-05-01 10:00:00"


def test_an_interval_that_does_not_divide_a_day_still_counts_from_the_epoch() -> None:
    entry = Entry("e", "Report", every=parse_every("7m"))
    due = next_due(entry, at("2024-05-01 00:00:00"))
    assert due % 420 == 0 and 0 < due - at("2024-05-01 00:00:00") <= 420
    assert slots(Entry("e", "Report", every=parse_every("1d")), "2024-05-01 12:00", "2024-05-03 12:00") == [
        "2024-05-02 00:00:00", "2024-05-03 00:00:00"]


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400),
                                               ("01m", 60)])
def test_parse_every_reads_a_whole_number_and_one_unit(text: str, seconds: float) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["1.5m", "0s", "00m", "15 m", " 15m", "15", "m", "-1s", "+1s", "1w", "1M", "1h30m",
                                  "", "١m", "9999999999999d"])
def test_parse_every_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_every(text)
    assert str(raised.value) == ('expected a whole number and one unit s, m, h or d (at least 1s), such as "15m", '
                                 f"got {text!r}")


# cron in UTC: Vixie's five fields

def test_a_daily_cron_in_utc() -> None:
    entry = cron("0 3 * * *")
    assert utc(latest_due(entry, at("2024-05-01 02:59:59"))) == "2024-04-30 03:00:00"
    assert utc(latest_due(entry, at("2024-05-01 03:00:00"))) == "2024-05-01 03:00:00"
    assert utc(next_due(entry, at("2024-05-01 03:00:00"))) == "2024-05-02 03:00:00"


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # October 2024: the 13th is a Sunday; the Fridays are the 4th, 11th, 18th and 25th.
    assert slots(cron("0 0 13 * 5"), "2024-10-01", "2024-11-01") == [
        "2024-10-04 00:00:00", "2024-10-11 00:00:00", "2024-10-13 00:00:00", "2024-10-18 00:00:00",
        "2024-10-25 00:00:00"]


def test_a_day_field_starting_with_a_star_makes_it_and_as_in_vixie_cron() -> None:
    # "*/2" sets Vixie's DOM_STAR: the odd days that are Fridays, not the odd days or the Fridays.
    assert slots(cron("0 0 */2 * FRI"), "2024-10-01", "2024-11-01") == ["2024-10-11 00:00:00", "2024-10-25 00:00:00"]


def test_names_of_days_and_months_in_any_case() -> None:
    week = ["2024-10-07 09:00:00", "2024-10-08 09:00:00", "2024-10-09 09:00:00", "2024-10-10 09:00:00",
            "2024-10-11 09:00:00"]
    assert slots(cron("0 9 * * MON-FRI"), "2024-10-06", "2024-10-13") == week
    assert slots(cron("0 9 * * mon-fri"), "2024-10-06", "2024-10-13") == week
    assert slots(cron("30 6 1 JAN *"), "2023-06-01", "2026-01-01") == ["2024-01-01 06:30:00", "2025-01-01 06:30:00"]
    assert slots(cron("0 0 * * 7"), "2024-10-01", "2024-10-14") == ["2024-10-06 00:00:00", "2024-10-13 00:00:00"]


def test_steps_ranges_and_lists() -> None:
    assert slots(cron("*/20 9-10 * * *"), "2024-10-01 08:00", "2024-10-01 12:00") == [
        "2024-10-01 09:00:00", "2024-10-01 09:20:00", "2024-10-01 09:40:00",
        "2024-10-01 10:00:00", "2024-10-01 10:20:00", "2024-10-01 10:40:00"]
    assert slots(cron("5 0-23/8 * * *"), "2024-10-01", "2024-10-02") == [
        "2024-10-01 00:05:00", "2024-10-01 08:05:00", "2024-10-01 16:05:00"]
    assert slots(cron("0 12 1,15 * *"), "2024-10-01", "2024-11-01") == ["2024-10-01 12:00:00", "2024-10-15 12:00:00"]


@pytest.mark.parametrize(("alias", "start", "end", "expected"), [
    ("@hourly", "2024-10-01 10:30", "2024-10-01 13:00", ["2024-10-01 11:00:00", "2024-10-01 12:00:00"]),
    ("@daily", "2024-10-01 10:30", "2024-10-03 10:00", ["2024-10-02 00:00:00", "2024-10-03 00:00:00"]),
    ("@weekly", "2024-10-01", "2024-10-14", ["2024-10-06 00:00:00", "2024-10-13 00:00:00"]),  # Sundays
    ("@monthly", "2024-10-15", "2024-12-15", ["2024-11-01 00:00:00", "2024-12-01 00:00:00"]),
])
def test_the_four_aliases(alias: str, start: str, end: str, expected: list[str]) -> None:
    assert slots(cron(alias), start, end) == expected


# cron in a local time zone: a skipped time is skipped, a repeated one runs once

def test_a_time_the_clock_skips_has_no_slot_that_day() -> None:
    # Europe/Paris, 2024-03-31: 02:00 CET becomes 03:00 CEST.
    entry = cron("30 2 * * *", "Europe/Paris")
    assert slots(entry, "2024-03-29", "2024-04-02") == ["2024-03-29 01:30:00", "2024-03-30 01:30:00",
                                                        "2024-04-01 00:30:00"]
    assert utc(latest_due(entry, at("2024-03-31 23:00"))) == "2024-03-30 01:30:00"


def test_a_time_the_clock_repeats_runs_once_at_its_first_occurrence() -> None:
    # America/New_York, 2024-11-03: 02:00 EDT becomes 01:00 EST, so 01:30 happens twice.
    entry = cron("30 1 * * *", "America/New_York")
    assert slots(entry, "2024-11-02", "2024-11-05") == ["2024-11-02 05:30:00", "2024-11-03 05:30:00",
                                                        "2024-11-04 06:30:00"]
    assert utc(latest_due(entry, at("2024-11-03T01:40:00-05:00"))) == "2024-11-03 05:30:00"  # the second 01:40


def test_an_hourly_entry_runs_once_per_wall_clock_hour_across_both_changes() -> None:
    hourly = cron("@hourly", "America/New_York")
    assert slots(hourly, "2024-11-03 04:00", "2024-11-03 09:00") == [  # 00:00 and 01:00 EDT, 02:00..03:00 EST
        "2024-11-03 04:00:00", "2024-11-03 05:00:00", "2024-11-03 07:00:00", "2024-11-03 08:00:00"]
    assert slots(hourly, "2024-03-10 05:00", "2024-03-10 09:00") == [  # 00:00, 01:00 EST; 03:00, 04:00 EDT
        "2024-03-10 05:00:00", "2024-03-10 06:00:00", "2024-03-10 07:00:00", "2024-03-10 08:00:00"]
    every_20 = cron("*/20 * * * *", "America/New_York")
    # During the second pass of 01:00-02:00 (06:00-07:00Z) the latest slot is still the first pass's 01:40.
    assert utc(latest_due(every_20, at("2024-11-03 06:50"))) == "2024-11-03 05:40:00"
    assert utc(next_due(every_20, at("2024-11-03 06:50"))) == "2024-11-03 07:00:00"


def test_a_cron_in_a_time_zone_is_read_in_local_time() -> None:
    assert slots(cron("0 3 * * *", "Europe/Paris"), "2024-07-01", "2024-07-03") == [
        "2024-07-01 01:00:00", "2024-07-02 01:00:00"]


# Ids and descriptions

def test_a_slot_id_is_the_name_and_the_due_time_in_utc() -> None:
    assert slot_id("nightly", at("2024-03-31T03:00:00+02:00")) == "cron-nightly-20240331T010000Z"
    assert slot_id("a-b_1", at("2024-12-31 23:59:59.5")) == "cron-a-b_1-20241231T235959Z"


def test_describe_gives_a_short_text_for_status_and_the_dashboard() -> None:
    assert describe(Entry("e", "Report", every=900.0)) == "every 15m"
    assert describe(Entry("e", "Report", every=90.0)) == "every 90s"
    assert describe(Entry("e", "Report", every=172800.0)) == "every 2d"
    assert describe(cron("0 3 * * *", "Europe/Paris")) == 'cron "0 3 * * *" (Europe/Paris)'


def test_an_entry_needs_exactly_one_of_cron_and_every() -> None:
    with pytest.raises(ValueError):
        Entry("e", "Report")
    with pytest.raises(ValueError):
        Entry("e", "Report", cron="@daily", every=60.0)


# The tables in bgjobs.toml

GOOD = ALLOWED + """\
[job_priority]
Report = "high"

[schedule]
nightly = { class = "Report", cron = "0 3 * * *", timezone = "Europe/Paris" }
refresh = { class = "Report", method = "send", params = { to = "ops", when = "2024-01-01" }, every = "15m", \
priority = "low" }

[concurrency]
Report = 2
"""


def test_a_good_schedule_and_concurrency_parse_into_entries_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "bgjobs.toml"
    path.write_text(GOOD, encoding="utf-8")
    config = load_config(path)
    assert config.schedule == {
        "nightly": Entry("nightly", "Report", cron="0 3 * * *", timezone="Europe/Paris"),
        "refresh": Entry("refresh", "Report", "send", {"to": "ops", "when": "2024-01-01"}, "low", every=900.0),
    }
    assert config.concurrency == {"Report": 2}
    with pytest.raises(TypeError):
        config.schedule["x"] = config.schedule["nightly"]  # type: ignore[index]


def test_without_the_tables_there_is_no_schedule_and_no_limit(tmp_path: Path) -> None:
    config = parse_config(tmp_path / "bgjobs.toml", {})
    assert config.schedule == {} and config.concurrency == {}


ENTRY = '[schedule]\nnightly = {{ class = "Report", {} }}\n'
CRON_FORM = "expected five fields (minute hour day-of-month month day-of-week) or one of @hourly, @daily, @weekly, " \
            "@monthly, got "
BAD_TABLES: list[tuple[str, str, str, str]] = [
    ("cron with four fields", ENTRY.format('cron = "0 3 * *"'), "schedule.nightly.cron", CRON_FORM + "'0 3 * *'"),
    ("cron with seconds", ENTRY.format('cron = "0 0 3 * * *"'), "schedule.nightly.cron", CRON_FORM + "'0 0 3 * * *'"),
    ("cron out of range", ENTRY.format('cron = "61 3 * * *"'), "schedule.nightly.cron",
     CRON_FORM + "'61 3 * * *' (bad minute)"),
    ("cron on a day that never comes", ENTRY.format('cron = "0 0 31 4 *"'), "schedule.nightly.cron",
     CRON_FORM + "'0 0 31 4 *' (bad day-of-month)"),
    ("cron extension L", ENTRY.format('cron = "0 0 L * *"'), "schedule.nightly.cron", CRON_FORM + "'0 0 L * *'"),
    ("cron extension #", ENTRY.format('cron = "0 0 * * 5#2"'), "schedule.nightly.cron", CRON_FORM + "'0 0 * * 5#2'"),
    ("cron name in the hour", ENTRY.format('cron = "0 MON * * *"'), "schedule.nightly.cron",
     CRON_FORM + "'0 MON * * *' (bad hour)"),
    ("cron alias unknown", ENTRY.format('cron = "@yearly"'), "schedule.nightly.cron", CRON_FORM + "'@yearly'"),
    ("cron a number", ENTRY.format("cron = 3"), "schedule.nightly.cron", CRON_FORM + "3"),
    ("both cron and every", ENTRY.format('cron = "@daily", every = "1d"'), "schedule.nightly",
     "expected exactly one of cron and every, got both"),
    ("neither cron nor every", ENTRY.format('method = "handle"'), "schedule.nightly",
     "expected exactly one of cron and every, got neither"),
    ("unknown key", ENTRY.format('every = "1d", colour = "red"'), "schedule.nightly.colour",
     "unknown key (allowed: class, method, params, priority, cron, every, timezone)"),
    ("bad every", ENTRY.format('every = "1.5m"'), "schedule.nightly.every",
     'expected a whole number and one unit s, m, h or d (at least 1s), such as "15m", got \'1.5m\''),
    ("unknown time zone", ENTRY.format('cron = "@daily", timezone = "Mars/Olympus"'), "schedule.nightly.timezone",
     "expected an IANA time zone name such as \"Europe/Paris\", got 'Mars/Olympus'"),
    ("time zone as a path", ENTRY.format('cron = "@daily", timezone = "../../etc/passwd"'),
     "schedule.nightly.timezone", "expected an IANA time zone name such as \"Europe/Paris\", got '../../etc/passwd'"),
    ("time zone with every", ENTRY.format('every = "1d", timezone = "UTC"'), "schedule.nightly.timezone",
     "applies to cron only (every's slots fall on the UTC epoch grid)"),
    ("a datetime in params", ENTRY.format('every = "1d", params = [1, { at = 2024-01-01T00:00:00Z }]'),
     "schedule.nightly.params", "params[1].at is a TOML date or time, which JSON cannot hold (write it as a string)"),
    ("a local time in params", ENTRY.format('every = "1d", params = { at = 03:00:00 }'), "schedule.nightly.params",
     "params.at is a TOML date or time, which JSON cannot hold (write it as a string)"),
    ("nan in params", ENTRY.format('every = "1d", params = [nan]'), "schedule.nightly.params",
     "params[0] is nan, which JSON cannot hold"),
    ("params a string", ENTRY.format('every = "1d", params = "x"'), "schedule.nightly.params",
     "expected an array or a table, got 'x'"),
    ("class not allowed", '[schedule]\nnightly = { class = "Other", every = "1d" }\n', "schedule.nightly.class",
     "expected a class listed in [allowed_jobs], got 'Other'"),
    ("class missing", '[schedule]\nnightly = { every = "1d" }\n', "schedule.nightly.class",
     'missing: expected class = "C", a class listed in [allowed_jobs]'),
    ("method not allowed", ENTRY.format('method = "drop", every = "1d"'), "schedule.nightly.method",
     "expected a method allowed for Report (handle, send), got 'drop'"),
    ("bad priority", ENTRY.format('priority = "urgent", every = "1d"'), "schedule.nightly.priority",
     "expected one of 'high', 'medium', 'low', got 'urgent'"),
    ("name with a dot", '[schedule]\n"night.ly" = { class = "Report", every = "1d" }\n', "schedule.night.ly",
     "'night.ly' is not an entry name (1 to 64 of A-Z, a-z, 0-9, _ and -)"),
    ("name too long", f'[schedule]\n{"n" * 65} = {{ class = "Report", every = "1d" }}\n', f"schedule.{'n' * 65}",
     f"{'n' * 65!r} is not an entry name (1 to 64 of A-Z, a-z, 0-9, _ and -)"),
    ("entry not a table", '[schedule]\nnightly = "0 3 * * *"\n', "schedule.nightly",
     "expected a table such as { class = \"C\", every = \"15m\" }, got '0 3 * * *'"),
    ("limit zero", "[concurrency]\nReport = 0\n", "concurrency.Report", "expected an integer >= 1, got 0"),
    ("limit a bool", "[concurrency]\nReport = true\n", "concurrency.Report", "expected an integer >= 1, got True"),
    ("limit a float", "[concurrency]\nReport = 1.5\n", "concurrency.Report", "expected an integer >= 1, got 1.5"),
    ("limit of a class not allowed", "[concurrency]\nOther = 2\n", "concurrency.Other",
     "expected a class listed in [allowed_jobs]"),
    ("limit of a private class", "[concurrency]\n_Report = 2\n", "concurrency._Report",
     "'_Report' starts with '_': private names are never allowed"),
]


@pytest.mark.parametrize(("text", "key", "problem"), [case[1:] for case in BAD_TABLES],
                         ids=[case[0] for case in BAD_TABLES])
def test_a_bad_entry_is_a_config_error_naming_its_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = tmp_path / "bgjobs.toml"
    path.write_text(ALLOWED + text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert (raised.value.key, raised.value.problem) == (key, problem)
    assert str(raised.value) == f"{path}: {key}: {problem}"


@pytest.mark.parametrize("text", ["schedule = 5", 'concurrency = "Report"'])
def test_either_table_must_be_a_table(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(tmp_path / "bgjobs.toml", tomllib.loads(text + "\n" + ALLOWED))
    assert raised.value.key == text.split(" ")[0]


# spoold init

def test_init_shows_both_tables_with_examples_that_load_once_uncommented(tmp_path: Path) -> None:
    text = render_default_config()
    for table in ("schedule", "concurrency"):
        comment, examples = TABLE_DOCS[table]
        assert f"# {comment}\n[{table}]\n" + "".join(f"# {example}\n" for example in examples) in text
    assert tomllib.loads(text)["schedule"] == tomllib.loads(text)["concurrency"] == {}
    uncommented = text.replace('[allowed_jobs]\n# LessonCreatedService = ["handle"]',
                               '[allowed_jobs]\nLessonCreatedService = ["handle"]')
    for table in ("schedule", "concurrency"):
        examples = TABLE_DOCS[table][1]
        uncommented = uncommented.replace("".join(f"# {e}\n" for e in examples), "".join(f"{e}\n" for e in examples))
    config = parse_config(tmp_path / "bgjobs.toml", tomllib.loads(uncommented))
    assert describe(config.schedule["nightly_report"]) == 'cron "0 3 * * *" (Europe/Paris)'
    assert describe(config.schedule["refresh"]) == "every 15m"
    assert config.concurrency == {"LessonCreatedService": 2}


def test_the_file_init_writes_loads_back_with_an_empty_schedule_and_no_limits(tmp_path: Path) -> None:
    path = tmp_path / "bgjobs.toml"
    write_default_config(path, allowed_jobs={"Report": ["handle"]})
    config = load_config(path)
    assert config == Config(path=path, spool_dir=tmp_path / "spool", log_dir=tmp_path / "storage" / "logs",
                            allowed_jobs=config.allowed_jobs)
    assert config.schedule == {} and config.concurrency == {}


# cronsim is an extra: only cron entries need it

def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)


def test_an_every_only_schedule_loads_and_runs_without_importing_cronsim() -> None:
    code = f"""if True:
        import sys, tomllib
        from pathlib import Path
        from spoold.config import parse_config
        from spoold.periodic import latest_due, next_due
        config = parse_config(Path("bgjobs.toml"), tomllib.loads({GOOD.replace('cron = "0 3 * * *", ', 'every = "1d", ')
                                                                  .replace(', timezone = "Europe/Paris"', '')!r}))
        entry = config.schedule["nightly"]
        assert next_due(entry, 0.5) == 86400 and latest_due(entry, 0.5) == 0
        print("cronsim" in sys.modules)
    """
    result = run_python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, "False\n", "")


def test_a_cron_entry_without_cronsim_installed_says_which_extra_to_install() -> None:
    code = f"""if True:
        import sys, tomllib
        from pathlib import Path
        sys.modules["cronsim"] = None  # what an interpreter without the cron extra finds: no module
        from spoold.config import parse_config
        from spoold.errors import ConfigError
        try:
            parse_config(Path("/x/bgjobs.toml"), tomllib.loads({GOOD!r}))
        except ConfigError as e:
            print(e)
    """
    result = run_python(code)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == ("/x/bgjobs.toml: schedule.nightly.cron: cron entries need the cron extra: "
                             "pip install 'spoold[cron]'\n")
