"""A daemon's identity in the spool: its own running/DAEMON/ folder and the filelock it holds for life.

A lock that no live process holds means the owner died (SPEC §2). The folder is made under a hidden
name and renamed into place with the lock already held, so no one ever sees it unlocked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from spoold.paths import Folder, SpoolPaths, is_job_name, unseized_name
from spoold.spool.blanks import remove_left
from spoold.spool.fsio import fsync_dir
from spoold.spool.lease import Heartbeat, write_heartbeat

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
INFO_NAME = ".info"
# Folder-name prefixes of the nodes that are not daemons. The dot never comes out of a host name
# (see _host), so a host called "now-box" cannot pass for a `--now` run.
OPERATOR_KIND = "cli."
NOW_KIND = "now."
CANCEL_SUFFIX = ".cancel"


def scratch_folder(node_id: str) -> Path:
    """Where a node's job children write their spec, output and result: the system temp folder, not the
    spool, so a full spool never fails a job. Named after the node, so whoever recovers a dead node on
    this host removes its scratch too."""
    return Path(tempfile.gettempdir()) / f"spoold-{node_id}"


def cancel_marker(folder: Path, job_id: str) -> Path:
    """`.ID.cancel` in a daemon's folder asks it to stop that job's child (`spoold cancel`)."""
    return folder / f".{job_id}{CANCEL_SUFFIX}"


def request_cancel(folder: Path, job_id: str, by: str) -> Path:
    """Leave the marker, whole: written under another name, then renamed, so its reader never sees it empty.
    FileNotFoundError if the folder is gone (its daemon left)."""
    marker = cancel_marker(folder, job_id)
    part = marker.with_name(marker.name + ".part")
    part.write_text(by[:200], encoding="utf-8")
    os.replace(part, marker)
    return marker


def cancelled_by(folder: Path, job_id: str) -> str | None:
    """Who asked for the cancel, as its marker says (None for a marker made by hand, or gone)."""
    try:
        text = cancel_marker(folder, job_id).read_text(encoding="utf-8", errors="replace")[:200].strip()
    except OSError:
        return None
    return re.sub(r"[^A-Za-z0-9_.:@\[\]-]", "-", text) or None


def is_cancel_marker(name: str) -> bool:
    return name.startswith(".") and name.endswith(CANCEL_SUFFIX)


def cancel_requests(folder: Path) -> list[str]:
    """The ids with a cancel marker in `folder`."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [name[1: -len(CANCEL_SUFFIX)] for name in names if is_cancel_marker(name)]


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:40] or "host"


def this_host() -> str:
    """The host part of this machine's node ids."""
    return _host()


def host_of(node_id: str) -> str:
    """The host a node id names: `[KIND.]HOST-PID-XXXXXX` (SPEC §11: daemon ids start with the host name)."""
    bare = node_id.split(".", 1)[1] if "." in node_id else node_id
    return bare.rsplit("-", 2)[0]


def spool_lock(path: Path) -> FileLock:
    """A non-blocking lock on a lock file of the spool, held by this process (not its children)."""
    # preserve_lock_file: deleting a lock path that others may hold open gives two holders (docs/design.md, R1).
    return FileLock(path, timeout=0, thread_local=False, preserve_lock_file=True)


@dataclass
class Node:
    """One daemon (or one `--now` run, or one operator command): id, folder, the lock held while it
    lives, and its lease (lease.py)."""

    id: str
    folder: Path
    lock: FileLock
    heartbeat: Heartbeat

    def job_files(self) -> list[Path]:
        """Its claimed jobs, those it was moving out (seized) included."""
        return [p for p in self.folder.iterdir() if is_job_name(p.name) or unseized_name(p.name)]

    def close(self) -> None:
        """Leave the spool: remove the folder if no job is left in it, then release the lock.

        A probe of our lock (`spoold status`, another daemon's recovery) may create the lock file again
        between our unlink and our rmdir, and a network filesystem may list a name removed a moment ago,
        so what is left that is not a job is removed a few times over, with a short wait in between
        (about a second in all) that lets a prober let go.
        """
        for attempt in range(CLOSE_ATTEMPTS):
            if attempt:
                time.sleep(0.05)
            try:
                if self.job_files():
                    break
                # The lock file last: a prober that makes it again finds our .info gone, and removes it.
                for name in sorted(os.listdir(self.folder), key=lambda name: name == LOCK_NAME):
                    if name.startswith("."):
                        (self.folder / name).unlink(missing_ok=True)
                self.folder.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as e:
                log.debug("node=%s cannot remove %s yet: %s", self.id, self.folder, e)
        self.heartbeat.stop()
        try:
            self.lock.release(force=True)
        except OSError as e:  # EBADFD: a lock the file server dropped while we were cut off (strict-locks)
            log.warning("node=%s: its lock was lost already (%s)", self.id, e)


