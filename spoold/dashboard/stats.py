"""Statistics from the event log (SPEC §8), so they survive restarts: runs, failures and durations per
class, and successes and failures per minute or hour. Only the tail that the window needs is read,
from the end of the file backwards."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from spoold.logs import ERRORS_LOG, EVENTS_LOG

CHUNK = 1 << 16
MIN_WINDOW, MAX_WINDOW, DEFAULT_WINDOW = 60, 604800, 3600
ENDS_A_RUN = {"success": "success", "retrying": "failure", "failure": "failure", "recovered": "failure"}


@dataclass(frozen=True)
class Event:
    at: float
    fields: dict[str, str]

    @property
    def status(self) -> str:
        return self.fields.get("status", "")


def parse_line(line: str) -> Event | None:
    """A `TIME key=value ...` line (values with spaces are JSON-quoted), or a JSON object line."""
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
    return Event(at, dict(_pairs(rest)))


def _parse_json_line(line: str) -> Event | None:
    try:
        value = json.loads(line)
        at = datetime.fromisoformat(str(value.pop("ts"))).timestamp()
    except (ValueError, KeyError, AttributeError, TypeError):
        return None
    return Event(at, {str(k): str(v) for k, v in value.items()})


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


def lines_backwards(path: Path) -> Iterator[str]:
    """The file's lines, last first, read a chunk at a time from its end."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return
    try:
        end = os.fstat(fd).st_size
        rest = b""
        while end > 0:
            start = max(0, end - CHUNK)
            os.lseek(fd, start, os.SEEK_SET)
            block = os.read(fd, end - start) + rest
            end = start
            lines = block.split(b"\n")
            rest = lines.pop(0) if end > 0 else b""
            for line in reversed(lines):
                yield line.decode("utf-8", "replace")
        if rest:
            yield rest.decode("utf-8", "replace")
    finally:
        os.close(fd)


def events_since(log_dir: Path, since: float) -> list[Event]:
    """Events of the window, oldest first; stops reading at the first line older than the window."""
    found: list[Event] = []
    for line in lines_backwards(log_dir / EVENTS_LOG):
        event = parse_line(line)
        if event is None:
            continue
        if event.at < since:
            break
        found.append(event)
    found.reverse()
    return found


def percentile(values: list[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bucket_seconds(window: int) -> int:
    return 60 if window <= 7200 else 3600


def statistics(log_dir: Path, window: int, now: float) -> dict[str, Any]:
    """`GET /api/stats` (SPEC §9): per class over the window, and the series of successes and failures."""
    since = now - window
    step = bucket_seconds(window)
    first = int(since // step) * step
    series = {first + i * step: {"success": 0, "failure": 0} for i in range(int((now - first) // step) + 1)}
    per_class: dict[str, dict[str, Any]] = defaultdict(lambda: {"runs": 0, "failures": 0, "durations": []})
    for event in events_since(log_dir, since):
        outcome = ENDS_A_RUN.get(event.status)
        if outcome is None:
            continue
        bucket = series.get(int(event.at // step) * step)
        if bucket is not None:
            bucket[outcome] += 1
        row = per_class[event.fields.get("class", "?")]
        row["runs"] += 1
        row["failures"] += outcome == "failure"
        if event.fields.get("duration_ms", "").isdigit():
            row["durations"].append(int(event.fields["duration_ms"]))
    classes = [{"class": name, "runs": row["runs"], "failures": row["failures"],
                "p50_ms": percentile(row["durations"], 0.5), "p95_ms": percentile(row["durations"], 0.95)}
               for name, row in sorted(per_class.items())]
    return {"window": window, "step": step, "classes": classes,
            "series": [{"t": t, **counts} for t, counts in sorted(series.items())]}


def job_events(log_dir: Path, job_id: str, *, limit_bytes: int = 8 << 20) -> list[Event]:
    """Every line of one job in the event log (the newest `limit_bytes` of it), oldest first."""
    found: list[Event] = []
    read = 0
    needle = f" job={job_id} "
    for line in lines_backwards(log_dir / EVENTS_LOG):
        read += len(line) + 1
        if read > limit_bytes:
            break
        if needle in line or f'"job": "{job_id}"' in line:
            event = parse_line(line)
            if event is not None:
                found.append(event)
    found.reverse()
    return found


def error_tail(log_dir: Path, *, query: str | None, limit_bytes: int = 256 << 10) -> list[str]:
    """The last `limit_bytes` of the errors log as entries (a line and its traceback), newest first,
    those containing `query` only."""
    entries: list[str] = []
    current: list[str] = []
    read = 0
    for line in lines_backwards(log_dir / ERRORS_LOG):
        read += len(line) + 1
        if read > limit_bytes:
            break
        current.append(line)
        if parse_line(line) is not None and " status=" in line:
            text = "\n".join(reversed(current)).rstrip()
            current = []
            if not query or query.lower() in text.lower():
                entries.append(text)
    return entries
