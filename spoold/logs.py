"""The job event log of SPEC §8: one key=value line per event, in two files, written by the daemon."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spoold.job import Job

log = logging.getLogger(__name__)

EVENTS_LOG = "background_jobs.log"
ERRORS_LOG = "background_jobs_errors.log"
_PLAIN = re.compile(r"[A-Za-z0-9_.:+/@-]+")
ERROR_STATUSES = frozenset({"retrying", "failure", "rejected", "recovered"})  # a failed run or a rejection


def format_value(value: Any) -> str:
    """Plain tokens stay bare; anything with spaces, quotes or control characters is JSON-quoted."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text)


def format_event(status: str, *, job: str, at: datetime | None = None, **fields: Any) -> str:
    """`TIME job=ID class=C method=M attempt=N status=S key=value...`; None fields are left out."""
    moment = (at or datetime.now(UTC)).isoformat()
    order = {"class_": "class"}
    parts = [moment, f"job={format_value(job)}"]
    leading = ["class_", "method", "attempt"]
    for key in leading:
        if fields.get(key) is not None:
            parts.append(f"{order.get(key, key)}={format_value(fields[key])}")
    parts.append(f"status={status}")
    for key, value in fields.items():
        if key not in leading and value is not None:
            parts.append(f"{key}={format_value(value)}")
    return " ".join(parts)


REOPEN_CHECK_SECONDS = 1.0


class EventLog:
    """Appends event lines with one write() each, so daemons sharing a log never interleave a line.

    Each file stays open between events; at most once a second it is checked against its name, so a
    log rotated away (renamed, or deleted) is followed by a fresh file within a second.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.open_files: dict[str, tuple[int, float]] = {}  # name -> (fd, when it was last checked)

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
        """Write one event line; failures and rejections also go to the errors log with `detail`."""
        line = format_event(status, job=job, **fields)
        self._append(EVENTS_LOG, line + "\n")
        if status in ERROR_STATUSES:
            extra = (detail.rstrip("\n") + "\n") if detail else ""
            self._append(ERRORS_LOG, line + "\n" + extra)
        return line

    def job_event(self, status: str, job: Job, *, detail: str | None = None, **fields: Any) -> str:
        """The one way a job's event is written: its id, class, method and attempt, then `fields`."""
        return self.event(status, job=job.id, class_=job.class_name, method=job.method, attempt=job.attempts,
                          detail=detail, **fields)

    def rejected(self, job_id: str, reason: str) -> str:
        """A file that is not a valid job: only its id is known, and the reason is also its detail."""
        return self.event("rejected", job=job_id, detail=reason, reason=reason)
