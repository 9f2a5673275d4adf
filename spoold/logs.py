"""The job event log of SPEC §8: one key=value line per event, in two files, written by the daemon."""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


class EventLog:
    """Appends event lines with one write() each, so daemons sharing a log never interleave a line."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def _append(self, name: str, text: str) -> None:
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.log_dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, text.encode("utf-8", "backslashreplace"))
            finally:
                os.close(fd)
        except OSError as e:
            log.error("cannot write %s in %s: %s", name, self.log_dir, e)

    def event(self, status: str, *, job: str, detail: str | None = None, **fields: Any) -> str:
        """Write one event line; failures and rejections also go to the errors log with `detail`."""
        line = format_event(status, job=job, **fields)
        self._append(EVENTS_LOG, line + "\n")
        if status in ERROR_STATUSES:
            extra = (detail.rstrip("\n") + "\n") if detail else ""
            self._append(ERRORS_LOG, line + "\n" + extra)
        return line
