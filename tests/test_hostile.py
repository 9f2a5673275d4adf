"""Hostile input and hostile surroundings (SPEC §2, §3, §4; docs/design.md, F14, F15, F22, F29).

Files crafted to hurt the parser, names that try to escape the id pattern or the allowlist, an operator
racing the claim, two daemons reaping one dead daemon, a full disk, and a file the daemon cannot read.
Whatever comes in, the daemon keeps running and every job ends in exactly one place.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, wait_for
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_bad_input import (
    CONTROL,
    ID,
    assert_no_control_characters,
    assert_rejected,
    drop_valid_and_see_it_run,
    obj,
    rejected_ids,
    stop_cleanly,
    wait_done,
    wait_rejected,
)

from spoold.allowlist import check_allowed, resolve_class
from spoold.errors import JobRejected
from spoold.job import Job, decode_document, dump_job, parse_job
from spoold.spool.node import this_host

READY_AND_LIVE = ("high", "medium", "low", "scheduled", "running")
STATE_FOLDERS = ("tmp", "high", "medium", "low", "scheduled", "running", "done", "failed", "rejected")


# -- helpers -------------------------------------------------------------------------------------

def spawn_daemon(project: Project, *args: str, prefix: tuple[str, ...] = (),
                 output: Path | None = None) -> subprocess.Popen[str]:
    """`spoold start` without waiting for its folder; output goes to a file outside the spool if given."""
    command = [*prefix, sys.executable, "-m", "spoold", "start", "--config", str(project.config), *args]
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(output.open("w", encoding="utf-8")) if output is not None else subprocess.PIPE
        proc = subprocess.Popen(command, cwd=project.root, env=project.env(), stdout=sink,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    project.procs.append(proc)
    return proc


def where(project: Project, job_id: str) -> list[str]:
    """Every state folder holding ID.json (running/ counts whatever daemon folder it is in)."""
    folders = ("high", "medium", "low", "scheduled", "running", "done", "failed", "rejected")
    return [folder for folder in folders if project.has(folder, job_id)]


def assert_one_line(reason: str) -> None:
    assert reason.strip(), "empty reason"
    assert len(reason.splitlines()) == 1 and "\n" not in reason, f"not one line: {reason!r}"
    assert not CONTROL.search(reason), f"raw control character in {reason!r}"


def ids_in(project: Project, folder: str) -> list[str]:
    return [name[:-5] for name in project.names(folder)]


# -- 1. hostile job files ------------------------------------------------------------------------

def test_four_kib_of_random_bytes_are_rejected_unchanged_with_one_line_and_the_daemon_goes_on(
        project: Project) -> None:
    project.configure(settle_seconds=0.3)
    daemon = project.start()
    noise = os.urandom(4096)
    project.drop("medium", "noise.json", noise)
    wait_rejected(project, "noise")
    reason = assert_rejected(project, "noise", noise, [])
    assert reason.startswith(("not UTF-8: invalid byte at offset", "bad JSON: ")), reason
    assert project.events("noise") == ["rejected"]
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)


@pytest.mark.parametrize("content", [
    pytest.param(b'{"class": "Echo", "params": ["a\x00b"]}', id="nul-inside-a-string"),
    pytest.param(b'{"class": "Echo",\x00 "params": []}', id="nul-between-tokens"),
    pytest.param(b'\x00{"class": "Echo"}', id="nul-first"),
])
def test_a_raw_nul_byte_in_the_json_text_is_rejected_as_bad_json(project: Project, content: bytes) -> None:
    project.configure(settle_seconds=0.3)
    daemon = project.start()
    project.drop("medium", "nul.json", content)
    wait_rejected(project, "nul")
    assert_rejected(project, "nul", content, ["bad JSON"])
    assert project.events("nul") == ["rejected"]
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)


def test_a_900_kib_string_param_under_max_job_bytes_is_valid_and_runs(project: Project) -> None:
    project.configure(max_job_bytes=1048576)
    daemon = project.start()
    big = "x" * (900 * 1024)
    content = b'{"class": "Echo", "params": ["' + big.encode() + b'"]}'
    assert 900 * 1024 < len(content) < 1048576
    project.drop("medium", "big.json", content)
    wait_done(project, "big")
    doc = project.doc("done", "big")
    assert doc["result"] == [big] and doc["params"] == [big]
    assert project.events("big") == ["started", "success"]
    assert rejected_ids(project) == []
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)


def test_an_escaped_nul_inside_a_string_is_valid_json_and_runs_with_no_raw_nul_in_any_log(project: Project) -> None:
    daemon = project.start()
    project.drop("medium", "esc.json", b'{"class": "Echo", "params": ["a\\u0000b", {"k\\u0000": "\\u001b[31m"}]}')
    wait_done(project, "esc")
    assert project.doc("done", "esc")["result"] == ["a\x00b", {"k\x00": "\x1b[31m"}]
    assert b"\x00" not in (project.spool / "done" / "esc.json").read_bytes()
    assert project.events("esc") == ["started", "success"]
    assert_no_control_characters(project)
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)


def test_a_name_with_two_dots_inside_is_a_valid_id_and_runs_under_it(project: Project) -> None:
    daemon = project.start()
    project.drop("medium", "a..b.json", obj({"class": "Echo", "params": ["dots"]}))
    wait_done(project, "a..b")
    doc = project.doc("done", "a..b")
    assert doc["id"] == "a..b" and doc["result"] == ["dots"] and "source_name" not in doc
    assert project.events("a..b") == ["started", "success"]
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)


@pytest.mark.parametrize("name", ["..json", ".json", "...json", "..a.json"])
def test_a_hidden_name_made_of_dots_is_left_alone(project: Project, name: str) -> None:
    sentinel = project.root / "sentinel"
    content = obj({"class": "WriteSentinel", "params": [str(sentinel)]})
    path = project.drop("medium", name, content)
    project.configure(rescan_seconds=0.2)
    daemon = project.start()
    drop_valid_and_see_it_run(project)
    time.sleep(0.5)  # a few more rescans: still not touched (a sleep: it proves that nothing happens)
    stop_cleanly(project, daemon)
    assert path.read_bytes() == content
    assert not sentinel.exists()
    assert rejected_ids(project) == [] and project.names("done") == ["after.json"]
    assert all(" job=after " in line for line in project.log_lines())


FRESH_ID_NAMES = [
    pytest.param("tab\there.json", id="tab"),
    pytest.param("\x1b[31mred.json", id="ansi-escape"),
    pytest.param("del\x7f.json", id="del-character"),
    pytest.param("carriage\r.json", id="carriage-return"),
    pytest.param("semi;colon&amp$(x).json", id="shell-characters"),
    pytest.param("quote'\"back\\slash.json", id="quotes-and-backslash"),
    pytest.param("_underscore-first.json", id="underscore-first"),
    pytest.param("z" * 128 + "!.json", id="129-characters-with-a-bang"),
    pytest.param("\u65e5\u672c\u8a9e.json", id="cjk"),
    pytest.param("a" * 200 + ".json", id="200-characters"),
    pytest.param("e\u0301\u202e.json", id="combining-and-bidi-override"),
    pytest.param("\udcff\udcfe.json", id="bytes-not-utf8"),
]


@pytest.mark.parametrize("name", FRESH_ID_NAMES)
def test_a_valid_job_whose_name_is_no_id_runs_once_under_a_fresh_id_with_the_name_in_source_name(
        project: Project, name: str) -> None:
    daemon = project.start()
    project.drop("medium", name, obj({"class": "Echo", "params": ["renamed"]}))
    fresh = wait_for(lambda: ids_in(project, "done"), 6, f"{name!r} in done/")
    assert len(fresh) == 1 and ID.fullmatch(fresh[0]) and fresh[0] + ".json" != name
    doc = project.doc("done", fresh[0])
    assert doc["id"] == fresh[0] and doc["result"] == ["renamed"]
    if name.encode("utf-8", "surrogateescape").decode("utf-8", "replace") == name:
        assert doc["source_name"] == name
    else:  # not UTF-8 on disk: any readable text naming it will do
        assert isinstance(doc["source_name"], str) and doc["source_name"].endswith(".json")
    wait_for(lambda: project.events(fresh[0]) == ["started", "success"], 5, "started, success")
    assert os.listdir(project.spool / "medium") == [] and rejected_ids(project) == []
    assert_no_control_characters(project)
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)


PARSER_EDGES = [
    pytest.param(b'{"class": "Echo", "params": [' + b"1" * 5000 + b"]}", id="5000-digit-integer"),
    pytest.param(b'{"class": "Echo", "params": [1e999]}', id="float-overflowing-to-infinity"),
    pytest.param(b'{"class": "Echo", "params": ["\\ud800"]}', id="lone-surrogate-escape"),
    pytest.param(b'{"class": "Echo", "params": {"\\udfff": 1}}', id="lone-surrogate-in-a-key"),
]


@pytest.mark.parametrize("content", PARSER_EDGES)
def test_a_document_at_the_edge_of_json_ends_in_done_or_rejected_and_never_sticks(
        project: Project, content: bytes) -> None:
    """Valid JSON grammar that Python cannot hold as it is: run it or reject it, but never leave it hanging.

    Whatever is written to done/ must itself be valid JSON, readable by spoold's own parser.
    """
    project.configure(settle_seconds=0.3)
    daemon = project.start()
    project.drop("medium", "edge.json", content)
    wait_for(lambda: where(project, "edge") in (["done"], ["rejected"]), 6, "edge in done/ or rejected/ only")
    if project.has("rejected", "edge"):
        wait_rejected(project, "edge")  # the log line follows the move
        assert_rejected(project, "edge", content, [])
    else:
        decode_document((project.spool / "done" / "edge.json").read_bytes())
        wait_for(lambda: project.events("edge") == ["started", "success"], 5, "started, success")
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)


# -- 2. the parser, property-based ---------------------------------------------------------------

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
NAMES = st.sampled_from(["Echo", "handle", "_secret", "__init__", "os.path", "", "a b", "Échо"]) | st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
TIMES = st.datetimes(timezones=st.none() | st.just(UTC)).map(datetime.isoformat) | st.sampled_from(
    ["2026-11-28T19:26:15+00:00", "2026-11-28T19:26:15", "yesterday", "2026-13-01T00:00:00Z"])


def call_fields() -> dict[str, st.SearchStrategy[Any]]:
    return {
        "method": NAMES | JSON_VALUES,
        "params": st.lists(JSON_VALUES, max_size=3) | st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3)
        | JSON_SCALARS,
        "priority": st.sampled_from(["high", "medium", "low", "urgent"]) | JSON_SCALARS,
        "retry_attempts": st.integers(-2, 5) | JSON_SCALARS,
        "timeout_seconds": st.floats(-1, 100, allow_nan=False) | st.integers(-1, 100) | JSON_SCALARS,
    }


STEPS = st.fixed_dictionaries({"class": NAMES}, optional={**call_fields(), "pass_result": st.booleans()
                                                          | JSON_SCALARS}) | JSON_SCALARS
DOCUMENTS = st.builds(
    lambda core, extra: {**extra, **core},
    st.fixed_dictionaries({"class": NAMES}, optional={
        **call_fields(),
        "run_at": TIMES | JSON_SCALARS,
        "delay_seconds": st.floats(-5, 1e6, allow_nan=False) | JSON_SCALARS,
        "chain": st.lists(STEPS, max_size=3) | JSON_SCALARS,
        "attempts": st.integers(-1, 9) | JSON_SCALARS,
        "status": st.sampled_from(["scheduled", "ready", "running", "done", "failed", "lost"]),
        "history": st.lists(JSON_VALUES, max_size=2) | JSON_SCALARS,
    }),
    st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3))


def encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A job document's bytes with a few bytes cut out, replaced or put in."""
    data = bytearray(encode(draw(DOCUMENTS), draw(st.booleans())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["cut", "put", "swap"]))
        if action == "cut":
            del data[at:at + draw(st.integers(1, 8))]
        elif action == "put":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


