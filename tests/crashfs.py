"""crashfs: an in-memory FUSE filesystem that can lose power (issue 14, "Durability").

A spool on ext4 survives a power cut only as far as its fsyncs reach (README, "Guarantees"); killing
processes never tests that, since the kernel keeps every write. This filesystem keeps two versions of
everything, what is live and what is durable, and a power cut throws the live one away.

The model, exactly:

- File data survives a cut only as of the file's last fsync or fdatasync: a file never fsynced comes
  back empty if its entry survives (truncates and writes since the last fsync are undone alike).
- A directory entry (create, link, unlink, mkdir, rmdir, symlink, mknod) survives only once its
  directory was fsynced (fsyncdir): fsync of a folder makes its whole live entry map durable.
- A rename (and a RENAME_EXCHANGE) is atomic across a cut but ordered with nothing else: it becomes
  durable as a whole, the removal from the source folder and the entry in the target, when EITHER
  folder is fsynced afterwards; until then a cut undoes it entirely. An fsync of a folder makes durable
  every not-yet-durable rename that touched it, in the order they happened, and with each one the
  earlier not-yet-durable renames of the same file (a file's moves are not reordered). This is what a
  journaling filesystem gives, and what makes spoold's known gap visible: the claim, a rename
  `high|medium|low/ID.json -> running/DAEMON/ID.json`, is never fsynced, so after a cut the ready
  copy can come back though the job's result was published, fsynced, in done/ later.
- Attributes (mode, owner, times) are not versioned: a surviving file keeps its last ones, and its
  size is that of its durable data. A surviving directory's st_nlink and a file's link count are
  recounted from the entries that survived. Inode numbers are stable across cuts and never reused.
- Nothing is freed before a cut: an unlinked file may still be needed by its durable entry. A cut keeps
  only what the durable entries reach from the root.

Kernel caching is off (entry, attribute and negative timeouts 0, direct_io on every open) so nothing
stale is served; locks (flock, fcntl) are left to the kernel, which emulates them on the mount, and
inotify sees what is done through it. One lock guards the whole state.

A power cut, from a test (`CrashFS.cut_power()`): every process using the mount is SIGKILLed first
(the caller kills its own process trees before that), then the filesystem process, asked over its
control socket, freezes (every later call fails with EIO), writes what is durable to a state file and
is unmounted; a fresh process loads that file and mounts it again at the same path. The fs process
cannot use Python signal handlers (its main thread sits in the C fuse loop), so a thread serves the
control socket, and another one unmounts and exits once the process that mounted it is gone.

    python tests/crashfs.py cleanup    # unmount and end what killed runs left behind
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import logging
import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(os.environ.get("SPOOLD_CRASHFS_ROOT", "/run/spoold-crashfs"))  # one folder per mount: state, socket
FSTYPE = "fuse.crashfs"
ROOT_INO = 1
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
STATE_VERSION = 1
START_TIMEOUT = 20.0


# == the model =======================================================================================


@dataclass(slots=True, eq=False)
class Node:
    """One inode: live and durable data (files), live and durable entries (folders)."""

    ino: int
    mode: int  # with the S_IFMT bits
    uid: int
    gid: int
    atime: int  # ns
    mtime: int
    ctime: int
    nlink: int = 0
    data: bytearray = field(default_factory=bytearray)
    durable_data: bytes = b""
    target: str = ""  # a symlink's contents
    entries: dict[str, int] = field(default_factory=dict)
    durable_entries: dict[str, int] = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(slots=True)
class Rename:
    """A rename not durable yet: `moves` are (from folder, from name, to folder, to name, inode)."""

    moves: list[tuple[int, str, int, str, int]]

    @property
    def folders(self) -> set[int]:
        return {m[0] for m in self.moves} | {m[2] for m in self.moves}

    @property
    def inodes(self) -> set[int]:
        return {m[4] for m in self.moves}


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _now() -> int:
    return time.time_ns()


class State:
    """The whole filesystem, without FUSE: every method is called with `lock` held (see Ops)."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.next_ino = ROOT_INO + 1
        self.pending: list[Rename] = []
        self.handles: dict[int, tuple[int, int]] = {}  # fh -> (inode, open flags)
        self.next_fh = 1
        now = _now()
        self.nodes[ROOT_INO] = Node(ROOT_INO, stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), now, now, now, 2)

    # -- looking up -----------------------------------------------------------------------------
    def walk(self, path: str) -> Node:
        node = self.nodes[ROOT_INO]
        for part in path.split("/"):
            if not part:
                continue
            if not node.is_dir:
                raise _err(errno.ENOTDIR)
            ino = node.entries.get(part)
            if ino is None:
                raise _err(errno.ENOENT)
            node = self.nodes[ino]
        return node

    def parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        folder = self.walk(head)
        if not folder.is_dir:
            raise _err(errno.ENOTDIR)
        if not name:
            raise _err(errno.EINVAL)
        if len(name.encode("utf-8", "surrogateescape")) > 255:
            raise _err(errno.ENAMETOOLONG)
        return folder, name

    def node(self, path: str | None, fh: int | None) -> Node:
        """The node an fh (if one we gave) or else a path names; an unlinked open file has only its fh."""
        if fh is not None and fh in self.handles:
            return self.nodes[self.handles[fh][0]]
        if path is None:
            raise _err(errno.EBADF)
        return self.walk(path)

    # -- making and linking ---------------------------------------------------------------------
    def new_node(self, mode: int, uid: int, gid: int) -> Node:
        now = _now()
        node = Node(self.next_ino, mode, uid, gid, now, now, now)
        self.next_ino += 1
        self.nodes[node.ino] = node
        return node

    def add_entry(self, folder: Node, name: str, node: Node) -> None:
        folder.entries[name] = node.ino
        node.nlink += 1
        if node.is_dir:
            node.nlink += 1  # its "."
            folder.nlink += 1  # its ".."
        folder.mtime = folder.ctime = node.ctime = _now()

    def drop_entry(self, folder: Node, name: str) -> Node:
        node = self.nodes[folder.entries.pop(name)]
        node.nlink -= 1
        if node.is_dir:
            node.nlink -= 1
            folder.nlink -= 1
        folder.mtime = folder.ctime = node.ctime = _now()
        return node

    def open_handle(self, node: Node, flags: int) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = (node.ino, flags)
        return fh

    # -- renames ----------------------------------------------------------------------------------
    def rename(self, old: str, new: str, flags: int) -> None:
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise _err(errno.EINVAL)
        src_dir, src_name = self.parent(old)
        dst_dir, dst_name = self.parent(new)
        if src_name not in src_dir.entries:
            raise _err(errno.ENOENT)
        node = self.nodes[src_dir.entries[src_name]]
        if node.is_dir and (new + "/").startswith(old.rstrip("/") + "/"):
            raise _err(errno.EINVAL)  # into itself
        other_ino = dst_dir.entries.get(dst_name)
        if flags & RENAME_EXCHANGE:
            if other_ino is None:
                raise _err(errno.ENOENT)
            if self.nodes[other_ino].is_dir and (old + "/").startswith(new.rstrip("/") + "/"):
                raise _err(errno.EINVAL)
            self._exchange(src_dir, src_name, dst_dir, dst_name)
            return
        if other_ino is not None:
            if flags & RENAME_NOREPLACE:
                raise _err(errno.EEXIST)
            if other_ino == node.ino:
                return  # two links to one file: POSIX says rename does nothing
            self._may_replace(node, self.nodes[other_ino])
            self.drop_entry(dst_dir, dst_name)
        self.drop_entry(src_dir, src_name)
        self.add_entry(dst_dir, dst_name, node)
        self.pending.append(Rename([(src_dir.ino, src_name, dst_dir.ino, dst_name, node.ino)]))

    @staticmethod
    def _may_replace(node: Node, other: Node) -> None:
        if node.is_dir and not other.is_dir:
            raise _err(errno.ENOTDIR)
        if not node.is_dir and other.is_dir:
            raise _err(errno.EISDIR)
        if other.is_dir and other.entries:
            raise _err(errno.ENOTEMPTY)

    def _exchange(self, src_dir: Node, src_name: str, dst_dir: Node, dst_name: str) -> None:
        """RENAME_EXCHANGE: both names swap their files, as one rename (both moves durable together)."""
        node = self.drop_entry(src_dir, src_name)
        other = self.drop_entry(dst_dir, dst_name)
        self.add_entry(dst_dir, dst_name, node)
        self.add_entry(src_dir, src_name, other)
        self.pending.append(Rename([(src_dir.ino, src_name, dst_dir.ino, dst_name, node.ino),
                                    (dst_dir.ino, dst_name, src_dir.ino, src_name, other.ino)]))

    # -- durability -------------------------------------------------------------------------------
    def fsync_file(self, node: Node) -> None:
        node.durable_data = bytes(node.data)

    def fsync_dir(self, folder: Node) -> None:
        """The folder's live entries become durable, with every pending rename that touched it (and the
        earlier pending renames of the same files), applied in order to the other folders' durable maps."""
        chosen = {i for i, r in enumerate(self.pending) if folder.ino in r.folders}
        inodes: set[int] = set()
        for i in range(len(self.pending) - 1, -1, -1):
            if i in chosen:
                inodes |= self.pending[i].inodes
            elif self.pending[i].inodes & inodes:
                chosen.add(i)
                inodes |= self.pending[i].inodes
        for i in sorted(chosen):
            self._apply(self.pending[i])
        self.pending = [r for i, r in enumerate(self.pending) if i not in chosen]
        folder.durable_entries = dict(folder.entries)

    def _apply(self, rename: Rename) -> None:
        """A rename made durable: its removals, then its entries, in the durable maps."""
        for src, src_name, _, _, ino in rename.moves:
            durable = self.nodes[src].durable_entries
            if durable.get(src_name) == ino:
                del durable[src_name]
        for _, _, dst, dst_name, ino in rename.moves:
            self.nodes[dst].durable_entries[dst_name] = ino

    def durable_image(self) -> dict[int, Node]:
        """What a cut leaves: the nodes the durable entries reach from the root, with their durable data
        and entries (as live ones too) and link counts recounted. A folder reached twice keeps its first
        entry (the model never makes that, but a tree must stay a tree)."""
        image: dict[int, Node] = {}
        queue = [ROOT_INO]
        seen = {ROOT_INO}
        while queue:
            old = self.nodes[queue.pop(0)]
            copy = Node(old.ino, old.mode, old.uid, old.gid, old.atime, old.mtime, old.ctime,
                        data=bytearray(old.durable_data), durable_data=old.durable_data, target=old.target)
            image[old.ino] = copy
            if not old.is_dir:
                continue
            for name, ino in sorted(old.durable_entries.items()):
                if ino in seen:
                    if self.nodes[ino].is_dir:
                        continue  # a second entry of a folder
                else:
                    seen.add(ino)
                    queue.append(ino)
                copy.entries[name] = ino
            copy.durable_entries = dict(copy.entries)
        for node in image.values():
            node.nlink = 2 if node.is_dir else 0
        image[ROOT_INO].nlink = 2
        for folder in image.values():
            for ino in folder.entries.values():
                child = image[ino]
                if child.is_dir:
                    folder.nlink += 1
                else:
                    child.nlink += 1
        return image

    def differences(self) -> dict[str, int]:
        """What a cut now would drop: entries and files' data that are live but not durable."""
        entries = data = 0
        for node in self.nodes.values():
            if node.is_dir and node.nlink > 0:
                entries += len(set(node.entries.items()) ^ set(node.durable_entries.items()))
            elif not node.is_dir and node.nlink > 0 and bytes(node.data) != node.durable_data:
                data += 1
        return {"entries_not_durable": entries, "files_not_durable": data, "renames_not_durable": len(self.pending)}

    # -- the state file ---------------------------------------------------------------------------
    def save(self, path: Path) -> dict[str, int]:
        image = self.durable_image()
        nodes = {ino: (n.mode, n.uid, n.gid, n.atime, n.mtime, n.ctime, n.durable_data, n.target, n.entries)
                 for ino, n in image.items()}
        part = path.with_name(path.name + ".part")
        with open(part, "wb") as handle:
            pickle.dump({"version": STATE_VERSION, "next_ino": self.next_ino, "nodes": nodes}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, path)
        return {"nodes_kept": len(image), "nodes_dropped": len(self.nodes) - len(image)}

    @classmethod
    def load(cls, path: Path) -> State:
        with open(path, "rb") as handle:
            saved = pickle.load(handle)
        if saved.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: state version {saved.get('version')}, expected {STATE_VERSION}")
        state = cls()
        state.nodes = {}
        for ino, (mode, uid, gid, atime, mtime, ctime, data, target, entries) in saved["nodes"].items():
            state.nodes[ino] = Node(ino, mode, uid, gid, atime, mtime, ctime, data=bytearray(data),
                                    durable_data=data, target=target, entries=dict(entries),
                                    durable_entries=dict(entries))
        state.next_ino = saved["next_ino"]
        image = state.durable_image()  # recounts the links
        for ino, node in image.items():
            state.nodes[ino].nlink = node.nlink
        return state


