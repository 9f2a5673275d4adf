"""The job event log of SPEC §8: one line per event, in two files, written by the daemon.

A line is `TIME key=value...` (log_format = "text") or one JSON object with the same keys plus `ts`
(log_format = "json"); readers go through parse_event_line, which reads both, so a log that switched
format at a reload reads as one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from spoold.job import Job

log = logging.getLogger(__name__)

EVENTS_LOG = "background_jobs.log"
ERRORS_LOG = "background_jobs_errors.log"
_PLAIN = re.compile(r"[A-Za-z0-9_.:+/@-]+")
ERROR_STATUSES = frozenset({"retrying", "failure", "rejected", "recovered"})  # a failed run or a rejection
# In a JSON errors log the text that follows a text line goes inside the object, under one of these keys.
TRACEBACK_KEY, REASON_KEY = "traceback", "reason"
LogFormat = Literal["text", "json"]
EventListener = Callable[[str, dict[str, Any]], None]


def format_value(value: Any) -> str:
    """Plain tokens stay bare; anything with spaces, quotes or control characters is JSON-quoted."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text)


def event_fields(status: str, *, job: str, **fields: Any) -> dict[str, Any]:
    """The keys of one event in their order: job, class, method, attempt, status, then the rest; None
    fields are left out (`class_` is the keyword for `class`)."""
    leading = ["class_", "method", "attempt"]
    ordered: dict[str, Any] = {"job": job}
    for key in leading:
        if fields.get(key) is not None:
            ordered["class" if key == "class_" else key] = fields[key]
    ordered["status"] = status
    ordered.update((key, value) for key, value in fields.items() if key not in leading and value is not None)
    return ordered


def format_event(status: str, *, job: str, at: datetime | None = None, **fields: Any) -> str:
    """`TIME job=ID class=C method=M attempt=N status=S key=value...`; None fields are left out."""
    return text_line((at or datetime.now(UTC)).isoformat(), event_fields(status, job=job, **fields))


def text_line(stamp: str, fields: dict[str, Any]) -> str:
    return " ".join([stamp, *(f"{key}={format_value(value)}" for key, value in fields.items())])


def json_line(stamp: str, fields: dict[str, Any]) -> str:
    """One JSON object on one line: json.dumps escapes every control character, newlines included."""
    return json.dumps({"ts": stamp, **fields}, ensure_ascii=False, default=str)


def detail_key(status: str) -> str:
    """Where a JSON errors-log object keeps what a text errors log writes after the line."""
    return TRACEBACK_KEY if status in ("retrying", "failure") else REASON_KEY


@dataclass(frozen=True)
class LoggedEvent:
    """One line of either log, in either format: its time (epoch seconds) and its keys, as text."""

    at: float
    fields: dict[str, str]


def parse_event_line(line: str) -> LoggedEvent | None:
    """A `TIME key=value ...` line (values with spaces are JSON-quoted), or a JSON object line with `ts`;
    None for anything else (a traceback line of a text errors log, a torn line)."""
    line = line.strip()
    if not line:
        return None
    if line.startswith("{"):
        return _parse_json_line(line)
    stamp, _, rest = line.partition(" ")
    try:
        at = datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None
    return LoggedEvent(at, dict(_pairs(rest)))


def _parse_json_line(line: str) -> LoggedEvent | None:
    try:
        value = json.loads(line)
        at = datetime.fromisoformat(str(value.pop("ts"))).timestamp()
    except (ValueError, KeyError, AttributeError, TypeError):
        return None
    return LoggedEvent(at, {str(k): str(v) for k, v in value.items()})


def _pairs(text: str) -> Iterator[tuple[str, str]]:
    decoder = json.JSONDecoder()
    i = 0
    while i < len(text):
        key_end = text.find("=", i)
        if key_end < 0:
            return
        key = text[i:key_end].strip()
        i = key_end + 1
        if text.startswith('"', i):
            try:
                value, i = decoder.raw_decode(text, i)
            except ValueError:
                return
        else:
            end = text.find(" ", i)
            end = len(text) if end < 0 else end
            value, i = text[i:end], end
        yield key, str(value)
        while i < len(text) and text[i] == " ":
            i += 1


_JSON_STAMP = '{"ts": "'


