"""Submitting many jobs at once (SPEC §7): every job checked first, then written with shared fsyncs.

One run_background_job() costs two fsyncs (its file, then its folder). A batch stages every file in
tmp/ first and fsyncs them from a few threads at once (the filesystem commits concurrent fsyncs
together: on ext4 this halves their cost), links them all in, then fsyncs each folder it touched once
(docs/design.md, P3, P4). Because nothing is linked in before every file is staged, a full disk or any
other write error while staging leaves the spool as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spoold.config import Config, find_config
from spoold.errors import BatchWriteError, SubmitError
from spoold.paths import SpoolPaths
from spoold.spool.fsio import fsync_dir, link_no_replace, move_no_replace, remove_source, write_tmp
from spoold.spool.submit import build_job, cached_config, check_delay, encode_job
from spoold.spool.unique import submit_unique

JobSpec = tuple[Any, ...] | Mapping[str, Any]
ITEM_KEYS = ("class", "method", "params", "priority", "delay", "chain", "unique_key")
FSYNC_THREADS = 8


def _call_of(index: int, item: JobSpec) -> dict[str, Any]:
    """One item of a batch as keyword arguments of build_job; SubmitError names the item."""
    if isinstance(item, tuple):
        if len(item) not in (2, 3):
            raise SubmitError(f"job {index}: expected a tuple (class, method, params), got {len(item)} items")
        return {"class": item[0], "method": item[1], "params": item[2] if len(item) == 3 else None}
    if isinstance(item, Mapping):
        unknown = [key for key in item if key not in ITEM_KEYS]
        if unknown:
            raise SubmitError(f"job {index}: unknown key {unknown[0]!r} (expected {', '.join(ITEM_KEYS)})")
        if "class" not in item:
            raise SubmitError(f"job {index}: missing key 'class'")
        return dict(item)
    raise SubmitError(f"job {index}: expected a tuple (class, method, params) or a dict, got {type(item).__name__}")


def check_batch(config: Config, jobs: Iterable[JobSpec]) -> list[tuple[str, bytes, Path, str | None]]:
    """(id, bytes, target, unique_key) of every job, all checked before any is written; SubmitError names
    the first refused (two equal unique_keys in one batch included)."""
    paths = SpoolPaths(config.spool_dir)
    checked = []
    keys: dict[str, int] = {}
    for index, item in enumerate(jobs):
        call = _call_of(index, item)
        try:
            check_delay(call.get("delay"))
            # Each its own time: ids sort by submission (docs/design.md, P1), so the batch keeps its order.
            job, folder = build_job(config, call["class"], call.get("method", "handle"), call.get("params"),
                                    priority=call.get("priority"), delay=call.get("delay"),
                                    chain=call.get("chain"), now=datetime.now(UTC), unique_key=call.get("unique_key"))
            data = encode_job(config, job)
        except SubmitError as e:
            raise SubmitError(f"job {index}: {e}") from e
        key = job.doc.get("unique_key")
        if key is not None and key in keys:
            raise SubmitError(f"job {index}: unique_key {key!r} is job {keys[key]}'s too (SPEC §12)")
        if key is not None:
            keys[key] = index
        checked.append((job.id, data, paths.job_file(folder, job.id), key))
    return checked


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))  # Windows commits only writable handles
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_all(files: list[Path]) -> None:
    if len(files) < 2:
        for path in files:
            _fsync_file(path)
        return
    from concurrent.futures import ThreadPoolExecutor  # only here: submitting one job never needs threads

    with ThreadPoolExecutor(max_workers=min(FSYNC_THREADS, len(files)), thread_name_prefix="spoold-fsync") as pool:
        list(pool.map(_fsync_file, files))  # list(): raise the first error


def _stage(paths: SpoolPaths, files: Sequence[tuple[str, bytes, Path]], durable: bool) -> list[Path]:
    """Every file written and fsynced in tmp/, or none: a failure removes what was staged and raises."""
    staged: list[Path] = []
    try:
        for _, data, _ in files:
            try:
                staged.append(write_tmp(paths.tmp, data, durable=False))
            except FileNotFoundError:  # a spool no daemon has made yet: make its folders, once
                paths.tmp.mkdir(parents=True, exist_ok=True)
                staged.append(write_tmp(paths.tmp, data, durable=False))
        if durable:
            _fsync_all(staged)
        for folder in {target.parent for _, _, target in files}:
            folder.mkdir(parents=True, exist_ok=True)
    except BaseException:
        for path in staged:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return staged


def publish_batch(paths: SpoolPaths, files: Sequence[tuple[str, bytes, Path]], *, durable: bool) -> None:
    """Stage all, link all, fsync each target folder once, then drop the staged copies.

    On any error the links made are undone (as publish() does after a failed fsync: docs/design.md, P9)
    and BatchWriteError is raised; its `written` lists the jobs a daemon had already claimed, which stay.
    """
    try:
        staged = _stage(paths, files, durable)
    except OSError as e:
        raise BatchWriteError(f"cannot write the batch into {paths.tmp}: {e.strerror or e}; nothing was written",
                              []) from e
    linked: list[int] = []
    try:
        for index, (source, (_, _, target)) in enumerate(zip(staged, files, strict=True)):
            if not (os.name == "posix" and link_no_replace(source, target)):
                move_no_replace(source, target, durable=durable)  # Windows, or no hard links: one at a time
            linked.append(index)
        for folder in {target.parent for _, _, target in files} if durable else ():
            fsync_dir(folder)
    except OSError as e:
        where = files[len(linked)][2] if len(linked) < len(files) else "a folder fsync"
        written = _undo(files, linked)
        for path in staged:
            with contextlib.suppress(OSError):
                path.unlink()
        kept = f"{len(written)} of its jobs were claimed meanwhile and stay" if written else "nothing was written"
        raise BatchWriteError(f"cannot write the batch ({where}): {e.strerror or e}; {kept}", written) from e
    for index in linked:
        remove_source(staged[index], files[index][2])  # a tmp/ copy left behind is reaped later


def _undo(files: Sequence[tuple[str, bytes, Path]], linked: list[int]) -> list[str]:
    """Remove the jobs linked in so far; the ids of those already claimed by a daemon (they stay)."""
    written = []
    for index in linked:
        job_id, _, target = files[index]
        try:
            os.unlink(target)
        except OSError:  # gone: claimed (renamed into running/) before we could take it back; or stuck there
            written.append(job_id)
    return written


def submit_batch(config: Config, jobs: Iterable[JobSpec]) -> list[str]:
    """Check every job, then write them all; the ids in the order given."""
    checked = check_batch(config, jobs)
    paths, durable = SpoolPaths(config.spool_dir), config.durability == "fsync"
    files = [(job_id, data, target) for job_id, data, target, key in checked if key is None]
    if files:
        publish_batch(paths, files, durable=durable)
    ids = []
    for job_id, data, target, key in checked:  # a unique job takes its key, one at a time, after the others
        if key is None:
            ids.append(job_id)
            continue
        try:
            paths.tmp.mkdir(parents=True, exist_ok=True)
            ids.append(submit_unique(paths, job_id, key, data, target, durable=durable)[0])
        except OSError as e:
            written = [i for i, _, _, k in checked if k is None]
            written += [i for i, (_, _, _, k) in zip(ids, checked, strict=False) if k is not None]
            raise BatchWriteError(f"cannot write {job_id} with its unique_key: {e.strerror or e}; the jobs "
                                  "before it were written", written) from e
    return ids


def run_background_jobs(jobs: Iterable[JobSpec], *, config: str | os.PathLike[str] | None = None) -> list[str]:
    """Submit many jobs, each a (class, method, params) tuple or a dict {"class", "method", "params",
    "priority", "delay", "chain", "unique_key"}; their ids in order (for a unique_key held by a live job,
    that job's id). A refused job raises SubmitError naming its index,
    and then nothing is written."""
    try:
        loaded = cached_config(find_config(config))
    except OSError as e:
        raise SubmitError(f"cannot read config: {e}") from e
    return submit_batch(loaded, jobs)
