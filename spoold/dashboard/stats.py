"""Statistics from the event log (SPEC §8), so they survive restarts: runs, failures and durations per
class, and successes and failures per minute or hour; and a job's own lines of both logs. Logs are read
from their end backwards, as far as a question needs, or (the statistics) from where the last read ended."""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spoold.dashboard.diskcache import DiskCache
from spoold.logs import (
    ERRORS_LOG,
    EVENTS_LOG,
    REASON_KEY,
    TRACEBACK_KEY,
    LoggedEvent,
    line_time,
    parse_event_line,
    status_needles,
    text_line,
)

CHUNK = 1 << 16
MIN_WINDOW, MAX_WINDOW, DEFAULT_WINDOW = 60, 604800, 3600
ENDS_A_RUN = {"success": "success", "retrying": "failure", "failure": "failure", "recovered": "failure"}
_RUN_END_NEEDLES = status_needles(*ENDS_A_RUN)


Event = LoggedEvent
parse_line = parse_event_line  # both formats of SPEC §8, and a log that switched between them


def lines_backwards_at(path: Path, *, end: int | None = None) -> Iterator[tuple[int, str]]:
    """(offset where it starts, line) for each line of the file up to byte `end`, last first, read a chunk
    at a time from the end."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return
    try:
        end = os.fstat(fd).st_size if end is None else end
        rest = b""
        while end > 0:
            start = max(0, end - CHUNK)
            os.lseek(fd, start, os.SEEK_SET)
            block = os.read(fd, end - start) + rest
            end = start
            lines = block.split(b"\n")
            rest = lines.pop(0) if end > 0 else b""
            position = start + len(block)
            for line in reversed(lines):
                position -= len(line) + 1
                yield position + 1, line.decode("utf-8", "replace")  # position: the newline before it, or -1
        if rest:
            yield 0, rest.decode("utf-8", "replace")
    finally:
        os.close(fd)


def lines_backwards(path: Path, *, end: int | None = None) -> Iterator[str]:
    """The file's lines (up to byte `end`), last first."""
    return (line for _, line in lines_backwards_at(path, end=end))


