"""Human output of the operator commands: aligned columns, local times and ages read at a glance.

Job data is shown, never trusted: control characters are escaped and long texts cut, so a hostile
file cannot garble an operator's terminal (SPEC §2 says the same of log lines). `--json` output is
built in views.py, not here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from spoold.paths import Folder
from spoold.spool.views import Shown

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
TEXT_WIDTH = 70
LAST_COLUMN: dict[str, str] = {Folder.SCHEDULED: "RUN_AT", Folder.RUNNING: "DAEMON", Folder.REJECTED: "REASON"}


def clean(value: object, width: int = 0) -> str:
    """One printable line: control characters as \\xNN, cut to `width` (0: no limit)."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, indent: str = "",
          right: frozenset[int] = frozenset()) -> list[str]:
    """Columns padded to their widest cell, two spaces apart; `right` holds right-aligned columns."""
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    lines = []
    for row in (headers, *rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in pairs]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def local_time(value: Any) -> str:
    """An ISO time from a document or the spool, in local time to the second; other values as they are."""
    if not isinstance(value, str):
        return clean(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return clean(value, TEXT_WIDTH)
    return (moment.astimezone() if moment.tzinfo else moment).strftime("%Y-%m-%d %H:%M:%S")


def render_status(status: dict[str, Any]) -> str:
    lines = [f"spool    {clean(status['spool'])}"]
    daemons = status["daemons"]
    lines.append(f"daemons  {len(daemons)} alive" if daemons else "daemons  none alive")
    if daemons:
        rows = [[clean(d["id"]), clean(d["host"]), clean(d["pid"]), local_time(d["started_at"]),
                 clean(d["workers"]), clean(d["busy"])] for d in daemons]
        lines += table(["ID", "HOST", "PID", "STARTED", "WORKERS", "BUSY"], rows, indent="  ",
                       right=frozenset({2, 4, 5}))
    lines.append("jobs")
    counts = status["counts"]
    lines += table(["FOLDER", "JOBS"], [[name, str(count)] for name, count in counts.items()], indent="  ",
                   right=frozenset({1}))
    oldest = status["oldest_ready_age_seconds"]
    lines.append("oldest ready job  " + ("none" if oldest is None else f"waiting {age(oldest)}"))
    schedule = status.get("schedule") or []
    if schedule:
        lines.append("schedule")
        rows = [[clean(e["name"]), clean(e["when"]), local_time(e["next_due"]) if e["next_due"] else "never",
                 f"{clean(e['last']['id'])} ({e['last']['state']})" if e["last"] else "none yet"] for e in schedule]
        lines += table(["NAME", "WHEN", "NEXT DUE", "LAST SLOT'S JOB"], rows, indent="  ")
    limits = status.get("concurrency") or []
    if limits:
        lines.append("concurrency")
        lines += table(["CLASS", "LIMIT", "RUNNING"], [[clean(e["class"]), str(e["limit"]), str(e["running"])]
                                                       for e in limits], indent="  ", right=frozenset({1, 2}))
    not_jobs: dict[str, int] = status.get("not_jobs") or {}
    if not_jobs:
        total = sum(not_jobs.values())
        where = ", ".join(f"{name}/ ({count})" for name, count in not_jobs.items())
        what = "1 file that is not a job" if total == 1 else f"{total} files that are not jobs"
        lines.append(f"ignored  {what}, in {where}: only NAME.json files run")
    return "\n".join(lines)


def _last_cell(folder: str, row: dict[str, Any]) -> str:
    if folder == Folder.SCHEDULED:
        return local_time(row["run_at"]) if row["run_at"] else ""
    if folder == Folder.RUNNING:
        return clean(row["daemon"])
    if folder == Folder.REJECTED:
        return clean(row["reason"], TEXT_WIDTH)
    if row["error_type"] is None:
        return ""
    return clean(f"{row['error_type']}: {row['error'] or ''}".rstrip(": "), TEXT_WIDTH)


def render_list(folder: str, rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return f"no jobs in {folder}/"
    headers = ["ID", "CLASS.METHOD", "ATTEMPTS", "WHEN", LAST_COLUMN.get(folder, "ERROR")]
    cells = [[clean(row["id"]), clean(f"{row['class']}.{row['method']}" if row["class"] != "?" else "?"),
              "" if row["attempts"] is None else str(row["attempts"]), local_time(row["mtime"]),
              _last_cell(folder, row)] for row in rows]
    return "\n".join(table(headers, cells, right=frozenset({2})))


def escape_bytes(data: bytes) -> bytes:
    """Bytes safe for a terminal: control characters but newline and tab as \\xNN (for `show` on a tty)."""
    return re.sub(rb"[\x00-\x08\x0b-\x1f\x7f]", lambda m: b"\\x%02x" % m.group()[0], data)


def render_show(shown: Shown, *, terminal: bool = False) -> bytes:
    """The state, the path, then the pretty document; a rejected or unreadable file's bytes as they are
    (on a terminal with control characters escaped, so a hostile file cannot drive it)."""
    if shown.daemon is not None:
        state = f"running in daemon {clean(shown.daemon)} ({'alive' if shown.daemon_alive else 'dead'})"
    else:
        state = f"{shown.folder}/"
    lines = [f"job     {clean(shown.id)}", f"state   {state}", f"path    {clean(shown.path)}"]
    raw = shown.folder == Folder.REJECTED or shown.document is None
    if raw:
        lines.append(f"reason  {clean(shown.reason)}")
    head = ("\n".join(lines) + "\n\n").encode("utf-8")
    if raw:
        body = escape_bytes(shown.raw) if terminal else shown.raw
        return head + body + (b"" if body.endswith(b"\n") else b"\n")
    document, blocks = take_out_texts(shown.document or {})
    pretty = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    pretty += "".join(f"\n{name}:\n{text.rstrip(chr(10))}\n" for name, text in blocks)
    data = pretty.encode("utf-8", errors="backslashreplace")
    return head + (escape_bytes(data) if terminal else data)


def take_out_texts(document: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The document with its multi-line texts (`error.traceback`, `output`) replaced by a pointer, and
    those texts, to be printed as lines after it: a traceback is read as lines, not as one escaped string."""
    shown = dict(document)
    blocks: list[tuple[str, str]] = []

    def pointer(name: str, text: str) -> str:
        blocks.append((name, text))
        return f"<{len(text.rstrip(chr(10)).splitlines())} lines, printed below as {name}>"

    error = shown.get("error")
    if isinstance(error, dict) and _multi_line(error.get("traceback")):
        shown["error"] = {**error, "traceback": pointer("error.traceback", error["traceback"])}
    if _multi_line(shown.get("output")):
        shown["output"] = pointer("output", shown["output"])
    return shown, blocks


def _multi_line(value: object) -> bool:
    return isinstance(value, str) and "\n" in value.strip("\n")
