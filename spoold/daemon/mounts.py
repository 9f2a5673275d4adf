"""Which filesystem holds the spool, from the mount table: file events do not cross hosts (SPEC §11).

inotify reports only what this kernel did, so on a network or FUSE filesystem a job dropped by
another host is never announced; there `observer = "auto"` polls the ready folders instead
(watcher.Poller). Linux only (/proc/self/mountinfo); elsewhere auto means native events.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystems whose files other hosts may write: their events never reach this kernel's inotify.
NETWORK_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "glusterfs", "ceph", "9p", "afs", "lustre",
                           "gpfs", "beegfs", "ocfs2", "gfs2", "fuse"})
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str


def unescape(field: str) -> str:
    r"""The kernel writes space, tab, newline and backslash in mount points as \040, \011, \012, \134."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts in table order; a line that does not parse is skipped (proc(5): fields, " - ", type, source)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
            mounts.append(Mount(unescape(fields[4]), fields[dash + 1]))
        except (ValueError, IndexError):
            continue
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding `path` (absolute, symlinks resolved): the longest mount point that is `path` or one
    of its parents, the last such in the table when several are stacked on one point."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        inside = path == point or path.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best


def is_network(fstype: str) -> bool:
    return fstype in NETWORK_TYPES or fstype.startswith("fuse.")


def choose_observer(setting: str, folders: list[Path]) -> tuple[str, str]:
    """("native" | "polling", why) for the folders to watch, as `observer` asks."""
    if setting != "auto":
        return setting, f'observer = "{setting}"'
    if not sys.platform.startswith("linux"):
        return "native", f"no mount table read on {sys.platform}"
    try:
        mounts = parse_mountinfo(MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape"))
    except OSError as e:
        return "native", f"cannot read {MOUNTINFO}: {e.strerror or e}"
    types = []
    for folder in folders:
        mount = mount_of(os.path.realpath(folder), mounts)
        if mount is not None and is_network(mount.fstype):
            return "polling", f"spool on {mount.fstype}"
        types.append(mount.fstype if mount is not None else "an unknown filesystem")
    return "native", f"spool on {types[0] if types else 'an unknown filesystem'}"