CLOSE_ATTEMPTS = 20


def open_node(paths: SpoolPaths, *, workers: int, kind: str = "", heartbeat_seconds: float = 5.0,
              lease_seconds: float = 30.0) -> Node:
    """Create running/HOST-PID-XXXX/, locked and with its first heartbeat before it becomes visible, with a
    .info for `status`; its lease is renewed from then on (lease.py)."""
    node_id = f"{kind}{_host()}-{os.getpid()}-{secrets.token_hex(3)}"
    paths.running.mkdir(parents=True, exist_ok=True)
    staging = paths.running / f".new-{node_id}"
    staging.mkdir()
    lock = spool_lock(staging / LOCK_NAME)
    lock.acquire()
    info = {"id": node_id, "kind": kind.rstrip(".") or "daemon", "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(), "workers": workers}
    (staging / INFO_NAME).write_text(json.dumps(info) + "\n", encoding="utf-8")
    write_heartbeat(staging, 0)
    folder = paths.running_of(node_id)
    os.rename(staging, folder)
    try:
        fsync_dir(paths.running)  # our claims live in it: a power cut must not take the folder away (F2)
    except OSError as e:  # a mount cut off just now: the folder is ours all the same, as before the fsync
        log.warning("node=%s: cannot fsync %s (%s); a power cut now could take this folder", node_id,
                    paths.running, e)
    heartbeat = Heartbeat(folder, heartbeat_seconds=heartbeat_seconds, lease_seconds=lease_seconds)
    heartbeat.start()
    return Node(node_id, folder, lock, heartbeat)


def read_info(folder: Path) -> dict[str, object]:
    try:
        value = json.loads((folder / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"id": folder.name}
    return value if isinstance(value, dict) else {"id": folder.name}


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_dev, info.st_ino, info.st_ctime_ns


def try_lock_dead(folder: Path) -> FileLock | None:
    """The lock of a dead daemon's folder, now held by us; None while its owner lives.

    A folder whose lock file is gone belongs to a daemon that has left (or is leaving: it removes its
    `.info`, then its lock file, then its folder), and its lock is not made again: an unacquired lock is
    returned. If the owner removed the file between our look and our open, the open made a new one, which
    would keep the leaving owner's folder from going (on another host, where the lease decides, nobody
    would remove it), and if the folder was gone already, filelock made it again: both are removed again.
    A new file is known by its identity, or, since a freed inode number is soon given out again, by the
    owner's `.info` being gone (the owner removes it before its lock file)."""
    path = folder / LOCK_NAME
    try:
        before = os.stat(path)
    except OSError:
        return spool_lock(path) if folder.is_dir() else None
    lock = spool_lock(path)
    try:
        lock.acquire()
    except Timeout:
        return None
    except OSError as e:
        log.warning("cannot probe the lock of %s: %s", folder, e)
        return None
    try:
        now: os.stat_result | None = os.stat(path)
    except OSError:
        now = None
    if now is None or _identity(now) != _identity(before) or not (folder / INFO_NAME).exists():  # the owner left
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):  # filelock makes the folder too if it was gone: an empty one goes
            folder.rmdir()
        lock.release(force=True)
        return spool_lock(path) if folder.is_dir() else None
    return lock


def is_alive(folder: Path) -> bool:
    lock = try_lock_dead(folder)
    if lock is None:
        return folder.is_dir()
    lock.release(force=True)
    return False


def other_nodes(paths: SpoolPaths, own_id: str) -> list[Path]:
    """Every daemon folder in running/ except ours and folders still being made."""
    try:
        entries = list(os.scandir(paths.running))
    except FileNotFoundError:
        return []
    return [Path(e.path) for e in entries
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".") and e.name != own_id]


def remove_dead_folder(folder: Path, lock: FileLock) -> None:
    """Drop an emptied dead daemon's folder (and its scratch, and its blanks in tmp/); its lock goes last,
    with the folder."""
    shutil.rmtree(scratch_folder(folder.name), ignore_errors=True)
    remove_left(folder.parent.parent / Folder.TMP, folder.name)  # running/NODE -> the spool's tmp/
    try:
        if not any(is_job_name(name) or unseized_name(name) for name in os.listdir(folder)):
            shutil.rmtree(folder)
    except OSError as e:
        log.warning("cannot remove dead daemon folder %s: %s", folder, e)
    finally:
        lock.release(force=True)