def parse_or_reject(data: bytes) -> Job | None:
    """parse_job's contract: a Job, or JobRejected whose text is one clean line. Nothing else escapes."""
    try:
        return parse_job(data, "x")
    except JobRejected as e:
        assert_one_line(str(e))
        return None


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512) | damaged())
@example(b"")
@example(b"\xef\xbb\xbf")
@example(b"[" * 5000)
@example(b'{"class": "Echo", "params": ' + b"[" * 99 + b"]" * 99 + b"}")
@example(b'{"class": NaN}')
@example(b'{"class": "Echo", "class": "Echo"}')
def test_parse_job_on_arbitrary_bytes_returns_a_job_or_raises_a_one_line_job_rejected(data: bytes) -> None:
    job = parse_or_reject(data)
    if job is not None:
        assert job.id == "x" and job.doc["id"] == "x" and isinstance(job.doc["class"], str)


def test_parse_job_on_arbitrary_json_values_and_documents_rejects_cleanly_and_what_passes_round_trips() -> None:
    passed: list[int] = []

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(JSON_VALUES | DOCUMENTS, st.booleans())
    def check(value: Any, ascii_only: bool) -> None:
        job = parse_or_reject(encode(value, ascii_only))
        if job is None:
            return
        assert isinstance(value, dict) and {k: v for k, v in job.doc.items() if k != "id"} == {
            k: v for k, v in value.items() if k != "id"}
        written = dump_job(job)
        again = parse_job(written, "x")
        assert again.doc == job.doc
        assert dump_job(again) == written
        passed.append(1)

    check()
    assert len(passed) >= 30, f"only {len(passed)} generated documents were valid: the round trip went untested"


