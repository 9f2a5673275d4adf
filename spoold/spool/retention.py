"""Removing old finished jobs: `keep_done_days`/`keep_failed_days` in the daemon, `spoold purge` by hand.

Streams the folder with os.scandir and keys on mtime (a finished job's file is written when it ends),
so it costs one stat per file and never runs in the claim path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from collections.abc import Callable

from spoold.config import Config
from spoold.paths import JOB_SUFFIX, REASON_SUFFIX, Folder, SpoolPaths, is_job_name

log = logging.getLogger(__name__)
PURGEABLE: tuple[str, ...] = (Folder.DONE.value, Folder.FAILED.value, Folder.REJECTED.value)  # quoted by argparse
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """"7d", "12h", "30m", "90s", "2w" or plain seconds -> seconds; ValueError names the format."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a duration such as 7d, 12h, 30m or 90s, got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def purge_folder(paths: SpoolPaths, folder: str, older_than_seconds: float, *, now: float,
                 on_removed: Callable[[str], None] | None = None) -> int:
    """Delete the job files of `folder` last written before now - older_than; returns how many.

    In rejected/, a job file goes with its ID.reason. `on_removed` is told each removed job's id (`spoold
    purge` logs a line for it).
    """
    if folder not in PURGEABLE:
        raise ValueError(f"can only purge {', '.join(PURGEABLE)}, not {folder!r}")
    cutoff = now - older_than_seconds
    removed = 0
    try:
        entries = os.scandir(paths.folder(folder))
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            if not is_job_name(entry.name):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as e:
                log.warning("cannot remove %s: %s", entry.path, e)
                continue
            removed += 1
            if on_removed is not None:
                on_removed(entry.name[: -len(JOB_SUFFIX)])
            if folder == Folder.REJECTED:
                reason = entry.name[: -len(JOB_SUFFIX)] + REASON_SUFFIX
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(paths.folder(folder), reason))
    return removed


TMP_TTL_SECONDS = 36 * 3600  # a writer that has not renamed its file out of tmp/ by then died (docs/design.md, F1)


def reap_tmp(paths: SpoolPaths, *, now: float) -> int:
    """Delete files left in tmp/ by writers that died mid-write; returns how many."""
    removed = 0
    try:
        entries = os.scandir(paths.tmp)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode) or info.st_mtime >= now - TMP_TTL_SECONDS:
                    continue
                os.unlink(entry.path)
            except OSError:
                continue
            removed += 1
    return removed


def apply_retention(paths: SpoolPaths, config: Config, *, now: float) -> None:
    """Delete finished jobs older than keep_done_days / keep_failed_days (0 keeps them forever), and
    what dead writers left in tmp/."""
    reaped = reap_tmp(paths, now=now)
    if reaped:
        log.info("retention: removed %d file(s) left in tmp/ for over %d hours", reaped, TMP_TTL_SECONDS // 3600)
    keep = {Folder.DONE: config.keep_done_days, Folder.FAILED: config.keep_failed_days,
            Folder.REJECTED: config.keep_failed_days}
    for folder, days in keep.items():
        if days <= 0:
            continue
        try:
            removed = purge_folder(paths, folder, days * 86400, now=now)
        except OSError as e:
            log.error("retention of %s/ failed: %s", folder, e)
            continue
        if removed:
            log.info("retention: removed %d job(s) older than %g day(s) from %s/", removed, days, folder)
