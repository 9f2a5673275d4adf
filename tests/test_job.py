"""The job document's validation: each bad document gets one line naming the problem (SPEC §3)."""

from __future__ import annotations

import pytest

from spoold.errors import JobRejected
from spoold.job import parse_job

CASES = [
    (b"{oops", "bad JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    (b'{"class": "Echo', "bad JSON: Unterminated string starting at line 1 column 11"),
    (b"[1, 2]", "not a JSON object (got array)"),
    (b'{"class": "A", "class": "B"}', "duplicate key 'class'"),
    (b"\xff{}", "not UTF-8: invalid byte at offset 0"),
    (b"[" * 10000 + b"]" * 10000, "nesting deeper than 100 levels"),
    (b'{"method": "handle"}', "missing field 'class'"),
    (b'{"class": "os.path"}', "field 'class': 'os.path' is not a plain class name (letters, digits, _; no dots)"),
    (b'{"class": "A", "method": "_x"}', "field 'method': private method '_x' is never allowed"),
    (b'{"class": "A", "params": "a,b"}', "field 'params': expected an array or object, got string"),
    (b'{"class": "A", "priority": "urgent"}', "field 'priority': expected one of high, medium, low, got 'urgent'"),
    (b'{"class": "A", "run_at": "2026-11-28T10:00:00"}',
     "field 'run_at': time has no UTC offset: '2026-11-28T10:00:00'"),
    (b'{"class": "A", "run_at": "tomorrow"}', "field 'run_at': not an ISO-8601 time: 'tomorrow'"),
    (b'{"class": "A", "delay_seconds": -1}', "field 'delay_seconds': expected a number >= 0, got -1"),
    (b'{"class": "A", "retry_attempts": true}', "field 'retry_attempts': expected an integer >= 0, got True"),
    (b'{"class": "A", "timeout_seconds": 0}', "field 'timeout_seconds': expected a number > 0, got 0"),
    (b'{"class": "A", "chain": [{"method": "x"}]}', "missing field 'chain[0].class'"),
    (b'{"class": "A", "x": NaN}', "bad JSON: NaN is not allowed"),
    (b'{"class": "A", "attempts": -1}', "field 'attempts': expected an integer >= 0, got -1"),
]


@pytest.mark.parametrize(("data", "reason"), CASES)
def test_an_invalid_document_is_rejected_with_a_one_line_reason(data: bytes, reason: str) -> None:
    with pytest.raises(JobRejected) as caught:
        parse_job(data, "x")
    assert str(caught.value) == reason
    assert "\n" not in str(caught.value)


def test_a_valid_document_keeps_unknown_fields_and_takes_its_id_from_the_file_name() -> None:
    job = parse_job(b'\xef\xbb\xbf{"class": "A", "custom": {"k": 1}, "id": "other"}', "from-name")
    assert job.id == "from-name" and job.doc["id"] == "from-name"
    assert job.doc["custom"] == {"k": 1}
    assert job.method == "handle" and job.params == []
