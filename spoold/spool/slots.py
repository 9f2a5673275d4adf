"""Periodic jobs (SPEC §12): each slot of [schedule] submitted once per spool, with no leader.

A slot is taken by creating its marker, `markers/schedule/NAME/SLOT.json`, with a no-replace link: of
all daemons exactly one link wins, whatever their clocks say. The slot's job is first staged in the
taker's own running/ folder under a hidden name, and the marker is a second link to that very file,
so a daemon that dies at any step leaves its node folder to recovery, which can tell (docs/design.md,
S1-S4): a staged file without its marker lost the race or never took it (dropped); one that is still
the marker's file never reached its ready folder (put there, no run counted); anything else is a job
like any other. The markers are the record of what was submitted, apart from the job files, so
purging done/ resubmits nothing; they are kept well past any clock offset between hosts, then pruned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spoold.config import Config
from spoold.errors import LostClaim, NameTaken
from spoold.job import Job, JobStatus, dump_job
from spoold.outcomes import iso, ready_folder
from spoold.paths import JOB_SUFFIX, SpoolPaths
from spoold.periodic import Entry, describe, latest_due, next_due, slot_id
from spoold.spool.fsio import fsync_dir, link_no_replace, publish, same_file, write_tmp
from spoold.spool.moves import Mover
from spoold.spool.node import Node

log = logging.getLogger(__name__)
STAGED_SUFFIX = ".slot"
RETRY_SECONDS = 1.0
KEEP_MARKERS = 10  # per entry, whatever their age: `status` shows the last one
_SLOT_ID = re.compile(r"cron-([A-Za-z0-9_-]{1,64})-([0-9]{8}T[0-9]{6}Z)")
_STAMP = "%Y%m%dT%H%M%SZ"
BASELINE = b'{"baseline": true}\n'  # a new entry's first marker: starts it with its next slot


def stamp(due: float) -> str:
    return f"{datetime.fromtimestamp(int(due), UTC):{_STAMP}}"


def schedule_folder(paths: SpoolPaths, name: str) -> Path:
    return paths.markers / "schedule" / name


def marker_of(paths: SpoolPaths, job_id: str) -> Path | None:
    """The marker of the slot whose job this is, for a slot job's id; None for any other id."""
    match = _SLOT_ID.fullmatch(job_id)
    return schedule_folder(paths, match[1]) / f"{match[2]}{JOB_SUFFIX}" if match else None


def staged_name(job_name: str) -> str:
    """The hidden name a slot's job has in its taker's folder until the marker is linked to it."""
    return f".{job_name}{STAGED_SUFFIX}"


def unstaged_name(name: str) -> str | None:
    """`ID.json` for a staged `.ID.json.slot` of a slot job, else None."""
    if name.startswith(".") and name.endswith(JOB_SUFFIX + STAGED_SUFFIX):
        plain = name[1: -len(STAGED_SUFFIX)]
        return plain if _SLOT_ID.fullmatch(plain[: -len(JOB_SUFFIX)]) else None
    return None


def is_marked(paths: SpoolPaths, copy: Path, job_id: str) -> bool:
    """True if `copy` (of the job `job_id`) is still the very file its slot's marker links to: the slot
    was taken, and its job has not reached a ready folder yet."""
    marker = marker_of(paths, job_id)
    return marker is not None and same_file(copy, marker)


def markers(paths: SpoolPaths, name: str) -> list[tuple[float, Path]]:
    """An entry's markers, oldest first, as (slot, path)."""
    try:
        names = os.listdir(schedule_folder(paths, name))
    except FileNotFoundError:
        return []
    found = []
    for each in names:
        with contextlib.suppress(ValueError):
            moment = datetime.strptime(each.removesuffix(JOB_SUFFIX), _STAMP).replace(tzinfo=UTC)
            if each.endswith(JOB_SUFFIX):
                found.append((moment.timestamp(), schedule_folder(paths, name) / each))
    return sorted(found)


@dataclass(frozen=True)
class LastSlot:
    """An entry's newest submitted slot, for `spoold status` and the dashboard."""

    due: float
    job_id: str


def last_slot(paths: SpoolPaths, name: str) -> LastSlot | None:
    """The newest slot whose job was submitted (a new entry's first marker submits nothing)."""
    for due, path in reversed(markers(paths, name)):
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and "class" in doc:
            return LastSlot(due, slot_id(name, due))
    return None


def schedule_view(paths: SpoolPaths, config: Config, now: float) -> list[dict[str, Any]]:
    """[schedule] for `spoold status` and the dashboard: per entry, what it runs, when its next slot falls
    due, and its last submitted slot's job with where that job is now."""
    rows = []
    for entry in config.schedule.values():
        try:
            upcoming: str | None = iso(next_due(entry, now))
        except LookupError:
            upcoming = None
        last = last_slot(paths, entry.name)
        found = paths.find_job(last.job_id) if last is not None else None
        rows.append({"name": entry.name, "class": entry.class_name, "method": entry.method, "when": describe(entry),
                     "next_due": upcoming,
                     "last": None if last is None else {
                         "due": iso(last.due), "id": last.job_id,
                         "state": found.relative_to(paths.root).parts[0] if found is not None else "gone"}})
    return rows


def slot_job(entry: Entry, due: float, now: float, config: Config) -> Job:
    doc: dict[str, Any] = {"class": entry.class_name, "method": entry.method, "params": entry.params,
                           "priority": entry.priority or config.priority_of(entry.class_name),
                           "status": JobStatus.READY.value, "attempts": 0, "created_at": iso(now),
                           "schedule": entry.name, "due_at": iso(due)}
    return Job(slot_id(entry.name, due), doc)


