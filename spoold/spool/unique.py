"""unique_key (SPEC §12): at most one live job (ready, scheduled, running) per key, whoever submits it.

A key has numbered markers, `markers/unique/KEYHASH/N.json`, each naming one job; the highest names
the key's holder. To take the key, a submitter reads the holder: if it is live, the submission writes
nothing and gets the holder's id; if not (done, failed, or gone), it links marker N+1 naming its own
job, and of all who try exactly one no-replace link wins. Markers are never replaced, so no two
submitters can both find the key free and both win. The job is staged in `markers/unique/pending/`
before its marker is linked and published from there by one rename, so a holder is never a job that
exists nowhere; a submitter that dies in between leaves its job pending, and the daemons publish a
pending job that holds its key once it has waited `lease_seconds` on their own clock (or drop one
that does not), by that same rename: one winner (docs/design.md, U1-U4).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path

from spoold.errors import NameTaken
from spoold.job import JobStatus, decode_document
from spoold.paths import JOB_SUFFIX, READY, Folder, SpoolPaths, is_valid_id
from spoold.spool.fsio import fsync_dir, publish, read_bounded

log = logging.getLogger(__name__)
LIVE_STATES = (*READY, Folder.SCHEDULED, Folder.RUNNING)
TRIES = 100  # a key that changed hands this many times while we looked: the caller says so


def unique_root(paths: SpoolPaths) -> Path:
    return paths.markers / "unique"


def key_folder(paths: SpoolPaths, key: str) -> Path:
    return unique_root(paths) / hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def pending_path(paths: SpoolPaths, job_id: str) -> Path:
    return unique_root(paths) / "pending" / f"{job_id}{JOB_SUFFIX}"


def _generations(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(name[: -len(JOB_SUFFIX)]) for name in names
                  if name.endswith(JOB_SUFFIX) and name[: -len(JOB_SUFFIX)].isdigit())


def _holder_of(folder: Path, generation: int) -> str | None:
    try:
        doc = json.loads((folder / f"{generation}{JOB_SUFFIX}").read_bytes())
    except (OSError, ValueError):
        return None
    job_id = doc.get("id") if isinstance(doc, dict) else None
    return job_id if isinstance(job_id, str) and is_valid_id(job_id) else None


def state_of(paths: SpoolPaths, job_id: str) -> str:
    """"pending", a folder name (where the job is now), or "gone". Pending is looked at first: the job
    leaves it by one rename into its folder, so this order never misses it on its way."""
    if os.path.lexists(pending_path(paths, job_id)):
        return "pending"
    found = paths.find_job(job_id)
    return "gone" if found is None else found.relative_to(paths.root).parts[0]


def holder(paths: SpoolPaths, key: str) -> str | None:
    """The id of the live (or pending) job holding `key`, or None if the key is free."""
    folder = key_folder(paths, key)
    generations = _generations(folder)
    if not generations:
        return None
    held = _holder_of(folder, generations[-1])
    return held if held is not None and _is_live(paths, held) else None


def _is_live(paths: SpoolPaths, job_id: str) -> bool:
    return state_of(paths, job_id) in ("pending", *LIVE_STATES)


def take_key(paths: SpoolPaths, key: str, job_id: str, *, durable: bool) -> str | None:
    """Make `job_id` the holder of `key`: None once it is, or the id of the live job that holds it.
    OSError if the spool cannot be written."""
    folder = key_folder(paths, key)
    folder.mkdir(parents=True, exist_ok=True)
    marker = json.dumps({"key": key, "id": job_id}).encode()
    for _ in range(TRIES):
        generations = _generations(folder)
        top = generations[-1] if generations else -1
        if top >= 0:
            held = _holder_of(folder, top)
            if held == job_id:
                return None
            if held is not None and _is_live(paths, held):
                return held
        try:
            publish(paths.tmp, marker, folder / f"{top + 1}{JOB_SUFFIX}", durable=durable)
        except NameTaken:
            continue  # another submitter linked that number first: look at its job
        for old in generations[:-1]:  # ours and the one before stay; the older ones decide nothing
            with contextlib.suppress(OSError):
                os.unlink(folder / f"{old}{JOB_SUFFIX}")
        return None
    raise OSError(f"unique_key {key!r}: its holder changed {TRIES} times while we looked; try again")


def submit_unique(paths: SpoolPaths, job_id: str, key: str, data: bytes, target: Path, *,
                  durable: bool) -> tuple[str, Path]:
    """Stage, take the key, publish to `target`; returns (the id, its path): ours, or the live holder's
    (then nothing of ours stays)."""
    held = holder(paths, key)  # the common case when it is taken: nothing to write at all
    if held is not None:
        return held, _where(paths, held)
    staged = pending_path(paths, job_id)
    staged.parent.mkdir(parents=True, exist_ok=True)
    publish(paths.tmp, data, staged, durable=durable)
    try:
        held = take_key(paths, key, job_id, durable=durable)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    if held is not None:
        staged.unlink(missing_ok=True)
        return held, _where(paths, held)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, target)  # FileNotFoundError: a daemon published it already (we were frozen that long)
    if durable:
        fsync_dir(target.parent)
    return job_id, target


def _where(paths: SpoolPaths, job_id: str) -> Path:
    if os.path.lexists(pending_path(paths, job_id)):
        return pending_path(paths, job_id)
    return paths.find_job(job_id) or pending_path(paths, job_id)


class PendingJobs:
    """The daemon's side: publish the pending jobs whose submitter died, after `lease_seconds` of our
    clock since we first saw each (a live submitter publishes its own within milliseconds)."""

    def __init__(self, paths: SpoolPaths) -> None:
        self.paths = paths
        self.first_seen: dict[str, float] = {}

    def settle(self, lease_seconds: float, max_bytes: int, *, durable: bool) -> None:
        folder = unique_root(self.paths) / "pending"
        try:
            names = [n for n in os.listdir(folder) if n.endswith(JOB_SUFFIX) and not n.startswith(".")]
        except FileNotFoundError:
            self.first_seen.clear()
            return
        mono = time.monotonic()
        self.first_seen = {n: self.first_seen.get(n, mono) for n in names}
        for name, seen in self.first_seen.items():
            if mono - seen >= lease_seconds:
                with contextlib.suppress(OSError):
                    self._settle_one(folder / name, max_bytes, durable=durable)

    def _settle_one(self, path: Path, max_bytes: int, *, durable: bool) -> None:
        job_id = path.name[: -len(JOB_SUFFIX)]
        try:
            doc = decode_document(read_bounded(path, max_bytes))
        except (ValueError, OSError):
            path.unlink(missing_ok=True)  # not a job a submitter wrote: it can hold no key
            return
        key = doc.get("unique_key")
        folder = key_folder(self.paths, key) if isinstance(key, str) else None
        generations = _generations(folder) if folder is not None else []
        if folder is None or not generations or _holder_of(folder, generations[-1]) != job_id:
            log.info("job=%s: its submitter died before it took its unique_key; dropped", job_id)
            path.unlink(missing_ok=True)
            return
        scheduled = doc.get("status") == JobStatus.SCHEDULED
        priority = doc.get("priority")
        target_folder = Folder.SCHEDULED if scheduled else (priority if priority in READY else Folder.MEDIUM)
        target = self.paths.job_file(target_folder, job_id)
        os.rename(path, target)  # the submitter's own last step: one of us wins
        if durable:
            fsync_dir(target.parent)
        log.info("job=%s: its submitter died before publishing it; published to %s/", job_id, target_folder)