def line_time(line: str) -> float | None:
    """The time of a line in either format from its first characters, without parsing the rest."""
    if line.startswith(_JSON_STAMP):
        stamp = line[len(_JSON_STAMP): line.find('"', len(_JSON_STAMP))]
    else:
        stamp = line.partition(" ")[0]
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def status_needles(*statuses: str) -> tuple[str, ...]:
    """What a line with one of these statuses contains, in either format: a cheap test before parsing."""
    return tuple(needle for status in statuses for needle in (f" status={status}", f'"status": "{status}"'))


REOPEN_CHECK_SECONDS = 1.0


class EventLog:
    """Appends event lines with one write() each, so daemons sharing a log never interleave a line.

    Each file stays open between events; at most once a second it is checked against its name, so a
    log rotated away (renamed, or deleted) is followed by a fresh file within a second.
    """

    def __init__(self, log_dir: Path, *, log_format: LogFormat = "text") -> None:
        self.log_dir = log_dir
        self.log_format = log_format  # a reload may change it: the next line is written the new way
        self.open_files: dict[str, tuple[int, float]] = {}  # name -> (fd, when it was last checked)
        # Told of every event once it is written (the metrics count them); one that raises is logged and
        # never stops the daemon.
        self.listeners: list[EventListener] = []

    def _fd(self, name: str) -> int:
        now = time.monotonic()
        held = self.open_files.get(name)
        if held is not None:
            fd, checked = held
            if now - checked < REOPEN_CHECK_SECONDS or self._still_named(fd, name):
                if now - checked >= REOPEN_CHECK_SECONDS:
                    self.open_files[name] = (fd, now)
                return fd
            self._close(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        self.open_files[name] = (fd, now)
        return fd

    def _still_named(self, fd: int, name: str) -> bool:
        try:
            by_name, held = os.stat(self.log_dir / name), os.fstat(fd)
        except OSError:
            return False
        return (by_name.st_ino, by_name.st_dev) == (held.st_ino, held.st_dev)

    def _close(self, name: str) -> None:
        held = self.open_files.pop(name, None)
        if held is not None:
            with contextlib.suppress(OSError):
                os.close(held[0])

    def close(self) -> None:
        for name in list(self.open_files):
            self._close(name)

    def _append(self, name: str, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        for attempt in range(2):
            try:
                os.write(self._fd(name), data)
                return
            except OSError as e:
                self._close(name)  # a file that went bad (its disk, its folder) is opened afresh once
                if attempt:
                    log.error("cannot write %s in %s: %s", name, self.log_dir, e)

    def event(self, status: str, *, job: str, detail: str | None = None, **fields: Any) -> str:
        """Write one event line; failures and rejections also go to the errors log with `detail` (after the
        line in text, inside the object under "traceback" or "reason" in JSON)."""
        stamp = datetime.now(UTC).isoformat()
        ordered = event_fields(status, job=job, **fields)
        if self.log_format == "json":
            line = json_line(stamp, ordered)
            self._append(EVENTS_LOG, line + "\n")
            if status in ERROR_STATUSES:
                key = detail_key(status)
                extra = {key: detail.rstrip("\n")} if detail and ordered.get(key) != detail else {}
                self._append(ERRORS_LOG, json_line(stamp, ordered | extra) + "\n")
        else:
            line = text_line(stamp, ordered)
            self._append(EVENTS_LOG, line + "\n")
            if status in ERROR_STATUSES:
                extra_text = (detail.rstrip("\n") + "\n") if detail else ""
                self._append(ERRORS_LOG, line + "\n" + extra_text)
        self._tell(status, ordered)
        return line

    def _tell(self, status: str, fields: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(status, fields)
            except Exception:
                log.exception("job=%s: an event listener failed; the event is logged all the same", fields["job"])

    def job_event(self, status: str, job: Job, *, detail: str | None = None, **fields: Any) -> str:
        """The one way a job's event is written: its id, class, method and attempt, then `fields`."""
        return self.event(status, job=job.id, class_=job.class_name, method=job.method, attempt=job.attempts,
                          detail=detail, **fields)

    def rejected(self, job_id: str, reason: str) -> str:
        """A file that is not a valid job: only its id is known, and the reason is also its detail."""
        return self.event("rejected", job=job_id, detail=reason, reason=reason)
