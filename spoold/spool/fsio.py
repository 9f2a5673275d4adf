"""Durable file moves: tmp-write + fsync, no-replace publish, directory fsync (docs/design.md, P2, P3)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spoold.errors import NameTaken
from spoold.paths import fsync_dir as fsync_dir  # defined in paths, which makes the folders; used here by every move
from spoold.spool.blanks import Blanks

log = logging.getLogger(__name__)

# link() is how POSIX gives a rename that never replaces; some filesystems (FAT, some FUSE) lack it.
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}
FSYNC_THREADS = 4
_fsync_pool: tuple[int, ThreadPoolExecutor] | None = None  # (its process, it), made at the first batch


def write_tmp(tmp_dir: Path, data: bytes, *, durable: bool = True, prefix: str = "") -> Path:
    """Write `data` to a fresh file in tmp/ (O_EXCL), fsynced and closed before anyone can see it."""
    path, fd = _stage(tmp_dir, data, prefix)
    try:
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


def _stage(tmp_dir: Path, data: bytes, prefix: str = "", blanks: Blanks | None = None) -> tuple[Path, int]:
    """A fresh file in tmp/ (O_EXCL, or the next of `blanks`, made ahead) holding `data`, still open:
    (its path, its fd)."""
    if (blank := blanks.take() if blanks is not None else None) is not None:
        path, fd = blank
    else:
        path = tmp_dir / f".{prefix}{secrets.token_hex(8)}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return path, fd


def _fsync_together(fds: Sequence[int]) -> list[OSError | None]:
    """fsync every fd at once, from a few threads: a journaling filesystem commits fsyncs that arrive
    together in one journal commit, where one after the other each waits for its own (ext4: 16 files
    in 1.6 ms instead of 3.3). Per fd: None, or its error."""
    def one(fd: int) -> OSError | None:
        try:
            os.fsync(fd)
        except OSError as e:
            return e
        return None

    if len(fds) < 2:
        return [one(fd) for fd in fds]
    global _fsync_pool
    if _fsync_pool is None or _fsync_pool[0] != os.getpid():  # a forked app server's child has none of its threads
        _fsync_pool = (os.getpid(), ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="spoold-fsync"))
    return list(_fsync_pool[1].map(one, fds))


def _stage_all(tmp_dir: Path, files: Sequence[tuple[bytes, Path]], results: list[OSError | None], *,
               durable: bool, blanks: Blanks | None) -> list[tuple[int, Path, Path]]:
    """Stage each file in tmp/, fsynced together; the ones staged (a failure is noted in `results`)."""
    opened: list[tuple[int, Path, Path, int]] = []
    try:
        for index, (data, dst) in enumerate(files):
            try:
                path, fd = _stage(tmp_dir, data, blanks=blanks)
            except OSError as e:
                results[index] = e
                continue
            opened.append((index, path, dst, fd))
        errors = _fsync_together([fd for *_, fd in opened]) if durable else [None] * len(opened)
    finally:
        for *_, fd in opened:
            os.close(fd)
    staged = []
    for (index, path, dst, _), error in zip(opened, errors, strict=True):
        if error is None:
            staged.append((index, path, dst))
        else:
            path.unlink(missing_ok=True)
            results[index] = error
    return staged


if os.access in os.supports_follow_symlinks:
    def name_exists(path: str | os.PathLike[str]) -> bool:
        """`os.path.lexists`, without the exception a missing name costs it (faccessat, no symlink followed):
        the checks at every claim ask mostly about names that are not there."""
        return os.access(path, os.F_OK, follow_symlinks=False)
else:  # Windows
    name_exists = os.path.lexists


def same_file(a: Path, b: Path) -> bool:
    """True if both names are links to one file (never follows a symlink)."""
    try:
        first, second = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (first.st_ino, first.st_dev) == (second.st_ino, second.st_dev)


def renamed_from(name: str | os.PathLike[str], ours: str | os.PathLike[str]) -> bool:
    """True if `name` is only our file `ours` seen under a name it was renamed away from.

    A network client may show a file under its old name for a second after another host renamed it
    (GlusterFS's entry cache), and opening that name reaches the file itself. A file linked there for
    real (a move cut short between its link and its unlink) has two links, and is not this."""
    try:
        first, second = os.lstat(name), os.lstat(ours)
    except OSError:
        return False
    return (first.st_ino, first.st_dev) == (second.st_ino, second.st_dev) and max(first.st_nlink,
                                                                                   second.st_nlink) < 2


def listed(path: Path) -> bool:
    """True if `path`'s folder lists its name. A listing is answered by the file server, where a lookup,
    an open or a read may be answered from a network client's cache (docs/design.md, H6)."""
    try:
        with os.scandir(path.parent) as entries:
            return any(entry.name == path.name for entry in entries)
    except OSError:
        return False


def link_no_replace(src: Path, dst: Path) -> bool:
    """link(src, dst); False when the filesystem has no hard links. NameTaken if dst exists."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as e:
        if same_file(src, dst):
            return True  # linked after all: a retransmitted NFS link says EEXIST after succeeding (docs/design.md, P6)
        if e.errno == errno.EEXIST:
            raise NameTaken(dst) from e
        if e.errno not in _NO_LINK:
            raise
        return False
    return True


def move_no_replace(src: Path, dst: Path, *, durable: bool = True) -> bool:
    """Move src to dst, raising NameTaken rather than replacing anything at dst (docs/design.md, P2).

    Any other error, a FileExistsError from elsewhere included, is an I/O failure, not a taken name.
    The move counts once dst is linked and its folder fsynced; a failed fsync undoes the link and
    raises, so the caller redoes it from the source (docs/design.md, P9). A source that cannot be removed
    afterwards is left as a duplicate, logged, and False is returned: never redo a committed move.
    """
    if os.name == "posix" and link_no_replace(src, dst):
        if durable:
            try:
                fsync_dir(dst.parent)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(dst)
                raise
        return remove_source(src, dst)
    # Windows (rename never replaces there), or a filesystem without hard links (checked, then renamed).
    if os.name == "posix" and os.path.lexists(dst):
        raise NameTaken(dst)
    try:
        os.rename(src, dst)
    except FileExistsError as e:
        raise NameTaken(dst) from e
    if durable:
        fsync_dir(dst.parent)
    return True


def remove_source(src: Path, dst: Path) -> bool:
    """The last step of a move to `dst`: unlink `src`; False (logged) if it stays as a duplicate."""
    try:
        os.unlink(src)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and not os.path.lexists(src):
            return True  # gone indeed (over NFS, a retransmitted unlink may say so after succeeding)
        log.warning("moved %s to %s but cannot remove the source (%s): a duplicate is left", src, dst, e)
        return False
    return True


def publish(tmp_dir: Path, data: bytes, dst: Path, *, durable: bool = True,
            before_link: Callable[[], None] | None = None, blanks: Blanks | None = None) -> None:
    """Write `data` as the new file `dst`: staged in tmp/, fsynced, then moved in without replacing."""
    (error,) = publish_many(tmp_dir, [(data, dst)], durable=durable, before_link=before_link, blanks=blanks)
    if error is not None:
        raise error


def publish_many(tmp_dir: Path, files: Sequence[tuple[bytes, Path]], *, durable: bool = True,
                 before_link: Callable[[], None] | None = None, blanks: Blanks | None = None) -> list[OSError | None]:
    """publish() for files written together (group commit): each is staged and fsynced, all are linked
    in, each target folder is fsynced once (a failed fsync undoes its links), then the staged copies go.
    `before_link` runs once all are staged, before the first link (what must be durable before them);
    `blanks`: a daemon's files made ahead, staged into instead of new ones.
    Per file: None once it is durable in place, or the error that left it out (NameTaken: name taken)."""
    results: list[OSError | None] = [None] * len(files)
    staged = _stage_all(tmp_dir, files, results, durable=durable, blanks=blanks)  # (index, staged, dst)
    if before_link is not None and staged:
        try:
            before_link()
        except BaseException as e:  # nothing is linked: the staged copies go, the error is each file's
            for index, path, _ in staged:
                path.unlink(missing_ok=True)
                if isinstance(e, OSError):
                    results[index] = e
            if not isinstance(e, OSError):
                raise
            return results
    linked = _link_all(staged, results, durable=durable)
    if durable:
        linked = _fsync_targets(linked, results)
    for _, path, dst in linked:
        if blanks is None or not blanks.release(path):  # a blank's name is its helper's to remove
            remove_source(path, dst)  # a tmp/ copy left behind is reaped later
    return results


def _link_all(staged: list[tuple[int, Path, Path]], results: list[OSError | None], *,
              durable: bool) -> list[tuple[int, Path, Path]]:
    """Link each staged copy to its target; the ones linked (a failure is noted in `results`)."""
    linked: list[tuple[int, Path, Path]] = []
    for index, path, dst in staged:
        try:
            if os.name == "posix" and link_no_replace(path, dst):
                linked.append((index, path, dst))
            else:  # Windows, or a filesystem without hard links: one move at a time
                move_no_replace(path, dst, durable=durable)
        except BaseException as e:
            path.unlink(missing_ok=True)
            if not isinstance(e, OSError):
                raise
            results[index] = e
    return linked


def _fsync_targets(linked: list[tuple[int, Path, Path]], results: list[OSError | None]) -> list[tuple[int, Path, Path]]:
    """Fsync each target folder once; a failed fsync undoes that folder's links, so each is redone from
    its source (docs/design.md, P9). The links that are durable."""
    for folder in {dst.parent for _, _, dst in linked}:
        try:
            fsync_dir(folder)
        except OSError as e:
            for index, path, dst in [item for item in linked if item[2].parent == folder]:
                with contextlib.suppress(OSError):
                    os.unlink(dst)
                path.unlink(missing_ok=True)
                results[index] = e
            linked = [item for item in linked if item[2].parent != folder]
    return linked


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """Read a regular file without following a symlink or blocking on a FIFO; ValueError past `limit`."""
    return read_bounded_stat(path, limit)[0]


def read_bounded_stat(path: str | os.PathLike[str], limit: int) -> tuple[bytes, os.stat_result]:
    """read_bounded, plus the file's fstat taken before reading it."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > limit:
            raise ValueError(f"too large: {info.st_size} bytes > max_job_bytes {limit}")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"too large: more than max_job_bytes {limit} bytes")
        return b"".join(chunks), info
    finally:
        os.close(fd)