# == the FUSE operations ==============================================================================


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run an operation under the one lock, and refuse it with EIO once the power is cut."""

    @functools.wraps(method)
    def run(self: Ops, *args: Any) -> Any:
        with self.lock:
            self.calls[method.__name__] = self.calls.get(method.__name__, 0) + 1
            if self.frozen:
                raise _err(errno.EIO)
            return method(self, *args)

    return run


class Ops:
    """mfusepy's high-level operations over a State (paths in, fh numbers of our own)."""

    use_ns = True  # times as int nanoseconds, in getattr and utimens

    def __init__(self, state: State, context: Callable[[], tuple[int, int, int]]) -> None:
        self.state = state
        self.context = context  # (uid, gid, pid) of the caller
        self.lock = threading.Lock()
        self.frozen = False
        self.calls: dict[str, int] = {}
        self.config: dict[str, float] = {}
        self.ready = threading.Event()

    # -- set-up -----------------------------------------------------------------------------------
    def init_with_config(self, conn: Any, config: Any) -> None:
        """No kernel caching at all; our inode numbers; unlinked open files removed at once (else libfuse
        renames them to .fuse_hiddenN, which keeps a folder from being removed)."""
        if config is not None:
            config.entry_timeout = 0.0
            config.attr_timeout = 0.0
            config.negative_timeout = 0.0
            config.use_ino = 1
            config.readdir_ino = 1
            config.hard_remove = 1
            config.direct_io = 1
            config.kernel_cache = 0
            config.auto_cache = 0
            self.config = {key: float(getattr(config, key)) for key in (
                "entry_timeout", "attr_timeout", "negative_timeout", "use_ino", "hard_remove", "direct_io",
                "kernel_cache", "auto_cache")}
        self.ready.set()

    def destroy(self, path: str) -> None:
        pass

    # -- attributes -------------------------------------------------------------------------------
    @staticmethod
    def _attrs(node: Node) -> dict[str, Any]:
        size = len(node.target.encode("utf-8", "surrogateescape")) if stat.S_ISLNK(node.mode) else len(node.data)
        return {"st_ino": node.ino, "st_mode": node.mode, "st_nlink": node.nlink, "st_uid": node.uid,
                "st_gid": node.gid, "st_size": size, "st_blocks": (size + 511) // 512, "st_blksize": 4096,
                "st_atime": node.atime, "st_mtime": node.mtime, "st_ctime": node.ctime}

    @_locked
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        return self._attrs(self.state.node(path, fh))

    @_locked
    def access(self, path: str, amode: int) -> int:
        self.state.walk(path)
        return 0

    @_locked
    def chmod(self, path: str | None, mode: int) -> int:
        node = self.state.node(path, None)
        node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(mode)
        node.ctime = _now()
        return 0

    @_locked
    def chown(self, path: str | None, uid: int, gid: int) -> int:
        node = self.state.node(path, None)
        if uid != -1:
            node.uid = uid
        if gid != -1:
            node.gid = gid
        node.ctime = _now()
        return 0

    @_locked
    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        node = self.state.node(path, None)
        now = _now()
        atime, mtime = times if times is not None else (UTIME_NOW, UTIME_NOW)
        if atime != UTIME_OMIT:
            node.atime = now if atime == UTIME_NOW else int(atime)
        if mtime != UTIME_OMIT:
            node.mtime = now if mtime == UTIME_NOW else int(mtime)
        node.ctime = now
        return 0

    @_locked
    def statfs(self, path: str) -> dict[str, int]:
        used = sum(len(n.data) for n in self.state.nodes.values()) // 4096
        total = 1 << 22  # 16 GiB of 4 KiB blocks
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": total, "f_bfree": total - used,
                "f_bavail": total - used, "f_files": 1 << 24, "f_ffree": (1 << 24) - len(self.state.nodes),
                "f_favail": (1 << 24) - len(self.state.nodes), "f_namemax": 255}

    # -- folders ----------------------------------------------------------------------------------
    @_locked
    def mkdir(self, path: str, mode: int) -> int:
        folder, name = self.state.parent(path)
        if name in folder.entries:
            raise _err(errno.EEXIST)
        uid, gid, _ = self.context()
        self.state.add_entry(folder, name, self.state.new_node(stat.S_IFDIR | stat.S_IMODE(mode), uid, gid))
        return 0

    @_locked
    def rmdir(self, path: str) -> int:
        folder, name = self.state.parent(path)
        ino = folder.entries.get(name)
        if ino is None:
            raise _err(errno.ENOENT)
        node = self.state.nodes[ino]
        if not node.is_dir:
            raise _err(errno.ENOTDIR)
        if node.entries:
            raise _err(errno.ENOTEMPTY)
        self.state.drop_entry(folder, name)
        return 0

    @_locked
    def opendir(self, path: str) -> int:
        node = self.state.walk(path)
        if not node.is_dir:
            raise _err(errno.ENOTDIR)
        return self.state.open_handle(node, os.O_RDONLY)

    @_locked
    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        node = self.state.node(path, fh)
        if not node.is_dir:
            raise _err(errno.ENOTDIR)
        items = [(".", {"st_mode": node.mode, "st_ino": node.ino}, 0),
                 ("..", {"st_mode": stat.S_IFDIR}, 0)]
        for name, ino in node.entries.items():
            child = self.state.nodes[ino]
            items.append((name, {"st_mode": child.mode, "st_ino": ino}, 0))
        return items

    @_locked
    def releasedir(self, path: str | None, fh: int) -> int:
        self.state.handles.pop(fh, None)
        return 0

    @_locked
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        node = self.state.node(path, fh)
        if not node.is_dir:
            raise _err(errno.ENOTDIR)
        self.state.fsync_dir(node)
        return 0

    # -- names ------------------------------------------------------------------------------------
    @_locked
    def link(self, target: str, source: str) -> int:
        """`target` becomes a new name of the file `source` (mfusepy's argument order)."""
        node = self.state.walk(source)
        if node.is_dir:
            raise _err(errno.EPERM)
        folder, name = self.state.parent(target)
        if name in folder.entries:
            raise _err(errno.EEXIST)
        self.state.add_entry(folder, name, node)
        return 0

    @_locked
    def unlink(self, path: str) -> int:
        folder, name = self.state.parent(path)
        ino = folder.entries.get(name)
        if ino is None:
            raise _err(errno.ENOENT)
        if self.state.nodes[ino].is_dir:
            raise _err(errno.EISDIR)
        self.state.drop_entry(folder, name)
        return 0

    @_locked
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        self.state.rename(old, new, flags)
        return 0

    @_locked
    def symlink(self, path: str, contents: str) -> int:
        """The symlink `path` -> `contents` (mfusepy's argument order)."""
        folder, name = self.state.parent(path)
        if name in folder.entries:
            raise _err(errno.EEXIST)
        uid, gid, _ = self.context()
        node = self.state.new_node(stat.S_IFLNK | 0o777, uid, gid)
        node.target = contents
        self.state.add_entry(folder, name, node)
        return 0

    @_locked
    def readlink(self, path: str) -> str:
        node = self.state.walk(path)
        if not stat.S_ISLNK(node.mode):
            raise _err(errno.EINVAL)
        return node.target

    @_locked
    def mknod(self, path: str, mode: int, dev: int) -> int:
        if stat.S_IFMT(mode) not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK):
            raise _err(errno.EPERM)  # no device files
        folder, name = self.state.parent(path)
        if name in folder.entries:
            raise _err(errno.EEXIST)
        uid, gid, _ = self.context()
        self.state.add_entry(folder, name, self.state.new_node(mode, uid, gid))
        return 0

    # -- files --------------------------------------------------------------------------------------
    @_locked
    def create(self, path: str, mode: int, flags: int) -> int:
        folder, name = self.state.parent(path)
        ino = folder.entries.get(name)
        if ino is not None:
            if flags & os.O_EXCL:
                raise _err(errno.EEXIST)
            return self._open(self.state.nodes[ino], flags)
        uid, gid, _ = self.context()
        node = self.state.new_node(stat.S_IFREG | stat.S_IMODE(mode), uid, gid)
        self.state.add_entry(folder, name, node)
        return self.state.open_handle(node, flags)

    @_locked
    def open(self, path: str, flags: int) -> int:
        return self._open(self.state.walk(path), flags)

    def _open(self, node: Node, flags: int) -> int:
        if node.is_dir and flags & os.O_ACCMODE != os.O_RDONLY:
            raise _err(errno.EISDIR)
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY and node.data:
            node.data = bytearray()
            node.mtime = node.ctime = _now()
        return self.state.open_handle(node, flags)

    @_locked
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        node = self.state.node(path, fh)
        return bytes(node.data[offset:offset + size])

    @_locked
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        node = self.state.node(path, fh)
        if fh in self.state.handles and self.state.handles[fh][1] & os.O_APPEND:
            offset = len(node.data)  # the kernel's idea of the size may be old (no attribute cache)
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset:offset + len(data)] = data
        node.mtime = node.ctime = _now()
        return len(data)

    @_locked
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        node = self.state.node(path, fh)
        if node.is_dir:
            raise _err(errno.EISDIR)
        if length < len(node.data):
            del node.data[length:]
        else:
            node.data.extend(bytes(length - len(node.data)))
        node.mtime = node.ctime = _now()
        return 0

    @_locked
    def flush(self, path: str | None, fh: int) -> int:
        return 0

    @_locked
    def release(self, path: str | None, fh: int) -> int:
        self.state.handles.pop(fh, None)
        return 0

    @_locked
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        node = self.state.node(path, fh)
        if node.is_dir:
            self.state.fsync_dir(node)
        else:
            self.state.fsync_file(node)
        return 0

    # -- control ------------------------------------------------------------------------------------
    def cut(self, state_file: Path) -> dict[str, Any]:
        """Freeze (every later call fails with EIO) and write the durable image; what it dropped."""
        with self.lock:
            self.frozen = True
            dropped = self.state.differences()
            return dict(self.state.save(state_file), **dropped)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"calls": dict(self.calls), "nodes": len(self.state.nodes), "config": self.config,
                    "ready": self.ready.is_set(), **self.state.differences()}


