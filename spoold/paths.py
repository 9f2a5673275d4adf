"""Folder and file names of a spool: the one place that knows the layout of SPEC §2."""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from spoold.names import Folder as Folder  # re-exported: the folder names belong to the layout
from spoold.names import Priority as Priority

READY: tuple[Priority, ...] = tuple(Priority)
JOB_FOLDERS: tuple[Folder, ...] = tuple(folder for folder in Folder if folder != Folder.TMP)
STATE_FOLDERS: tuple[Folder, ...] = tuple(Folder)
# Where a job that is not running can be: the folders a taken id is looked for in, in this order.
RESTING_FOLDERS: tuple[Folder, ...] = (Folder.HIGH, Folder.MEDIUM, Folder.LOW, Folder.SCHEDULED, Folder.DONE,
                                       Folder.FAILED, Folder.REJECTED)
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
JOB_SUFFIX = ".json"
REASON_SUFFIX = ".reason"


def fsync_dir(folder: Path) -> None:
    """Make a name made or renamed in `folder` survive a power loss; Windows cannot open folders, so it
    skips. Here, below every module that moves files, because making the spool's folders needs it too."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_job_id(now: datetime | None = None) -> str:
    """Sortable by submission time, unique by a random tail: 20261128-192615-123456-3f9a1c2b."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    # os.urandom is what `secrets` uses; importing `secrets` would load hashlib, hmac and random into
    # every job child (paths is imported by job, which the child needs).
    return f"{moment:%Y%m%d-%H%M%S-%f}-{os.urandom(4).hex()}"


def is_job_name(name: str) -> bool:
    """True for names the daemon treats as jobs: `*.json`, not hidden (SPEC §2; docs/design.md, P1)."""
    return name.endswith(JOB_SUFFIX) and not name.startswith(".") and len(name) > len(JOB_SUFFIX)


SEIZED_SUFFIX = ".moving"


def seized_name(job_name: str) -> str:
    """The hidden name a node gives its claimed `ID.json` as it starts to move it out (docs/design.md, H3)."""
    return f".{job_name}{SEIZED_SUFFIX}"


def unseized_name(name: str) -> str | None:
    """`ID.json` for a seized name `.ID.json.moving`, else None."""
    if name.startswith(".") and name.endswith(JOB_SUFFIX + SEIZED_SUFFIX):
        plain = name[1: -len(SEIZED_SUFFIX)]
        return plain if is_job_name(plain) else None
    return None


def is_valid_id(job_id: str) -> bool:
    return ID_PATTERN.fullmatch(job_id) is not None


def id_from_name(name: str) -> str | None:
    """The id a file name gives (`foo.json` -> `foo`), or None when it is not a valid id."""
    if not is_job_name(name):
        return None
    job_id = name[: -len(JOB_SUFFIX)]
    return job_id if is_valid_id(job_id) else None


@dataclass(frozen=True)
class SpoolPaths:
    """The folders of one spool; every path the project builds comes from here."""

    root: Path

    @functools.cached_property
    def _folders(self) -> dict[str, Path]:
        return {}

    def folder(self, name: str) -> Path:
        """`root/name`, made once: a claim and a commit ask for their folders every time (a Path costs µs)."""
        path = self._folders.get(name)
        if path is None:
            path = self._folders[name] = self.root / name
        return path

    @property
    def tmp(self) -> Path:
        return self.folder(Folder.TMP)

    @property
    def scheduled(self) -> Path:
        return self.folder(Folder.SCHEDULED)

    @property
    def running(self) -> Path:
        return self.folder(Folder.RUNNING)

    @property
    def done(self) -> Path:
        return self.folder(Folder.DONE)

    @property
    def failed(self) -> Path:
        return self.folder(Folder.FAILED)

    @property
    def rejected(self) -> Path:
        return self.folder(Folder.REJECTED)

    def ready(self, priority: str) -> Path:
        return self.folder(priority)

    @property
    def markers(self) -> Path:
        """Files that can exist once: [schedule] slots, unique_key holders, [concurrency] slots (SPEC §12)."""
        return self.root / "markers"

    def running_of(self, daemon_id: str) -> Path:
        return self.running / daemon_id

    @staticmethod
    def job_name(job_id: str) -> str:
        return job_id + JOB_SUFFIX

    def job_file(self, folder: str, job_id: str) -> Path:
        return self.folder(folder) / (job_id + JOB_SUFFIX)

    def reason_file(self, job_id: str) -> Path:
        return self.rejected / (job_id + REASON_SUFFIX)

    def create(self) -> None:
        """Create every state folder; the daemon does this at start (docs/design.md, T6).

        Daemons of several hosts may make the same folder at once: over a network filesystem the loser's
        mkdir says EEXIST while its own lookup of the name may not see the folder yet (GlusterFS), so an
        EEXIST is looked at again for a moment before it counts as "a file is in the way"."""
        made_root = not self.root.is_dir()
        made = False
        for name in STATE_FOLDERS:
            folder = self.root / name
            for attempt in range(20):
                if folder.is_dir():
                    break
                try:
                    folder.mkdir(parents=True)
                    made = True
                    break
                except FileExistsError:
                    if attempt == 19 and not folder.is_dir():
                        raise
                    time.sleep(0.05)
        if made:  # a folder made is a name in its parent: durable only once the parent is fsynced
            fsync_dir(self.root)
            if made_root:
                fsync_dir(self.root.parent)

    def find_job(self, job_id: str, *, skip_node: Path | None = None,
                 exists: Callable[[Path], bool] = os.path.lexists) -> Path | None:
        """Where the job with this id is now: a look per state folder, then per node folder in running/
        (its claimed name or the hidden name of a commit under way), then the state folders again.

        The job may move while we look; every move links its new name before it drops the old one, or is
        one rename, so states, then running, then states again cannot miss it (docs/design.md, P12).
        done/ and failed/ are flat (README, Retention), so they are never listed: this runs at every
        chain hand-off, and listing a large done/ would make that cost grow with the archive.
        `skip_node`: a node folder not to look in; `exists`: how a name is checked.
        """
        name = job_id + JOB_SUFFIX
        states = [self.root / folder / name for folder in RESTING_FOLDERS]
        found = next((path for path in states if exists(path)), None)
        if found is not None:
            return found
        try:  # listed only now: a job missing above is in a node folder that exists by now
            nodes = [Path(entry.path) for entry in os.scandir(self.running) if entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            nodes = []
        running = [node / each for node in nodes if node != skip_node for each in (name, seized_name(name))]
        return next((path for path in (*running, *states) if exists(path)), None)