@pytest.mark.parametrize("content", PARSER_EDGES)
def test_parse_job_on_json_python_cannot_hold_rejects_it_or_round_trips_it(content: bytes) -> None:
    job = parse_or_reject(content)
    if job is not None:
        assert parse_job(dump_job(job), "x").doc == job.doc


# -- 3. the allowlist cannot be escaped ----------------------------------------------------------

HOSTILE_CLASSES = ["os.path", "jobs.Echo", "Echo.__class__", "../jobs", "jobs/Echo", "..", ".", "Echo/../Echo",
                   "/etc/passwd", "", "Echo\x00", "Echo "]
HOSTILE_METHODS = ["__init__", "__class__", "__call__", "_secret", "handle.__globals__", "handle.__code__",
                   "../handle", "handle/x", "", "handle\n", "__import__"]
# Every hostile name is listed, as if the config check were bypassed: the names themselves must not pass.
LISTED_EVERYTHING = {**{name: ("handle",) for name in HOSTILE_CLASSES}, "Echo": ("handle", "shout", *HOSTILE_METHODS)}


@pytest.mark.parametrize("class_name", HOSTILE_CLASSES)
def test_check_allowed_refuses_a_dotted_pathlike_or_empty_class_even_when_listed(class_name: str) -> None:
    with pytest.raises(JobRejected) as refused:
        check_allowed(LISTED_EVERYTHING, class_name, "handle")
    assert_one_line(str(refused.value))
    assert "not a plain class name" in str(refused.value)