# == the fs process ====================================================================================


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot: with its pid, it names one process for life."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(owner: str) -> bool:
    pid, _, started = owner.partition(" ")
    return pid.isdigit() and _start_time(int(pid)) == started


def _me() -> str:
    return f"{os.getpid()} {_start_time(os.getpid())}"


def _serve_control(ops: Ops, sock: socket.socket, state_file: Path) -> None:
    """One JSON line in, one JSON line out: {"op": "ping" | "stats" | "cut"}."""
    while True:
        conn, _ = sock.accept()
        with conn, conn.makefile("rwb") as stream:
            try:
                request = json.loads(stream.readline() or b"{}")
                op = request.get("op")
                if op == "ping":
                    reply: dict[str, Any] = {"ok": True, "pid": os.getpid(), "ready": ops.ready.is_set()}
                elif op == "stats":
                    reply = {"ok": True, **ops.stats()}
                elif op == "cut":
                    reply = {"ok": True, **ops.cut(state_file)}
                else:
                    reply = {"ok": False, "error": f"unknown op {op!r}"}
            except Exception as e:  # the reply says what went wrong; the thread serves on
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            stream.write(json.dumps(reply).encode() + b"\n")
            stream.flush()


def _watch_owner(owner: str, mountpoint: str) -> None:
    """Once the process that mounted us is gone, unmount (lazily: a process may still be inside) and exit."""
    while _alive(owner):
        time.sleep(0.5)
    subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, timeout=30)
    os._exit(0)


