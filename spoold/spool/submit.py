"""Submitting a job (SPEC §6, §7): check it, write it to tmp/, fsync, move it into its folder.

Imports neither the job's code nor watchdog, so a web request pays only for a small file write.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spoold.allowlist import check_allowed
from spoold.config import Config, find_config, load_config
from spoold.errors import JobRejected, SpoolWriteError, SubmitError
from spoold.job import MAX_DEPTH, PRIORITIES, Job, JobStatus, dump_job, validate_document
from spoold.paths import Folder, SpoolPaths, new_job_id
from spoold.spool.fsio import publish
from spoold.spool.unique import submit_unique


def parse_cli_params(text: str | None) -> list[Any] | dict[str, Any]:
    """`"a,b"` -> ["a", "b"]; an argument starting with `[` or `{` is JSON (SPEC §6)."""
    if text is None or text == "":
        return []
    if text.lstrip().startswith(("[", "{")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise SubmitError(f"params: bad JSON: {e.msg} at column {e.colno}") from e
        if not isinstance(value, list | dict):
            raise SubmitError("params: expected a JSON array or object")
        return value
    return text.split(",")


# A lone surrogate (from "\ud800" or a bad decode) has no UTF-8 form; the daemon would reject the file.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _place(parent: str, key: str) -> str:
    """`params`, `chain[0].params`, `params[1].name`, `params[0]["odd key"]`: where a value is, as messages say it."""
    if key.isidentifier():
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(key, ensure_ascii=False)}]"


def _scalar_problem(value: Any, place: str) -> str | None:
    """What is wrong with a value that is not a container, or None if JSON holds it as it is."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            return f"{place}: a string holds a lone surrogate ({ascii(value)[:60]}), which UTF-8 cannot encode"
        return None
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{place}: {value!r} is not JSON (numbers must be finite)"
    return f"{place}: {type(value).__name__} is not JSON (expected None, bool, int, float, str, list, tuple or dict)"


def _key_problem(key: Any, place: str) -> str | None:
    if not isinstance(key, str):
        return f"{place or 'the job'}: key {key!r} is not a string (JSON object keys are strings)"
    if _SURROGATE.search(key):
        return f"{place or 'the job'}: key {ascii(key)[:60]} holds a lone surrogate"
    return None


def not_json(doc: dict[str, Any]) -> str | None:
    """The first value (in document order) that JSON cannot hold, named by its place, or None.

    json.dumps would raise TypeError for a set or an object and turn a key 1 into "1" silently; a
    submitter says which value is wrong instead (issue 11).
    """
    stack: list[tuple[Any, str, int]] = [(doc, "", 1)]
    while stack:
        value, place, depth = stack.pop()
        if not isinstance(value, list | tuple | dict):
            problem = _scalar_problem(value, place)
            if problem is not None:
                return problem
            continue
        if depth > MAX_DEPTH:  # a container holding itself ends here too
            return f"{place}: nesting deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            for key in value:
                if (problem := _key_problem(key, place)) is not None:
                    return problem
            children = [(child, _place(place, key), depth + 1) for key, child in value.items()]
        else:
            children = [(child, f"{place}[{index}]", depth + 1) for index, child in enumerate(value)]
        stack.extend(reversed(children))
    return None


def check_job(config: Config, doc: dict[str, Any]) -> None:
    """Everything the daemon would reject, refused up front: schema, JSON, allowlist, chain steps.

    The size is checked once the document is encoded (encode_job).
    """
    problem = not_json(doc)
    if problem is not None:
        raise SubmitError(problem)
    try:
        validate_document(doc)
        check_allowed(config.allowed_jobs, doc["class"], doc.get("method", "handle"))
        for step in doc.get("chain", []):
            check_allowed(config.allowed_jobs, step["class"], step.get("method", "handle"))
    except JobRejected as e:
        raise SubmitError(f"{e} (config: {config.path})") from e


def check_delay(delay: Any) -> None:
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float)
                              or not math.isfinite(delay) or delay < 0):
        raise SubmitError(f"delay: expected a number of seconds >= 0, got {delay!r}")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    path: Path