@pytest.mark.parametrize("method", HOSTILE_METHODS)
def test_check_allowed_refuses_a_private_dunder_or_dotted_method_even_when_listed(method: str) -> None:
    with pytest.raises(JobRejected) as refused:
        check_allowed(LISTED_EVERYTHING, "Echo", method)
    assert_one_line(str(refused.value))
    assert "never allowed" in str(refused.value)


def test_check_allowed_passes_only_a_listed_pair() -> None:
    check_allowed(LISTED_EVERYTHING, "Echo", "shout")
    for class_name, method in [("Echo", "nope"), ("Sleep", "handle"), ("object", "handle"), ("echo", "handle")]:
        with pytest.raises(JobRejected):
            check_allowed(LISTED_EVERYTHING, class_name, method)


@pytest.fixture
def jobs_importable(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The project's `jobs` namespace on sys.path, imported fresh and forgotten afterwards."""
    monkeypatch.syspath_prepend(str(project.root))
    for name in [n for n in sys.modules if n == "jobs" or n.startswith("jobs.")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [n for n in sys.modules if n == "jobs" or n.startswith("jobs.")]:
        del sys.modules[name]


@pytest.mark.usefixtures("jobs_importable")
def test_resolve_class_finds_a_class_of_the_namespace(project: Project) -> None:
    echo = resolve_class("jobs", "Echo")
    assert echo.__module__ == "jobs" and echo.__name__ == "Echo"
    assert echo.__module__ in sys.modules and str(sys.modules["jobs"].__file__).startswith(str(project.root))


@pytest.mark.usefixtures("jobs_importable")
@pytest.mark.parametrize("class_name", [
    *HOSTILE_CLASSES, "object", "Exception", "BaseException", "type", "print", "eval", "os", "sys", "subprocess",
    "signal", "__builtins__", "__class__", "__loader__", "__spec__", "__init__", "__path__", "__dict__", "jobs",
    "__main__", "spoold"])
def test_resolve_class_never_returns_anything_from_outside_the_namespace(class_name: str) -> None:
    try:
        found = resolve_class("jobs", class_name)
    except JobRejected:
        return
    assert isinstance(found, type)
    assert found.__module__ == "jobs" or found.__module__.startswith("jobs."), (
        f"{class_name!r} resolved to {found!r} from {found.__module__!r}, outside the namespace 'jobs'")


def test_allowlist_escapes_dropped_as_files_are_rejected_or_fail_as_job_not_found_and_never_run(
        project: Project) -> None:
    """Names the config can list (plain ones) fail in the child as JobNotFound; the rest never get a child."""
    project.configure(settle_seconds=0.3, extra='object = ["handle"]\nException = ["handle"]\nos = ["getcwd"]\n'
                      'sys = ["exit"]')
    sentinel = project.root / "sentinel"
    rejected: dict[str, tuple[dict[str, Any], list[str]]] = {
        "dotted-jobs": ({"class": "jobs.WriteSentinel", "params": [str(sentinel)]}, ["'jobs.WriteSentinel'"]),
        "path": ({"class": "../jobs/WriteSentinel", "params": [str(sentinel)]}, ["'../jobs/WriteSentinel'"]),
        "init": ({"class": "WriteSentinel", "method": "__init__"}, ["private method '__init__'"]),
        "dunder-class": ({"class": "Echo", "method": "__class__"}, ["private method '__class__'"]),
        "globals": ({"class": "WriteSentinel", "method": "handle.__globals__"}, ["'handle.__globals__'"]),
        "chain-escape": ({"class": "Echo", "chain": [{"class": "Echo", "method": "_secret"}]}, ["'_secret'"]),
    }
    not_found: dict[str, dict[str, Any]] = {"object": {"class": "object"}, "exception": {"class": "Exception"},
                 "os": {"class": "os", "method": "getcwd"}, "sys": {"class": "sys", "method": "exit", "params": [7]}}
    for job_id, (doc, _) in rejected.items():
        project.drop("high", f"{job_id}.json", doc)
    for job_id, doc in not_found.items():
        project.drop("high", f"{job_id}.json", doc)
    result = project.drain()
    assert result.returncode == 0, result.stdout + result.stderr
    for job_id, (doc, fragments) in rejected.items():
        assert_rejected(project, job_id, obj(doc), fragments)
        assert project.events(job_id) == ["rejected"]
    for job_id in not_found:
        assert where(project, job_id) == ["failed"]
        error = project.doc("failed", job_id)["error"]
        assert error["type"] == "JobNotFound", error
        assert project.doc("failed", job_id).get("result") is None
        assert project.events(job_id) == ["started", "failure"]
    assert not sentinel.exists()


# -- 4. name collision (docs/design.md, F15) -----------------------------------------------------

def test_a_second_job_json_after_the_first_is_done_runs_under_a_fresh_id_and_overwrites_nothing(
        project: Project) -> None:
    project.drop("medium", "job.json", {"class": "Echo", "params": ["first"]})
    assert project.drain().returncode == 0
    first = (project.spool / "done" / "job.json").read_bytes()
    assert json.loads(first)["result"] == ["first"]
    project.drop("medium", "job.json", {"class": "Echo", "params": ["second"]})
    assert project.drain().returncode == 0
    names = project.names("done")
    assert len(names) == 2 and "job.json" in names, names
    (fresh,) = [name[:-5] for name in names if name != "job.json"]
    assert ID.fullmatch(fresh)
    assert (project.spool / "done" / "job.json").read_bytes() == first
    second = project.doc("done", fresh)
    assert second["result"] == ["second"] and second["source_name"] == "job.json" and second["id"] == fresh
    assert project.events("job") == ["started", "success"]
    assert project.events(fresh) == ["started", "success"]
    assert os.listdir(project.spool / "medium") == [] and rejected_ids(project) == []


# -- 5. race with the operator (docs/design.md, F14) ---------------------------------------------

def test_an_operator_moving_jobs_to_hold_while_the_daemon_claims_them_loses_or_doubles_none(project: Project) -> None:
    """Every other job is moved the moment it lands; the rest after up to 150 ms, so the claim often wins.

    (Moves out of high/ hold back watchdog's events for a moment, so the frequent rescans do most claiming.)
    """
    project.configure(workers=4, settle_seconds=0.3, rescan_seconds=0.05)
    sentinel = project.root / "sentinel"
    stage, hold = project.root / "stage", project.spool / "hold"
    stage.mkdir()
    hold.mkdir(parents=True)
    daemon = project.start()
    ids, rng = [f"x{n}" for n in range(200)], random.Random(14)
    moves: list[tuple[float, str]] = []

    def move_due(until: float) -> None:
        while moves and moves[0][0] <= until:
            _, job_id = heapq.heappop(moves)
            with contextlib.suppress(FileNotFoundError):
                os.rename(project.spool / "high" / f"{job_id}.json", hold / f"{job_id}.json")

    for n, job_id in enumerate(ids):
        staged = stage / f"{job_id}.json"
        staged.write_bytes(obj({"class": "WriteSentinel", "params": [str(sentinel), job_id]}))
        os.rename(staged, project.spool / "high" / f"{job_id}.json")
        heapq.heappush(moves, (time.monotonic() + (rng.uniform(0, 0.15) if n % 2 else 0), job_id))
        move_due(time.monotonic())
        time.sleep(0.003)
    while moves:
        move_due(time.monotonic())
        time.sleep(0.001)

    held = {p.name[:-5] for p in hold.iterdir()}

    def settled() -> bool:
        return (not project.names("high") and not project.names("running")
                and len(project.names("done")) + len(held) == len(ids))

    wait_for(settled, 30, "every job either held or done")
    stop_cleanly(project, daemon)
    done = {name[:-5] for name in project.names("done")}
    assert held == {p.name[:-5] for p in hold.iterdir()}, "hold/ changed after the operator stopped"
    assert not held & done, f"in both hold/ and done/: {sorted(held & done)}"
    assert held | done == set(ids), f"lost: {sorted(set(ids) - held - done)}"
    assert held and done, f"{len(held)} held, {len(done)} done: the race went one way only, nothing was tested"
    runs = Counter(sentinel.read_text(encoding="utf-8").split()) if sentinel.exists() else Counter()
    assert {job_id for job_id, count in runs.items() if count != 1} == set(), f"ran more than once: {runs}"
    assert not set(runs) - done, f"ran but not in done/: {sorted(set(runs) - done)}"
    assert not done - set(runs), f"in done/ but never ran: {sorted(done - set(runs))}"
    for job_id in ids:
        assert project.events(job_id) == (["started", "success"] if job_id in done else [])
        if job_id in held:
            assert json.loads((hold / f"{job_id}.json").read_bytes())["params"][1] == job_id
    assert rejected_ids(project) == [] and project.names("failed") == []


# -- 6. reaper vs reaper (docs/design.md, F29) ---------------------------------------------------

@pytest.mark.parametrize("lock_left", [True, False], ids=["lock-file-left", "no-lock-file"])
def test_two_daemons_starting_at_once_requeue_each_orphan_of_a_dead_daemon_exactly_once(
        project: Project, lock_left: bool) -> None:
    project.configure(workers=2)
    dead = project.spool / "running" / f"{this_host()}-1-abc"
    dead.mkdir(parents=True)
    if lock_left:
        (dead / ".lock").touch()
        (dead / ".info").write_text(json.dumps({"id": dead.name, "host": "deadhost", "pid": 1}) + "\n",
                                    encoding="utf-8")
    sentinels = {f"orphan{n}": project.root / f"sentinel{n}" for n in range(5)}
    for job_id, sentinel in sentinels.items():
        doc: dict[str, Any] = {"id": job_id, "class": "WriteSentinel", "method": "handle",
                               "params": [str(sentinel), job_id], "priority": "medium", "retry_attempts": 1,
                               "status": "ready", "attempts": 0, "created_at": "2026-11-28T19:26:15+00:00"}
        (dead / f"{job_id}.json").write_bytes(dump_job(Job(job_id, doc)))
    first, second = spawn_daemon(project, "--drain"), spawn_daemon(project, "--drain")
    for proc in (first, second):
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    assert not dead.exists(), f"dead folder left: {os.listdir(dead)}"
    assert project.daemon_folders() == []
    recovered = [line for line in project.log_lines() if " status=recovered" in line]
    for job_id, sentinel in sentinels.items():
        assert sentinel.read_text(encoding="utf-8") == job_id + "\n", f"{job_id} did not run exactly once more"
        assert where(project, job_id) == ["done"]
        doc = project.doc("done", job_id)
        assert doc["attempts"] == 2
        assert [(h["outcome"], h["error_type"]) for h in doc["history"]] == [("failure", "Orphaned"),
                                                                               ("success", None)]
        assert doc["history"][0]["node"] == f"{this_host()}-1-abc"
        assert project.events(job_id) == ["recovered", "started", "success"]
        (line,) = [line for line in recovered if f" job={job_id} " in line]
        assert "error=Orphaned" in line and "attempt=1" in line
    assert len(recovered) == 5


# -- 7. a full disk, for real (docs/design.md, F22) ----------------------------------------------

def fill(path: Path) -> None:
    """Append to `path` until the filesystem has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for size in (65536, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.is_dir() else []


@pytest.fixture
def small_spool(project: Project) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted as the project's spool (logs stay outside); unmounted whatever happens."""
    project.spool.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(project.spool)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (this test needs root, as in CI): {mounted.stderr.strip()}")
    try:
        for name in STATE_FOLDERS:
            (project.spool / name).mkdir()
        yield project.spool
    finally:
        project.reap()
        if subprocess.run(["umount", str(project.spool)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(project.spool)], capture_output=True)


def test_a_full_disk_refuses_a_submit_with_exit_3_and_never_costs_a_running_job_its_success(
        project: Project, small_spool: Path) -> None:
    project.configure(workers=2, rescan_seconds=0.5)
    filler = small_spool / "filler"
    fill(filler)
    refused = project.run_job("Echo", "handle", "a,b")
    assert refused.returncode == 3, refused
    assert refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "No space left on device" in refused.stderr
    for folder in READY_AND_LIVE + ("done", "failed", "rejected"):
        assert files_in(small_spool / folder) == [], f"{folder}/ holds {files_in(small_spool / folder)}"
    assert files_in(small_spool / "tmp") == []

    with filler.open("r+b") as handle:  # room for the daemon and four jobs
        handle.truncate(filler.stat().st_size - 512 * 1024)
    output = project.root / "daemon.out"
    daemon = spawn_daemon(project, output=output)
    wait_for(project.daemon_folders, 10, "daemon folder")
    ids = [project.submit("Sleep", "handle", ["1"]) for _ in range(4)]
    wait_for(lambda: len(project.names("running")) == 2, 10, "two jobs running")
    started = set(project.names("running"))
    fill(filler)
    wait_for(lambda: output.read_text(encoding="utf-8").count("cannot write the spool") >= 2, 10,
             "two failed commits logged")
    text = output.read_text(encoding="utf-8")
    assert "No space left on device" in text
    assert daemon.poll() is None, text
    # A slot frees when its child exits, so the other two may have been claimed before the first failed
    # commit was known; after it, nothing more is claimed, and no finished job has left running/.
    running = set(project.names("running"))
    assert started <= running <= {job_id + ".json" for job_id in ids}, "a finished job left running/"
    assert files_in(small_spool / "done") == [] and files_in(small_spool / "failed") == []
    assert [line for line in project.log_lines() if " status=started" not in line] == []

    filler.unlink()
    wait_for(lambda: len(project.names("done")) == 4, 15, "all four jobs done")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0, output.read_text(encoding="utf-8")
    assert project.names("done") == sorted(f"{job_id}.json" for job_id in ids)
    for job_id in ids:
        assert where(project, job_id) == ["done"]
        doc = project.doc("done", job_id)
        assert doc["attempts"] == 1 and [h["outcome"] for h in doc["history"]] == ["success"]
        assert "failed_runs" not in doc and "error" not in doc
        assert project.events(job_id) == ["started", "success"]
    assert project.log_lines(errors=True) == []
    assert files_in(small_spool / "tmp") == []


# -- 8. a file the daemon cannot read ------------------------------------------------------------

# Root reads any file: the daemon runs as root without the two capabilities that let it ignore
# permissions, so a mode-000 file is as unreadable to it as to any other user. Its own spool (owned
# by root, mode 755) it can still write.
WITHOUT_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def test_a_file_with_mode_000_is_rejected_as_unreadable_and_the_daemon_goes_on(project: Project) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("this test needs root and setpriv (util-linux) to drop the daemon's DAC capabilities")
    project.configure(settle_seconds=0.3)
    daemon = spawn_daemon(project, prefix=WITHOUT_DAC)
    wait_for(project.daemon_folders, 10, "daemon folder")
    content = obj({"class": "Echo", "params": ["secret"]})
    staged = project.root / "locked.json"
    staged.write_bytes(content)
    staged.chmod(0)
    os.rename(staged, project.spool / "medium" / "locked.json")
    wait_rejected(project, "locked")
    moved = project.spool / "rejected" / "locked.json"
    assert moved.stat().st_mode & 0o777 == 0, "the rejected file is not the dropped one, unchanged"
    moved.chmod(0o644)
    assert_rejected(project, "locked", content, ["cannot be read: permission denied"])
    assert project.events("locked") == ["rejected"]
    drop_valid_and_see_it_run(project)
    stop_cleanly(project, daemon)