def serve(mountpoint: str, state_file: Path, control: Path, owner: str, load: bool) -> None:
    """The fs process: load the state (after a cut), serve the control socket, run the fuse loop."""
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # mfusepy would take a libfuse 2 first
    import mfusepy  # type: ignore[import-untyped]  # no py.typed; imported here: the test side never loads libfuse

    if mfusepy.fuse_version_major != 3:
        raise SystemExit(f"crashfs needs libfuse 3, mfusepy loaded {mfusepy.fuse_version_major}."
                         f"{mfusepy.fuse_version_minor}")

    class Fuse(mfusepy.FUSE):  # type: ignore[misc]  # mfusepy is untyped
        """mfusepy 3.1 drops rename's flags (a RENAME_NOREPLACE would replace): pass them on."""

        def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
            result: int = self.operations.rename(old.decode(self.encoding, self.errors),
                                                 new.decode(self.encoding, self.errors), flags)
            return result

    state = State.load(state_file) if load else State()
    ops = Ops(state, mfusepy.fuse_get_context)
    control.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(control))
    sock.listen(8)
    threading.Thread(target=_serve_control, args=(ops, sock, state_file), daemon=True, name="control").start()
    threading.Thread(target=_watch_owner, args=(owner, mountpoint), daemon=True, name="owner").start()
    Fuse(ops, mountpoint, foreground=True, fsname="crashfs", subtype="crashfs", default_permissions=True,
         use_ino=True, hard_remove=True, direct_io=True, entry_timeout=0, attr_timeout=0, negative_timeout=0)


