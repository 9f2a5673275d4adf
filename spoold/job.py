"""The job document of SPEC §3: decoding, validation and encoding. Pure: no I/O."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from spoold.errors import JobRejected
from spoold.names import Priority

MAX_DEPTH = 100
PRIORITIES: tuple[str, ...] = tuple(p.value for p in Priority)  # plain strings: they are quoted in messages
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class JobStatus(StrEnum):
    SCHEDULED = "scheduled"
    READY = "ready"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Job:
    """A job document; `doc` keeps every field, unknown ones included, in their order."""

    id: str
    doc: dict[str, Any] = field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return str(self.doc["class"])

    @property
    def method(self) -> str:
        return str(self.doc.get("method", "handle"))

    @property
    def params(self) -> list[Any] | dict[str, Any]:
        params = self.doc.get("params", [])
        return params if isinstance(params, list | dict) else []

    @property
    def attempts(self) -> int:
        return int(self.doc.get("attempts", 0))

    @property
    def chain(self) -> list[dict[str, Any]]:
        return list(self.doc.get("chain") or [])


def describe(value: Any) -> str:
    """The JSON type name of a value, for messages ("expected an array, got string")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JobRejected(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise JobRejected(f"bad JSON: {name} is not allowed")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JobRejected(f"bad JSON: number {text[:40]} is out of range")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_tree(value: Any) -> None:
    """Walk a decoded value without recursion: nesting depth, and strings that UTF-8 cannot hold."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise JobRejected("bad JSON: a string holds a lone surrogate (\\ud800-\\udfff escape)")
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise JobRejected(f"nesting deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


# Made once: json.loads with any option builds a new decoder per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite)


def decode_document(data: bytes) -> dict[str, Any]:
    """Bytes of a job file -> the JSON object in it; JobRejected names what is wrong."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JobRejected(f"not UTF-8: invalid byte at offset {e.start}") from e
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        # Some of json's messages end in "at" already ("Unterminated string starting at").
        where = "" if e.msg.endswith(" at") else " at"
        raise JobRejected(f"bad JSON: {e.msg}{where} line {e.lineno} column {e.colno}") from e
    except RecursionError as e:
        raise JobRejected(f"nesting deeper than {MAX_DEPTH} levels") from e
    except ValueError as e:  # an integer longer than Python's int-to-str limit (4300 digits)
        raise JobRejected(f"bad JSON: {str(e).splitlines()[0]}") from e
    if not isinstance(value, dict):
        raise JobRejected(f"not a JSON object (got {describe(value)})")
    _check_tree(value)
    return value


def parse_time(value: Any, key: str) -> datetime:
    """An ISO-8601 time with an offset, as `run_at` must be."""
    if not isinstance(value, str):
        raise JobRejected(f"field {key!r}: expected an ISO-8601 time with offset, got {describe(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise JobRejected(f"field {key!r}: not an ISO-8601 time: {value!r}") from e
    if moment.tzinfo is None:
        raise JobRejected(f"field {key!r}: time has no UTC offset: {value!r}")
    return moment


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_name(value: Any, key: str, what: str) -> None:
    if not isinstance(value, str):
        raise JobRejected(f"field {key!r}: expected a {what} (string), got {describe(value)}")
    if NAME_PATTERN.fullmatch(value) is None:
        raise JobRejected(f"field {key!r}: {value!r} is not a plain {what} (letters, digits, _; no dots)")


def _check_call(doc: dict[str, Any], where: str) -> None:
    """class, method, params, priority, retry_attempts, timeout_seconds: shared by jobs and chain steps."""
    if "class" not in doc:
        raise JobRejected(f"missing field '{where}class'")
    _check_name(doc["class"], where + "class", "class name")
    if "method" in doc:
        _check_name(doc["method"], where + "method", "method name")
        if doc["method"].startswith("_"):
            raise JobRejected(f"field {where + 'method'!r}: private method {doc['method']!r} is never allowed")
    if "params" in doc and not isinstance(doc["params"], list | dict):
        raise JobRejected(f"field {where + 'params'!r}: expected an array or object, got {describe(doc['params'])}")
    if "priority" in doc and doc["priority"] not in PRIORITIES:
        raise JobRejected(f"field {where + 'priority'!r}: expected one of high, medium, low, got {doc['priority']!r}")
    retries = doc.get("retry_attempts", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise JobRejected(f"field {where + 'retry_attempts'!r}: expected an integer >= 0, got {retries!r}")
    timeout = doc.get("timeout_seconds", 1)
    if not _is_number(timeout) or timeout <= 0:
        raise JobRejected(f"field {where + 'timeout_seconds'!r}: expected a number > 0, got {timeout!r}")


def _check_chain(chain: Any) -> None:
    if not isinstance(chain, list):
        raise JobRejected(f"field 'chain': expected an array of steps, got {describe(chain)}")
    for index, step in enumerate(chain):
        where = f"chain[{index}]."
        if not isinstance(step, dict):
            raise JobRejected(f"field 'chain[{index}]': expected an object, got {describe(step)}")
        _check_call(step, where)
        if not isinstance(step.get("pass_result", True), bool):
            raise JobRejected(f"field '{where}pass_result': expected true or false")


def _check_daemon_fields(doc: dict[str, Any]) -> None:
    for key in ("attempts", "failed_runs"):
        count = doc.get(key, 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise JobRejected(f"field {key!r}: expected an integer >= 0, got {count!r}")
    if "status" in doc and doc["status"] not in tuple(JobStatus):
        raise JobRejected(f"field 'status': expected one of {', '.join(JobStatus)}, got {doc['status']!r}")
    if not isinstance(doc.get("history", []), list):
        raise JobRejected(f"field 'history': expected an array, got {describe(doc['history'])}")


MAX_UNIQUE_KEY = 200


def validate_document(doc: dict[str, Any]) -> None:
    """Check every field SPEC §3 gives a type to; raise JobRejected naming the first bad one."""
    _check_call(doc, "")
    if "run_at" in doc:
        parse_time(doc["run_at"], "run_at")
    if "delay_seconds" in doc:
        delay = doc["delay_seconds"]
        if not _is_number(delay) or delay < 0:
            raise JobRejected(f"field 'delay_seconds': expected a number >= 0, got {delay!r}")
    if "chain" in doc:
        _check_chain(doc["chain"])
    if "unique_key" in doc:
        key = doc["unique_key"]
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_UNIQUE_KEY:
            raise JobRejected(f"field 'unique_key': expected a string of 1 to {MAX_UNIQUE_KEY} characters, "
                              f"got {describe(key) if not isinstance(key, str) else f'{len(key)} characters'}")
    _check_daemon_fields(doc)


def parse_job(data: bytes, job_id: str) -> Job:
    """Decode and validate a job file's bytes; the id comes from the file name, not the content."""
    doc = decode_document(data)
    validate_document(doc)
    doc["id"] = job_id
    return Job(job_id, doc)


def dump_job(job: Job) -> bytes:
    """The bytes the daemon and the submitters write: indented UTF-8 JSON, one object.

    Strings UTF-8 cannot hold (a job's result may have lone surrogates) fall back to \\u escapes.
    """
    job.doc["id"] = job.id
    text = json.dumps(job.doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(job.doc, indent=2, allow_nan=False) + "\n").encode("ascii")