def percentile(values: list[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bucket_seconds(window: int) -> int:
    return 60 if window <= 7200 else 3600


def fast_fields(line: str) -> Event | None:
    """parse_line for the common line with no quoted value: a split instead of a decoder (the log may
    have hundreds of thousands of lines in a week)."""
    if '"' in line:  # a quoted value, or a JSON line
        return parse_line(line)
    stamp, _, rest = line.rstrip("\n").partition(" ")
    try:
        at = datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None
    return Event(at, dict(part.split("=", 1) for part in rest.split(" ") if "=" in part))


@dataclass
class _Minute:
    success: int = 0
    failure: int = 0
    durations: list[int] = field(default_factory=list)


def _ends_a_run(line: str) -> bool:
    """A cheap look before parsing: only these lines count (half of the log is `started` lines)."""
    return any(needle in line for needle in _RUN_END_NEEDLES)


class Rollup:
    """Runs per minute and class, from the event log, kept in memory: each request reads only what was
    appended since the one before (from its offset), and reaches back into older lines only as far as its
    window needs (a week at most). A log rotated away (another inode, or shorter) is read afresh."""

    def __init__(self, log_dir: Path, disk: DiskCache | None = None) -> None:
        self.path = log_dir / EVENTS_LOG
        self.disk = disk or DiskCache(None)
        self.identity: tuple[int, int] | None = None
        self.offset = 0  # the end of what was read
        self.head = 0  # the start of what was read: older lines are read only when a window needs them
        self.loaded_since = 0.0
        self.minutes: dict[int, dict[str, _Minute]] = defaultdict(dict)
        self.lock = threading.Lock()
        self._restore()

    def _restore(self) -> None:
        """An earlier run's rollup, if it was made from this very file (its device and inode)."""
        saved = self.disk.load("rollup")
        try:
            identity = (int(saved["identity"][0]), int(saved["identity"][1]))
            info = os.stat(self.path)
            if identity != (info.st_dev, info.st_ino) or int(saved["offset"]) > info.st_size:
                return
            minutes: dict[int, dict[str, _Minute]] = defaultdict(dict)
            for minute, cells in saved["minutes"].items():
                minutes[int(minute)] = {str(name): _Minute(int(ok), int(bad), [int(d) for d in durations])
                                        for name, (ok, bad, durations) in cells.items()}
        except (TypeError, KeyError, ValueError, OSError):
            return
        self.identity, self.minutes = identity, minutes
        self.offset, self.head, self.loaded_since = int(saved["offset"]), int(saved["head"]), float(saved["since"])

    def _save(self, *, force: bool) -> None:
        if self.identity is None:
            return
        self.disk.save("rollup", {
            "identity": list(self.identity), "offset": self.offset, "head": self.head, "since": self.loaded_since,
            "minutes": {str(minute): {name: [cell.success, cell.failure, cell.durations]
                                      for name, cell in cells.items()} for minute, cells in self.minutes.items()},
        }, force=force)

    def _add(self, event: Event) -> None:
        outcome = ENDS_A_RUN.get(event.fields.get("status", ""))
        if outcome is None:
            return
        cell = self.minutes[int(event.at // 60) * 60].setdefault(event.fields.get("class", "?"), _Minute())
        if outcome == "success":
            cell.success += 1
        else:
            cell.failure += 1
        duration = event.fields.get("duration_ms", "")
        if duration.isdigit():
            cell.durations.append(int(duration))

    def refresh(self, now: float, since: float) -> None:
        try:
            info = os.stat(self.path)
        except OSError:
            self.identity, self.offset, self.head = None, 0, 0
            self.minutes.clear()
            return
        identity = (info.st_dev, info.st_ino)
        if identity != self.identity or info.st_size < self.offset:
            self.minutes.clear()
            self.identity = identity
            self.offset = self.head = self._complete_end(info.st_size)
            self.loaded_since = now
        elif info.st_size > self.offset:
            self._read_appended(info.st_size)
        reached_back = since < self.loaded_since and self.head > 0
        if reached_back:
            self._reach_back(since)
        oldest = now - MAX_WINDOW - 60
        for minute in [m for m in self.minutes if m < oldest]:
            del self.minutes[minute]
        self._save(force=reached_back)  # a reach back is the costly read: keep it at once

    def _reach_back(self, since: float) -> None:
        """Read lines before `head`, newest first, down to the first one older than `since`."""
        for start, line in lines_backwards_at(self.path, end=self.head):
            if not _ends_a_run(line):
                self.head = start
                continue
            event = fast_fields(line)
            if event is not None and event.at < since:
                break
            self.head = start
            if event is not None:
                self._add(event)
        else:
            self.head = 0
        self.loaded_since = since

    def _complete_end(self, size: int) -> int:
        """Where the last complete line ends: a line still being written is read next time."""
        with open(self.path, "rb") as handle:
            start = max(0, size - CHUNK)
            handle.seek(start)
            return start + handle.read(size - start).rfind(b"\n") + 1

    def _read_appended(self, size: int) -> None:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(size - self.offset)
        complete = data.rfind(b"\n") + 1  # a line still being written is read next time
        for line in data[:complete].decode("utf-8", "replace").splitlines():
            event = fast_fields(line) if _ends_a_run(line) else None
            if event is not None:
                self._add(event)
        self.offset += complete

    def statistics(self, window: int, now: float) -> dict[str, Any]:
        """`GET /api/stats` (SPEC §9): per class over the window, and the series of successes and failures."""
        with self.lock:
            self.refresh(now, now - window)
            step = bucket_seconds(window)
            first = int((now - window) // step) * step
            series = {first + i * step: [0, 0] for i in range(int((now - first) // step) + 1)}
            per_class: dict[str, _Minute] = defaultdict(_Minute)
            for minute, cells in self.minutes.items():
                if minute < now - window - 60:
                    continue
                bucket = series.get(int(minute // step) * step)
                for name, cell in cells.items():
                    if bucket is not None:
                        bucket[0] += cell.success
                        bucket[1] += cell.failure
                    total = per_class[name]
                    total.success += cell.success
                    total.failure += cell.failure
                    total.durations.extend(cell.durations)
        classes = [{"class": name, "runs": row.success + row.failure, "failures": row.failure,
                    "p50_ms": percentile(row.durations, 0.5), "p95_ms": percentile(row.durations, 0.95)}
                   for name, row in sorted(per_class.items())]
        return {"window": window, "step": step, "classes": classes,
                "series": [{"t": t, "success": ok, "failure": bad} for t, (ok, bad) in sorted(series.items())]}


def job_events(log_dir: Path, job_id: str, *, since: float | None = None, limit_bytes: int = 8 << 20) -> list[Event]:
    """Every line of one job in the event log, oldest first: read back to `since` (the job's creation; no
    older line can name it), or the newest `limit_bytes` when it is not known."""
    found: list[Event] = []
    read = 0
    needles = (f" job={job_id} ", f'"job": "{job_id}"')
    for count, line in enumerate(lines_backwards(log_dir / EVENTS_LOG)):
        read += len(line) + 1
        if read > limit_bytes:
            break
        if since is not None and count % 32 == 0 and _older_than(line, since):  # every 32nd line is enough
            break
        if any(needle in line for needle in needles):
            event = parse_line(line)
            if event is not None and event.fields.get("job") == job_id:
                found.append(event)
    found.reverse()
    return found


def _older_than(line: str, since: float) -> bool:
    at = line_time(line)
    return at is not None and at < since


def error_entries(log_dir: Path, *, limit_bytes: int) -> Iterator[tuple[Event, str]]:
    """The errors log's entries (an event line and the traceback or reason after it), newest first, from its
    last `limit_bytes`."""
    current: list[str] = []
    read = 0
    for line in lines_backwards(log_dir / ERRORS_LOG):
        read += len(line) + 1
        if read > limit_bytes:
            return
        if line.startswith("{"):  # a JSON entry is one line, its traceback or reason inside
            event = parse_line(line)
            if event is not None:
                yield _text_entry(event, line)
                continue
        current.append(line)
        event = parse_line(line) if " status=" in line else None
        if event is not None:
            yield event, "\n".join(reversed(current)).rstrip()
            current = []


def _text_entry(event: Event, line: str) -> tuple[Event, str]:
    """A JSON entry shown as the text form shows it: the line, then its traceback or reason."""
    fields = dict(event.fields)
    detail = fields.pop(TRACEBACK_KEY, None)
    if detail is None and fields.get("status") != "rejected":
        detail = fields.pop(REASON_KEY, None)
    stamp = line[len('{"ts": "'):].partition('"')[0] if line.startswith('{"ts": "') else ""
    shown = text_line(stamp or datetime.fromtimestamp(event.at).astimezone().isoformat(), fields)
    detail = detail if detail is not None else fields.get(REASON_KEY)
    return Event(event.at, fields), (shown + ("\n" + detail if detail else "")).rstrip()


def error_tail(log_dir: Path, *, query: str | None, limit_bytes: int = 256 << 10) -> list[str]:
    """The tail of the errors log as entries, newest first; those containing `query` only."""
    return [text for _, text in error_entries(log_dir, limit_bytes=limit_bytes)
            if not query or query.lower() in text.lower()]


def job_errors(log_dir: Path, job_id: str, *, limit_bytes: int = 8 << 20) -> dict[str, str]:
    """attempt -> what the errors log holds for that failed run of the job (its traceback, or the reason)."""
    found: dict[str, str] = {}
    for event, text in error_entries(log_dir, limit_bytes=limit_bytes):
        if event.fields.get("job") == job_id:
            found.setdefault(event.fields.get("attempt", ""), text.split("\n", 1)[1] if "\n" in text else text)
    return found