def build_job(config: Config, class_name: str, method: str, params: Any, *, priority: str | None,
              delay: float | None, chain: Sequence[dict[str, Any]] | None, now: datetime,
              unique_key: str | None = None) -> tuple[Job, str]:
    """The job document and the folder it goes to (a ready folder, or scheduled/ when delayed)."""
    if priority is not None and priority not in PRIORITIES:
        raise SubmitError(f"priority: expected one of {', '.join(PRIORITIES)}, got {priority!r}")
    job_id = new_job_id(now)
    if params is None or isinstance(params, tuple):  # a tuple is a JSON array like a list
        params = list(params or ())
    doc: dict[str, Any] = {"id": job_id, "class": class_name, "method": method, "params": params,
                           "priority": priority or config.priority_of(class_name)}
    if chain:
        doc["chain"] = [dict(step) for step in chain]
    if delay is not None:
        doc["delay_seconds"] = delay
    if unique_key is not None:
        doc["unique_key"] = unique_key
    check_job(config, doc)
    doc.update(status=JobStatus.READY.value, attempts=0, created_at=now.isoformat())
    folder = doc["priority"]
    if delay:
        doc["run_at"] = (now + timedelta(seconds=delay)).isoformat()
        doc["status"] = JobStatus.SCHEDULED.value
        folder = Folder.SCHEDULED
    return Job(job_id, doc), folder


def encode_job(config: Config, job: Job) -> bytes:
    """The bytes of a checked job; SubmitError if they exceed max_job_bytes."""
    data = dump_job(job)
    if len(data) > config.max_job_bytes:
        raise SubmitError(f"job is too large: {len(data)} bytes > max_job_bytes {config.max_job_bytes}")
    return data


def write_job(config: Config, job: Job, folder: str) -> Path:
    """tmp/ + fsync + no-replace move: a reader never sees half a file; SpoolWriteError if it cannot."""
    data = encode_job(config, job)
    paths = SpoolPaths(config.spool_dir)
    target = paths.job_file(folder, job.id)
    durable = config.durability == "fsync"
    try:
        try:
            publish(paths.tmp, data, target, durable=durable)
        except FileNotFoundError:  # a spool no daemon has made yet: make its folders, once
            paths.tmp.mkdir(parents=True, exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            publish(paths.tmp, data, target, durable=durable)
    except OSError as e:
        raise SpoolWriteError(f"cannot write {target}: {e.strerror or e}") from e
    return target


def write_unique(config: Config, job: Job, folder: str) -> Submitted:
    """A job with a unique_key (unique.py): ours, or the live job holding the key (nothing written)."""
    data = encode_job(config, job)
    paths = SpoolPaths(config.spool_dir)
    try:
        paths.tmp.mkdir(parents=True, exist_ok=True)
        job_id, path = submit_unique(paths, job.id, job.doc["unique_key"], data, paths.job_file(folder, job.id),
                                     durable=config.durability == "fsync")
    except OSError as e:
        raise SpoolWriteError(f"cannot write {job.id} with its unique_key: {e.strerror or e}") from e
    return Submitted(job_id, path)


def submit(config: Config, class_name: str, method: str = "handle", params: Any = None, *,
           priority: str | None = None, delay: float | None = None,
           chain: Sequence[dict[str, Any]] | None = None, unique_key: str | None = None) -> Submitted:
    """Check and write one job; the one code path behind the API, run_job.py and `spoold submit`. With a
    unique_key held by a live job, nothing is written and that job is returned (SPEC §12)."""
    check_delay(delay)
    job, folder = build_job(config, class_name, method, params, priority=priority, delay=delay,
                            chain=chain, now=datetime.now(UTC), unique_key=unique_key)
    if unique_key is not None:
        return write_unique(config, job, folder)
    return Submitted(job.id, write_job(config, job, folder))


_cache: dict[Path, tuple[tuple[int, int], Config]] = {}


def cached_config(path: Path) -> Config:
    """load_config, re-read only when the file changed: a web app submits many jobs per config read."""
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size)
    hit = _cache.get(path)
    if hit is None or hit[0] != key:
        hit = (key, load_config(path))
        _cache[path] = hit
    return hit[1]


def run_background_job(class_name: str, method: str = "handle", params: Any = None, *,
                       priority: str | None = None, delay: float | None = None,
                       chain: Sequence[dict[str, Any]] | None = None, unique_key: str | None = None,
                       config: str | os.PathLike[str] | None = None) -> str:
    """Hand a job to the background and return its id; raises SubmitError (a ValueError) if refused.
    With `unique_key` held by a live job, nothing is written and that job's id is returned."""
    try:
        path = find_config(config)
        loaded = cached_config(path)
    except OSError as e:
        raise SubmitError(f"cannot read config: {e}") from e
    return submit(loaded, class_name, method, params, priority=priority, delay=delay, chain=chain,
                  unique_key=unique_key).job_id