# == the test side ======================================================================================


class CrashFSError(RuntimeError):
    """The filesystem cannot be mounted, cut or unmounted here; the message says why."""


def check_machine() -> None:
    """CrashFSError naming everything missing for a FUSE mount of our own."""
    import ctypes.util
    import importlib.util

    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    if not Path("/dev/fuse").exists():
        problems.append("no /dev/fuse (load the fuse module, or give the container --device /dev/fuse)")
    if shutil.which("fusermount3") is None:
        problems.append("no fusermount3 (apt-get install fuse3)")
    if ctypes.util.find_library("fuse3") is None:
        problems.append("no libfuse3 (apt-get install fuse3)")
    if importlib.util.find_spec("mfusepy") is None:
        problems.append("no mfusepy (pip install -e '.[test]')")
    if problems:
        raise CrashFSError("crashfs cannot run on this machine: " + "; ".join(problems))


def _unescape(field_: str) -> str:
    return field_.encode().decode("unicode_escape")


def mounts() -> dict[str, str]:
    """Mount point -> filesystem type, from /proc/self/mountinfo (no stat: a hung mount cannot block us)."""
    found = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split(" ")
        if len(fields) > 4 and right:
            found[_unescape(fields[4])] = right.split(" ")[0]
    return found


def _links_into(pid: int, mountpoint: str) -> bool:
    base = Path(f"/proc/{pid}")
    prefix = mountpoint.rstrip("/") + "/"
    candidates = [base / "cwd", base / "root"]
    with contextlib.suppress(OSError):
        candidates += list((base / "fd").iterdir())
    for link in candidates:
        with contextlib.suppress(OSError):
            target = os.readlink(link)
            if target == mountpoint or target.startswith(prefix):
                return True
    with contextlib.suppress(OSError):
        for line in (base / "maps").read_text().splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and (parts[5] == mountpoint or parts[5].startswith(prefix)):
                return True
    return False


