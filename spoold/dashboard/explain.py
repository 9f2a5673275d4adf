"""Why a job is not running (issue: "a job's page tells why"), worked out from the spool alone."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from spoold.config import Config
from spoold.paths import READY, Folder, SpoolPaths
from spoold.spool.limits import running_by_class
from spoold.spool.views import DaemonView, Shown, job_entries, live_daemons


def _when(moment: float, now: float) -> str:
    seconds = moment - now
    return f"in {seconds:.0f}s" if seconds >= 0 else f"{-seconds:.0f}s ago"


def _ahead_in_folder(folder: Path, path: Path) -> int:
    """Jobs of this ready folder that a daemon takes first: those that entered it earlier (ctime), then by name."""
    try:
        mine = (os.lstat(path).st_ctime, path.name)
    except OSError:
        return 0
    ahead = 0
    for entry in job_entries(folder):
        try:
            if (entry.stat(follow_symlinks=False).st_ctime, entry.name) < mine:
                ahead += 1
        except OSError:
            continue
    return ahead


def _ready_reasons(paths: SpoolPaths, shown: Shown, daemons: list[DaemonView], config: Config) -> list[str]:
    reasons: list[str] = []
    higher = READY[: READY.index(shown.folder)] if shown.folder in READY else ()
    ahead = sum(sum(1 for _ in job_entries(paths.ready(p))) for p in higher)
    ahead += _ahead_in_folder(paths.folder(shown.folder), shown.path)
    if ahead:
        reasons.append(f"behind {ahead} ready job(s) of equal or higher priority")
    class_name = (shown.document or {}).get("class")
    limit = config.concurrency.get(class_name) if isinstance(class_name, str) else None
    if limit and isinstance(class_name, str):
        running = running_by_class(paths, config.max_job_bytes).get(class_name, 0)
        if running >= limit:
            reasons.append(f"its class {class_name} is at its [concurrency] limit: {running} of {limit} running "
                           "across the spool; it starts when one ends")
    if not daemons:
        reasons.append("no live daemon: nothing claims jobs until a daemon starts (spoold start)")
    else:
        busy = sum(d.busy for d in daemons)
        workers = sum(int(d.info.get("workers") or 0) for d in daemons)
        if workers and busy >= workers:
            reasons.append(f"every worker is busy ({busy} of {workers} on {len(daemons)} daemon(s))")
    if shown.document is None:
        try:
            settles = os.lstat(shown.path).st_mtime + config.settle_seconds
        except OSError:
            settles = 0.0
        if settles > time.time():
            reasons.append(f"still settling: not yet a valid job, looked at again {_when(settles, time.time())}")
        else:
            reasons.append(f"not a valid job ({shown.reason}): the next daemon to look rejects it")
    return reasons or ["it is next: a daemon should claim it within moments"]


def why_not_running(paths: SpoolPaths, shown: Shown, config: Config, now: float) -> list[str]:
    """One line per reason; empty when the job is running or finished."""
    daemons = live_daemons(paths)
    if shown.folder == Folder.RUNNING:
        if shown.daemon_alive:
            return []
        return [f"claimed by a dead daemon ({shown.daemon}): the next daemon's recovery puts it back"]
    if shown.folder == Folder.REJECTED:
        return [f"rejected, never ran: {shown.reason}"]
    if shown.folder in (Folder.DONE, Folder.FAILED):
        return []
    if shown.folder == Folder.SCHEDULED:
        run_at = (shown.document or {}).get("run_at")
        try:
            due = datetime.fromisoformat(str(run_at)).timestamp()
        except ValueError:
            due = now
        reasons = [f"scheduled: due at {run_at} ({_when(due, now)})"] if due > now else []
        if not daemons:
            reasons.append("no live daemon: nothing moves it to its ready folder until a daemon starts (spoold start)")
        return reasons or ["due now: a daemon moves it to its ready folder within moments"]
    return _ready_reasons(paths, shown, daemons, config)


def never_picked_up(paths: SpoolPaths, job_id: str) -> list[dict[str, Any]]:
    """Files that carry this id in a name the daemon never takes: hidden, not `.json`, or in tmp/."""
    found: list[dict[str, Any]] = []
    for folder in (*READY, Folder.SCHEDULED, Folder.TMP):
        try:
            names = os.listdir(paths.folder(folder))
        except OSError:
            continue
        for name in names:
            if job_id not in name or (name == job_id + ".json" and folder != Folder.TMP):
                continue
            if folder == Folder.TMP:
                why = "it is in tmp/, where files are being written: never run (move it to a ready folder)"
            elif name.startswith("."):
                why = "its name starts with a dot: hidden files are never jobs (rename it without the dot)"
            else:
                why = "its name does not end in .json: only *.json files are jobs (rename it)"
            found.append({"path": f"{folder}/{name}", "why": why})
    return found