class Scheduler:
    """The slots this daemon takes: at each pass, each entry's latest due slot, unless its marker exists.

    Each daemon takes each slot when its own clock reaches it, so a host whose clock is ahead takes them
    early and one that is behind finds them taken; a daemon that was down, or stalled across several
    slots, takes only the latest (SPEC §12: older missed slots are not run)."""

    def __init__(self, paths: SpoolPaths, node: Node, mover: Mover) -> None:
        self.paths, self.node, self.mover = paths, node, mover
        self.floor: dict[str, float] = {}  # entry -> its oldest marker when first seen: nothing older is taken
        self.due_at: float | None = 0.0  # when submit_due has something to do (None: no entry)

    def submit_due(self, config: Config, now: float) -> list[Path]:
        """Take and submit every slot now due; returns where their jobs are. A slot the spool refused is
        tried again a second later."""
        submitted, failed = [], False
        for entry in config.schedule.values():
            try:
                target = self._submit(config, entry, now)
            except (OSError, LostClaim) as e:
                log.error("schedule %s: cannot submit its slot, trying again: %s", entry.name, e)
                failed = True
                continue
            if target is not None:
                submitted.append(target)
        upcoming = self.next_due(config, now)
        self.due_at = min(now + RETRY_SECONDS, upcoming or now + RETRY_SECONDS) if failed else upcoming
        return submitted

    def next_due(self, config: Config, now: float) -> float | None:
        """When a slot not yet taken falls due: the loop wakes then."""
        times = []
        for entry in config.schedule.values():
            with contextlib.suppress(LookupError):
                times.append(next_due(entry, now))
        return min(times, default=None)

    def prune(self, config: Config, now: float) -> None:
        """Drop markers far older than any clock offset between hosts: max(1 h, 10 slots) back, keeping
        each entry's newest few (they tell `status` what ran last)."""
        for entry in config.schedule.values():
            with contextlib.suppress(LookupError, TypeError):
                window = max(3600.0, 10 * (next_due(entry, now) - (latest_due(entry, now) or now)))
                found = markers(self.paths, entry.name)
                for due, path in found[:-KEEP_MARKERS]:
                    if due < now - window:
                        with contextlib.suppress(OSError):
                            os.unlink(path)

    def _submit(self, config: Config, entry: Entry, now: float) -> Path | None:
        due = latest_due(entry, now)
        if due is None:
            return None
        marker = schedule_folder(self.paths, entry.name) / f"{stamp(due)}{JOB_SUFFIX}"
        if entry.name not in self.floor:
            found = markers(self.paths, entry.name)
            if not found:  # a new entry starts with its next slot (SPEC §12)
                self._baseline(entry.name, due)
                return None
            self.floor[entry.name] = found[0][0]
        # A slot before the entry's first marker came before the entry (a host whose clock is behind
        # would take it late otherwise); one whose marker exists is taken (the link below decides; this
        # only saves the work).
        if due <= self.floor[entry.name] or os.path.lexists(marker):
            return None
        return self._take(config, entry, due, now, marker)

    def _baseline(self, name: str, due: float) -> None:
        marker = schedule_folder(self.paths, name) / f"{stamp(due)}{JOB_SUFFIX}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(NameTaken):  # another daemon saw the new entry too
            publish(self.paths.tmp, BASELINE, marker, durable=self.mover.durable)
        self.floor[name] = markers(self.paths, name)[0][0]

    def _take(self, config: Config, entry: Entry, due: float, now: float, marker: Path) -> Path | None:
        """Stage the job in our folder, link the marker to it (the decision), then commit it to its ready
        folder like any claimed job. Steps and what a crash at each leaves: docs/design.md, S2."""
        job = slot_job(entry, due, now, config)
        name = job.id + JOB_SUFFIX
        staged = self.node.folder / staged_name(name)
        tmp = write_tmp(self.paths.tmp, dump_job(job), durable=self.mover.durable)
        try:
            os.rename(tmp, staged)
            if self.mover.durable:  # the marker must never be durable without the staged copy
                fsync_dir(self.node.folder)
        except BaseException:
            tmp.unlink(missing_ok=True)
            staged.unlink(missing_ok=True)
            raise
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            if not self.mover.may_act() or not self._link(staged, marker):
                staged.unlink(missing_ok=True)
                return None
            if self.mover.durable:
                fsync_dir(marker.parent)
        except BaseException:
            staged.unlink(missing_ok=True)  # not marked: nothing was taken
            raise
        claimed = self.node.folder / name
        try:
            os.rename(staged, claimed)
        except FileNotFoundError as e:  # recovery took it over: we were counted dead
            raise LostClaim(f"slot job {job.id}: its staged copy is gone") from e
        target = self.mover.commit(job, claimed, ready_folder(job, config))
        log.info("schedule %s: slot %s submitted as job %s", entry.name, iso(due), job.id)
        return target

    def _link(self, staged: Path, marker: Path) -> bool:
        """The decision: True if our link made the marker."""
        try:
            if link_no_replace(staged, marker):
                return True
        except NameTaken:
            return False
        # No hard links here (FAT, some FUSE): the marker is an exclusive copy; see docs/design.md, S4.
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, staged.read_bytes())
        finally:
            os.close(fd)
        return True