def users_of(mountpoint: Path) -> list[int]:
    """Pids (not ours) with a file, a working or root folder or a mapping on the mount."""
    point = str(mountpoint)
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and int(entry.name) != os.getpid() and _links_into(int(entry.name), point)]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def kill_and_wait(pids: list[int], timeout: float = 10.0) -> None:
    """SIGKILL each and wait until every one is gone (or a zombie, which holds no file)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while not all(_zombie(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise CrashFSError(f"processes still alive {timeout:g}s after SIGKILL: "
                               f"{[p for p in pids if not _zombie(p)]}")
        time.sleep(0.01)


def kill_users(mountpoint: Path, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process using the mount until none is left; the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while users := [pid for pid in users_of(mountpoint) if not _zombie(pid)]:
        if time.monotonic() > deadline:
            raise CrashFSError(f"{mountpoint}: still used {timeout:g}s after SIGKILL by {users}")
        kill_and_wait(users, timeout)
        killed += users
    return killed


def _fs_pids(mountpoint: str | None = None) -> list[int]:
    """crashfs server processes (of that mount point, if given)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if len(argv) > 3 and argv[1].endswith("crashfs.py") and argv[2] == "serve" and (
                mountpoint is None or mountpoint in argv[3:]):
            found.append(int(entry.name))
    return found


