"""The power-loss filesystem itself (tests/crashfs.py): what a cut keeps and drops, and that it is a real
enough filesystem for spoold (links, link counts, stable inodes, locks, inotify, rename flags).

If these fail, the power-loss runs of spoold (tests/test_power_loss.py) mean nothing.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from crashfs import RENAME_EXCHANGE, RENAME_NOREPLACE, CrashFS, CrashFSError, mounts
from filelock import FileLock, Timeout

from spoold.paths import fsync_dir


@pytest.fixture
def fs(crash: CrashFS) -> CrashFS:
    """A fresh crashfs mount (conftest's `crash`, mounted); a machine that cannot mount one fails the test."""
    try:
        crash.mount()
    except CrashFSError as e:
        pytest.fail(str(e), pytrace=False)
    return crash


def root(fs: CrashFS) -> Path:
    assert fs.mountpoint is not None
    return fs.mountpoint


def write(path: Path, data: bytes, *, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def folders(fs: CrashFS, *names: str) -> list[Path]:
    """Folders made durable (the mount's root fsynced after them)."""
    made = [root(fs) / name for name in names]
    for folder in made:
        folder.mkdir()
    fsync_dir(root(fs))
    return made


def renameat2(old: Path, new: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


# -- what a cut keeps ----------------------------------------------------------------------------------


def test_data_written_but_not_fsynced_is_gone_after_a_cut(fs: CrashFS) -> None:
    (a,) = folders(fs, "a")
    write(a / "never.txt", b"not fsynced", fsync=False)
    write(a / "older.txt", b"version 1", fsync=True)
    write(a / "older.txt", b"version 2, longer", fsync=False)
    fsync_dir(a)
    report = fs.cut_power()
    assert (a / "never.txt").read_bytes() == b""  # its entry was durable, its data never
    assert (a / "older.txt").read_bytes() == b"version 1"
    assert os.stat(a / "older.txt").st_size == len(b"version 1")
    assert report["files_not_durable"] == 2


def test_fsynced_data_whose_folder_was_fsynced_survives(fs: CrashFS) -> None:
    (a,) = folders(fs, "a")
    (a / "sub").mkdir()
    write(a / "sub" / "kept.json", b'{"kept": true}', fsync=True)
    fsync_dir(a / "sub")
    fsync_dir(a)
    fs.cut_power()
    assert (a / "sub" / "kept.json").read_bytes() == b'{"kept": true}'


def test_an_entry_whose_folder_was_not_fsynced_is_gone_and_an_unsynced_unlink_is_undone(fs: CrashFS) -> None:
    a, b = folders(fs, "a", "b")
    write(a / "fsynced-file.txt", b"data", fsync=True)  # the file, not its folder
    (a / "dir").mkdir()
    write(b / "old.txt", b"old", fsync=True)
    fsync_dir(b)
    (b / "old.txt").unlink()
    (b / "c").mkdir()
    fsync_dir(b / "c")  # the new folder's contents, not its own entry in b
    fs.cut_power()
    assert sorted(os.listdir(a)) == []
    assert sorted(os.listdir(b)) == ["old.txt"]
    assert (b / "old.txt").read_bytes() == b"old"


def test_a_rename_not_followed_by_an_fsync_of_either_folder_is_undone(fs: CrashFS) -> None:
    a, b, c = folders(fs, "a", "b", "c")
    write(a / "job.json", b"{}", fsync=True)
    fsync_dir(a)
    os.rename(a / "job.json", b / "job.json")
    write(c / "other.json", b"{}", fsync=True)
    fsync_dir(c)  # another folder's fsync changes nothing for the rename
    assert os.listdir(a) == [] and os.listdir(b) == ["job.json"]
    report = fs.cut_power()
    assert report["renames_not_durable"] == 1
    assert os.listdir(a) == ["job.json"] and os.listdir(b) == []
    assert (a / "job.json").read_bytes() == b"{}"


@pytest.mark.parametrize("synced", ["source", "target"])
def test_a_rename_followed_by_an_fsync_of_either_folder_is_durable_whole(fs: CrashFS, synced: str) -> None:
    a, b = folders(fs, "a", "b")
    write(a / "job.json", b'{"n": 1}', fsync=True)
    write(a / "stays-new.json", b"{}", fsync=True)
    fsync_dir(a)
    (a / "stays-new.json").unlink()
    write(b / "unsynced.json", b"{}", fsync=True)
    os.rename(a / "job.json", b / "claimed.json")
    fsync_dir(a if synced == "source" else b)
    fs.cut_power()
    assert not (a / "job.json").exists() and (b / "claimed.json").read_bytes() == b'{"n": 1}'
    assert os.stat(b / "claimed.json").st_nlink == 1
    if synced == "source":  # the other changes of the folder that was not fsynced are not carried along
        assert sorted(os.listdir(b)) == ["claimed.json"]
    else:
        assert sorted(os.listdir(a)) == ["stays-new.json"]
        assert sorted(os.listdir(b)) == ["claimed.json", "unsynced.json"]


def test_a_file_moved_twice_is_made_durable_with_its_earlier_move(fs: CrashFS) -> None:
    a, b, c = folders(fs, "a", "b", "c")
    write(a / "x", b"x", fsync=True)
    fsync_dir(a)
    os.rename(a / "x", b / "x")
    os.rename(b / "x", c / "x")
    fsync_dir(c)  # the second move touched c; the first one is made durable with it, in order
    fs.cut_power()
    assert os.listdir(a) == [] and os.listdir(b) == [] and os.listdir(c) == ["x"]
    assert os.stat(c / "x").st_nlink == 1


def test_renames_there_and_back_leave_the_file_where_it_ended(fs: CrashFS) -> None:
    a, b = folders(fs, "a", "b")
    write(a / "x", b"x", fsync=True)
    fsync_dir(a)
    os.rename(a / "x", b / "x")
    os.rename(b / "x", a / "x")
    fsync_dir(a)
    fs.cut_power()
    assert os.listdir(a) == ["x"] and os.listdir(b) == []


def test_link_then_unlink_is_spoolds_move_and_each_half_is_durable_on_its_own(fs: CrashFS) -> None:
    tmp, done = folders(fs, "tmp", "done")
    write(tmp / ".staged.part", b'{"status": "done"}', fsync=True)
    fsync_dir(tmp)
    os.link(tmp / ".staged.part", done / "ID.json")
    assert os.stat(done / "ID.json").st_nlink == 2
    fsync_dir(done)
    os.unlink(tmp / ".staged.part")  # tmp/ is not fsynced: the staged copy comes back, the same file
    assert os.stat(done / "ID.json").st_nlink == 1
    fs.cut_power()
    assert (done / "ID.json").read_bytes() == b'{"status": "done"}'
    assert os.stat(done / "ID.json").st_nlink == 2
    assert os.stat(done / "ID.json").st_ino == os.stat(tmp / ".staged.part").st_ino
    os.unlink(tmp / ".staged.part")
    fsync_dir(tmp)
    fs.cut_power()
    assert os.listdir(tmp) == [] and os.stat(done / "ID.json").st_nlink == 1


def test_link_counts_of_files_and_folders(fs: CrashFS) -> None:
    (a,) = folders(fs, "a")
    assert os.stat(a).st_nlink == 2
    (a / "s1").mkdir()
    (a / "s2").mkdir()
    assert os.stat(a).st_nlink == 4
    (a / "s2").rmdir()
    assert os.stat(a).st_nlink == 3
    os.rename(a / "s1", root(fs) / "s1")
    assert os.stat(a).st_nlink == 2 and os.stat(root(fs) / "s1").st_nlink == 2
    write(a / "f", b"", fsync=False)
    os.link(a / "f", a / "g")
    os.link(a / "f", root(fs) / "h")
    assert os.stat(a / "f").st_nlink == 3
    os.unlink(a / "g")
    assert os.stat(a / "f").st_nlink == 2
    os.rename(root(fs) / "h", a / "f")  # two names of one file: rename does nothing (POSIX)
    assert os.stat(a / "f").st_nlink == 2 and (root(fs) / "h").exists()


def test_inode_numbers_are_stable_across_a_cut_and_never_reused(fs: CrashFS) -> None:
    (a,) = folders(fs, "a")
    write(a / "f", b"f", fsync=True)
    fsync_dir(a)
    before = {name: os.stat(a / name).st_ino for name in ("f",)} | {"a": os.stat(a).st_ino}
    write(a / "lost", b"", fsync=False)
    lost_ino = os.stat(a / "lost").st_ino
    fs.cut_power()
    assert {"f": os.stat(a / "f").st_ino, "a": os.stat(a).st_ino} == before
    write(a / "new", b"", fsync=False)
    assert os.stat(a / "new").st_ino > lost_ino


def test_attributes_are_real(fs: CrashFS) -> None:
    (a,) = folders(fs, "a")
    started = time.time()
    write(a / "f", b"12345", fsync=True)
    info = os.stat(a / "f")
    assert started - 1 <= info.st_mtime <= time.time() + 1 and started - 1 <= info.st_ctime <= time.time() + 1
    assert info.st_size == 5 and info.st_uid == os.getuid()
    os.chmod(a / "f", 0o600)
    os.chown(a / "f", 1234, 5678)
    os.utime(a / "f", ns=(1_000_000_000, 2_000_000_123))
    info = os.stat(a / "f")
    assert (oct(info.st_mode & 0o7777), info.st_uid, info.st_gid) == ("0o600", 1234, 5678)
    assert (info.st_atime_ns, info.st_mtime_ns) == (1_000_000_000, 2_000_000_123)
    vfs = os.statvfs(root(fs))
    assert vfs.f_bavail > 0 and vfs.f_namemax == 255


# -- what spoold needs of it ----------------------------------------------------------------------------


def test_create_exclusive_nofollow_symlinks_and_truncate(fs: CrashFS) -> None:
    (a,) = folders(fs, "a")
    fd = os.open(a / "x.part", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(a / "x.part", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.symlink("/etc/passwd", a / "evil.json")
    assert os.readlink(a / "evil.json") == "/etc/passwd"
    with pytest.raises(OSError) as caught:
        os.open(a / "evil.json", os.O_RDONLY | os.O_NOFOLLOW)
    assert caught.value.errno == errno.ELOOP
    write(a / "t", b"0123456789", fsync=False)
    os.truncate(a / "t", 4)
    assert (a / "t").read_bytes() == b"0123"
    with open(a / "t", "ab") as handle:
        handle.write(b"45")
    assert (a / "t").read_bytes() == b"012345"
    with pytest.raises(OSError) as caught:
        (a / "x.part").rmdir()
    assert caught.value.errno == errno.ENOTDIR
    (a / "d").mkdir()
    (a / "d" / "f").write_bytes(b"")
    with pytest.raises(OSError) as caught:
        (a / "d").rmdir()
    assert caught.value.errno == errno.ENOTEMPTY


def test_what_one_process_writes_another_reads_at_once(fs: CrashFS) -> None:
    (a,) = folders(fs, "a")
    for n in range(20):
        write(a / "f", f"version {n}".encode(), fsync=False)
        read = subprocess.run([sys.executable, "-c", "import sys; print(open(sys.argv[1]).read())", str(a / "f")],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert read == f"version {n}"
        if n % 2:
            os.rename(a / "f", a / "g")
            assert not os.path.lexists(a / "f") and (a / "g").exists()
            os.rename(a / "g", a / "f")


def test_rename_flags_noreplace_and_exchange(fs: CrashFS) -> None:
    (a,) = folders(fs, "a")
    write(a / "one", b"1", fsync=True)
    write(a / "two", b"2", fsync=True)
    fsync_dir(a)
    with pytest.raises(OSError) as caught:
        renameat2(a / "one", a / "two", RENAME_NOREPLACE)
    assert caught.value.errno == errno.EEXIST
    assert (a / "one").read_bytes() == b"1" and (a / "two").read_bytes() == b"2"
    renameat2(a / "one", a / "three", RENAME_NOREPLACE)
    renameat2(a / "three", a / "two", RENAME_EXCHANGE)
    assert (a / "three").read_bytes() == b"2" and (a / "two").read_bytes() == b"1"
    with pytest.raises(OSError) as caught:
        renameat2(a / "two", a / "three", RENAME_NOREPLACE | RENAME_EXCHANGE)
    assert caught.value.errno == errno.EINVAL
    fs.cut_power()  # the exchange, never fsynced, is undone whole
    assert sorted(os.listdir(a)) == ["one", "two"]
    assert (a / "one").read_bytes() == b"1" and (a / "two").read_bytes() == b"2"


HOLD = """
import fcntl, sys, time
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_flocks_of_two_processes_exclude_each_other_and_a_killed_holder_frees_its_lock(fs: CrashFS) -> None:
    running = root(fs) / "running"
    running.mkdir()
    (running / ".new-node").mkdir()
    lock = running / ".new-node" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        os.rename(running / ".new-node", running / "node")  # spoold's node folder is locked, then renamed
        lock = running / "node" / ".lock"
        with open(lock, "a") as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(Timeout):
            FileLock(str(lock), timeout=0).acquire()  # what spoold takes (filelock: flock on Linux)
        holder.kill()
        holder.wait(timeout=10)
        taken = FileLock(str(lock), timeout=5)
        taken.acquire()
        taken.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()


def test_inotify_sees_what_is_done_through_the_mount(fs: CrashFS) -> None:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    (ready,) = folders(fs, "ready")
    seen: list[tuple[str, str]] = []
    arrived = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            seen.append((event.event_type, os.path.basename(os.fsdecode(event.src_path))))
            if event.event_type == "moved":
                arrived.set()

    observer = InotifyObserver()
    observer.schedule(Handler(), str(ready))
    observer.start()
    try:
        time.sleep(0.2)
        write(ready / ".x.part", b"{}", fsync=True)
        os.rename(ready / ".x.part", ready / "x.json")
        assert arrived.wait(5), seen
    finally:
        observer.stop()
        observer.join(5)
    assert ("created", ".x.part") in seen and ("moved", ".x.part") in seen


def test_a_cut_kills_whoever_still_uses_the_mount(fs: CrashFS) -> None:
    (a,) = folders(fs, "a")
    user = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'w'); "
                             "print('open', flush=True); time.sleep(60)", str(a / "held")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert user.stdout is not None and user.stdout.readline().strip() == "open"
        report = fs.cut_power()
        assert user.wait(timeout=10) == -9 and user.pid in report["killed"]
    finally:
        if user.poll() is None:
            user.kill()
        user.wait(timeout=10)
        assert user.stdout is not None
        user.stdout.close()
    assert os.listdir(a) == []
    assert mounts()[str(root(fs))] == "fuse.crashfs"


def test_libfuse_got_no_caching_and_our_inodes(fs: CrashFS) -> None:
    config = fs.stats()["config"]
    assert config == {"entry_timeout": 0.0, "attr_timeout": 0.0, "negative_timeout": 0.0, "use_ino": 1.0,
                      "hard_remove": 1.0, "direct_io": 1.0, "kernel_cache": 0.0, "auto_cache": 0.0}
    (a,) = folders(fs, "a")
    write(a / "f", b"still readable", fsync=False)
    fd = os.open(a / "f", os.O_RDWR)
    try:
        os.unlink(a / "f")  # hard_remove: no .fuse_hidden file is left in its place (spoold rmdirs its folder)
        assert os.listdir(a) == []
        assert os.pread(fd, 100, 0) == b"still readable" and os.pwrite(fd, b"S", 0) == 1
        with pytest.raises(OSError) as caught:  # libfuse's high-level API: a stat by inode needs a path
            os.fstat(fd)
        assert caught.value.errno == errno.ESTALE
    finally:
        os.close(fd)
    a.rmdir()