def _fusermount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["fusermount3", *args], capture_output=True, text=True, timeout=30)


def force_unmount(mountpoint: str) -> None:
    """Unmount (lazily if busy) and end the server of that mount: whatever state it was in."""
    if mounts().get(mountpoint) == FSTYPE and _fusermount("-u", mountpoint).returncode != 0:
        _fusermount("-u", "-z", mountpoint)
    servers = _fs_pids(mountpoint)
    for pid in servers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(CrashFSError):
        kill_and_wait(servers, 5)


def _owner_of(work: Path) -> str:
    """A work folder is named PID-STARTTIME-N after the process that made it."""
    pid, started, *_ = work.name.split("-") + ["", ""]
    return f"{pid} {started}"


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """One process at a time clears leftovers (pytest-xdist workers mount at once)."""
    import fcntl

    ROOT.mkdir(parents=True, exist_ok=True)
    with open(ROOT / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def clean_leftovers() -> list[str]:
    """Unmount every crashfs mount no live CrashFS owns, end its server, and remove dead owners' folders.
    A live owner writes its mount point's name into its folder before it mounts."""
    owned: set[str] = set()
    gone: list[str] = []
    with _machine_lock():
        for work in sorted(p for p in ROOT.iterdir() if p.is_dir()):
            point = work / "mountpoint"
            if _alive(_owner_of(work)):
                with contextlib.suppress(OSError):
                    owned.add(point.read_text())
                continue
            with contextlib.suppress(OSError):
                force_unmount(point.read_text())
                gone.append(point.read_text())
            shutil.rmtree(work, ignore_errors=True)
        for mounted_at, kind in mounts().items():
            if kind == FSTYPE and mounted_at not in owned:
                force_unmount(mounted_at)
                gone.append(mounted_at)
    return sorted(set(gone))


class CrashFS:
    """A crashfs mount for a test: `mount()`, `cut_power()`, `unmount()`; a context manager.

    Its server, state file, control socket and log live in ROOT/PID-STARTTIME-N/ (the mount point by default
    too, outside pytest's tmp folders, so a leftover mount never sits in a folder pytest removes).
    """

    _count = 0

    def __init__(self) -> None:
        check_machine()
        CrashFS._count += 1
        self.work = ROOT / f"{os.getpid()}-{_start_time(os.getpid())}-{CrashFS._count}"
        self.state_file = self.work / "state.pickle"
        self.control = self.work / "control.sock"
        self.log = self.work / "fs.log"
        self.mountpoint: Path | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.cuts = 0

    def __enter__(self) -> CrashFS:
        if self.mountpoint is None:
            self.mount()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- mounting ---------------------------------------------------------------------------------
    def mount(self, path: Path | None = None) -> Path:
        """Mount an empty crashfs at `path` (default: a folder of our own); leftovers of killed runs go first."""
        if self.mountpoint is not None:
            raise CrashFSError(f"already mounted at {self.mountpoint}")
        clean_leftovers()
        self.work.mkdir(parents=True, exist_ok=True)
        point = (path or self.work / "mnt").absolute()
        if mounts().get(str(point)) == FSTYPE:
            force_unmount(str(point))
        point.mkdir(parents=True, exist_ok=True)
        if any(point.iterdir()):
            raise CrashFSError(f"{point}: the mount point is not empty")
        (self.work / "mountpoint").write_text(str(point))
        self.mountpoint = point
        self._start(load=False)
        return point

    def _start(self, *, load: bool) -> None:
        assert self.mountpoint is not None
        argv = [sys.executable, str(Path(__file__).resolve()), "serve", str(self.mountpoint),
                "--state", str(self.state_file), "--control", str(self.control), "--owner", _me()]
        with self.log.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {'load' if load else 'new'}\n".encode())
            self.server = subprocess.Popen([*argv, *(["--load"] if load else [])], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.server.poll() is not None:
                raise CrashFSError(f"crashfs exited with {self.server.returncode} at start: {self._log_tail()}")
            if mounts().get(str(self.mountpoint)) == FSTYPE:
                with contextlib.suppress(OSError, CrashFSError):
                    if self.request("ping").get("ready"):
                        os.stat(self.mountpoint)  # answered by the fuse loop
                        return
            if time.monotonic() > deadline:
                raise CrashFSError(f"crashfs not mounted at {self.mountpoint} within {START_TIMEOUT:g}s: "
                                   f"{self._log_tail()}")
            time.sleep(0.02)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:].strip() or "(no output)"
        except OSError:
            return "(no log)"

    def request(self, op: str, timeout: float = 30.0) -> dict[str, Any]:
        """One request over the control socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.control))
            sock.sendall(json.dumps({"op": op}).encode() + b"\n")
            with sock.makefile("rb") as stream:
                reply: dict[str, Any] = json.loads(stream.readline() or b'{"ok": false, "error": "no reply"}')
        if not reply.get("ok"):
            raise CrashFSError(f"crashfs {op}: {reply.get('error')}")
        return reply

    def stats(self) -> dict[str, Any]:
        """Calls per operation, nodes, the fuse config libfuse was given, what a cut would drop now."""
        return self.request("stats")

    # -- the power cut ----------------------------------------------------------------------------
    def cut_power(self) -> dict[str, Any]:
        """Kill every process using the mount, keep only what was durable, and mount that again at the
        same path. Returns what the cut dropped (entries and files not durable, renames undone)."""
        if self.mountpoint is None or self.server is None:
            raise CrashFSError("not mounted")
        started = time.monotonic()
        killed = kill_users(self.mountpoint)
        report = self.request("cut")
        self._stop_server()
        self._start(load=True)
        self.cuts += 1
        report.update(killed=killed, seconds=round(time.monotonic() - started, 3))
        report.pop("ok", None)
        return report

    def _stop_server(self) -> None:
        """Unmount (killing whoever still uses it) and wait for the server to exit."""
        assert self.mountpoint is not None and self.server is not None
        point = str(self.mountpoint)
        for _ in range(3):
            if mounts().get(point) != FSTYPE or _fusermount("-u", point).returncode == 0:
                break
            kill_users(self.mountpoint)
        else:
            _fusermount("-u", "-z", point)
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(timeout=10)
        self.server = None

    def unmount(self) -> None:
        """Kill the mount's users, unmount, end the server; the state is gone."""
        if self.mountpoint is None:
            return
        try:
            if self.server is not None:
                kill_users(self.mountpoint)
                self._stop_server()
        finally:
            force_unmount(str(self.mountpoint))
            self.mountpoint = None

    def close(self) -> None:
        """unmount(), then remove the work folder (the default mount point with it)."""
        try:
            self.unmount()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)


@contextlib.contextmanager
def mounted() -> Iterator[CrashFS]:
    """A mounted CrashFS, closed at the end."""
    with CrashFS() as fs:
        yield fs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="crashfs: a FUSE filesystem that loses what was not fsynced")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the fs process (CrashFS starts it)")
    run.add_argument("mountpoint")
    run.add_argument("--state", type=Path, required=True)
    run.add_argument("--control", type=Path, required=True)
    run.add_argument("--owner", required=True, help="'PID STARTTIME' of the process to outlive no longer")
    run.add_argument("--load", action="store_true", help="start from the state file (after a cut)")
    sub.add_parser("cleanup", help="unmount and end what killed runs left behind")
    args = parser.parse_args(argv)
    if args.command == "cleanup":
        print("\n".join(clean_leftovers()) or "nothing left behind")
        return 0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    serve(args.mountpoint, args.state, args.control, args.owner, args.load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
