"""`observer = "auto" | "native" | "polling"` (SPEC §11): the mount table decides auto, and polling needs no inotify."""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path

import pytest
from conftest import Project, wait_for

from spoold.config import parse_config
from spoold.daemon.mounts import Mount, choose_observer, is_network, mount_of, parse_mountinfo, unescape
from spoold.daemon.watcher import Poller, Waker, Watcher, _Hints
from spoold.errors import ConfigError

# Lines as /proc/self/mountinfo has them (this machine, a GlusterFS rig, an NFS client, a desktop).
MOUNTINFO = r"""22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
26 22 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
27 22 0:24 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=4096k,mode=755
42 27 0:39 / /run/spoold-sharedfs/spoold-9557-d3/h1 rw,relatime shared:20 - fuse.glusterfs vm:/spoold-9557-d3 rw
61 22 0:52 / /srv/nfs rw,relatime shared:31 - nfs4 files.example:/export rw,vers=4.2,hard,proto=tcp,local_lock=none
62 61 8:17 / /srv/nfs/local\040disk rw,relatime shared:32 - ext4 /dev/sdb1 rw
63 22 0:53 / /srv/nf rw,relatime shared:33 - xfs /dev/sdc1 rw
70 22 8:33 / /media/usb rw,nosuid,nodev,relatime shared:40 - fuseblk /dev/sdd1 rw,user_id=0,group_id=0,allow_other
71 22 0:60 / /mnt/box rw,relatime shared:41 - cifs //nas/box rw,vers=3.1.1
72 71 0:61 / /mnt/box rw,relatime shared:42 - tmpfs tmpfs rw
80 22 0:70 / /home/me/remote\040files\134x rw,nosuid,nodev,relatime shared:50 - fuse.sshfs me@host: rw,user_id=1000
not a mountinfo line
"""
MOUNTS = parse_mountinfo(MOUNTINFO)


def _fstype(path: str) -> str | None:
    mount = mount_of(path, MOUNTS)
    return None if mount is None else mount.fstype


def test_mountinfo_lines_give_the_mount_point_unescaped_and_the_filesystem_type() -> None:
    assert MOUNTS[0] == Mount("/", "ext4")
    assert Mount("/run/spoold-sharedfs/spoold-9557-d3/h1", "fuse.glusterfs") in MOUNTS
    assert Mount("/srv/nfs/local disk", "ext4") in MOUNTS
    assert Mount("/home/me/remote files\\x", "fuse.sshfs") in MOUNTS
    assert len(MOUNTS) == 11  # the line that is not one is skipped
    assert unescape(r"a\040b\011c\012d\134e") == "a b\tc\nd\\e"


def test_the_longest_mount_point_holding_the_path_wins() -> None:
    assert _fstype("/run/spoold-sharedfs/spoold-9557-d3/h1/app/spool/high") == "fuse.glusterfs"
    assert _fstype("/run/spoold-sharedfs/spoold-9557-d3/h1") == "fuse.glusterfs"
    assert _fstype("/run/spoold-sharedfs/spoold-9557-d3/h10/spool") == "tmpfs"  # a prefix, not a parent
    assert _fstype("/srv/nfs/spool") == "nfs4"
    assert _fstype("/srv/nfs/local disk/spool") == "ext4"  # a local disk mounted inside the NFS share
    assert _fstype("/srv/nfsx/spool") == "ext4"
    assert _fstype("/srv/nf/spool") == "xfs"
    assert _fstype("/home/me/remote files\\x/spool") == "fuse.sshfs"
    assert _fstype("/mnt/box/spool") == "tmpfs"  # stacked on one point: the last mounted is the one seen
    assert _fstype("/var/spool") == "ext4"


def test_network_and_fuse_filesystems_are_polled_and_local_ones_are_not() -> None:
    for fstype in ("nfs", "nfs4", "cifs", "smb3", "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph-fuse",
                   "fuse.sshfs", "fuse"):
        assert is_network(fstype), fstype
    for fstype in ("ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "fuseblk"):
        assert not is_network(fstype), fstype


def test_auto_chooses_by_the_mount_table_and_the_other_settings_are_obeyed(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    spool = tmp_path / "spool"
    (spool / "high").mkdir(parents=True)
    table = tmp_path / "mountinfo"
    point = str(spool).replace(" ", "\\040")
    table.write_text(MOUNTINFO + f"90 22 0:80 / {point} rw shared:60 - fuse.glusterfs vm:/vol rw\n")
    monkeypatch.setattr("spoold.daemon.mounts.MOUNTINFO", table)
    assert choose_observer("auto", [spool / "high"]) == ("polling", "spool on fuse.glusterfs")
    assert choose_observer("native", [spool / "high"]) == ("native", 'observer = "native"')
    table.write_text(MOUNTINFO)
    assert choose_observer("auto", [spool / "high"])[0] == "native"
    assert choose_observer("polling", [spool / "high"]) == ("polling", 'observer = "polling"')
    monkeypatch.setattr("spoold.daemon.mounts.sys.platform", "darwin")
    assert choose_observer("auto", [spool / "high"]) == ("native", "no mount table read on darwin")


def test_observer_must_be_one_of_three_words(tmp_path: Path) -> None:
    path = tmp_path / "bgjobs.toml"
    assert parse_config(path, {}).observer == "auto"
    assert parse_config(path, {"observer": "polling"}).observer == "polling"
    with pytest.raises(ConfigError) as caught:
        parse_config(path, {"observer": "inotify"})
    assert str(caught.value) == f"{path}: observer: expected one of 'auto', 'native', 'polling', got 'inotify'"


def test_the_poller_lists_only_its_folders_and_hints_only_new_names(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folders = [tmp_path / name for name in ("high", "medium", "low", "scheduled")]
    for folder in [*folders, tmp_path / "done"]:
        folder.mkdir()
    (tmp_path / "medium" / "old.json").write_text("{}")
    waker = Waker()
    try:
        poller = Poller(folders, _Hints(waker, folders))
        poller.start()  # the first look is only a baseline: old.json is the first rescan's to find
        poller.stop()
        listed: list[str] = []
        real_listdir = os.listdir

        def listdir(path: Path) -> list[str]:
            listed.append(str(path))
            return real_listdir(path)

        monkeypatch.setattr("spoold.daemon.watcher.os.listdir", listdir)
        for n in range(50):
            (tmp_path / "done" / f"d{n}.json").write_text("{}")
        assert poller.poll() == 0
        (tmp_path / "low" / "new.json").write_text("{}")
        (tmp_path / "medium" / "old.json").unlink()
        assert poller.poll() == 1
        assert poller.hints.paths == {str(tmp_path / "low" / "new.json")}
        assert sorted(listed) == sorted([str(f) for f in folders] * 2)  # never done/, never a stat
        (tmp_path / "medium" / "old.json").write_text("{}")  # a name back after it left is new again
        assert poller.poll() == 1
    finally:
        waker.close()


def _inotify_fds(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == "anon_inode:inotify"
        except OSError:
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts inotify descriptors in /proc (Linux)")
def test_a_polling_daemon_picks_up_a_dropped_job_well_under_a_second_without_inotify(project: Project) -> None:
    project.configure(rescan_seconds=30)  # the rescan is far: only the poller can find the job
    project.set_keys(observer='"polling"')
    daemon = project.start()
    time.sleep(0.5)  # past the first rescan
    assert _inotify_fds(daemon.pid) == 0
    latencies = []
    for n in range(5):
        dropped = time.monotonic()
        job_id = project.submit("Echo", "handle", [str(n)])
        wait_for(lambda j=job_id: project.has("done", j), 5, f"job {job_id} done")
        latencies.append(time.monotonic() - dropped)
    assert max(latencies) < 0.8, latencies
    code, out = project.stop(daemon)
    assert code == 0
    assert 'observer: polling (observer = "polling")' in out


def test_an_auto_daemon_on_a_local_disk_uses_file_events_and_says_why(project: Project) -> None:
    daemon = project.start()
    job_id = project.submit("Echo", "handle", ["x"])
    wait_for(lambda: project.has("done", job_id), 5, "job done")
    code, out = project.stop(daemon)
    assert code == 0
    line = next(line for line in out.splitlines() if "observer:" in line)
    assert line.endswith(f"observer: native (spool on {_local_fstype(project.spool)})"), line


def _local_fstype(path: Path) -> str:
    mount = mount_of(os.path.realpath(path), parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
    assert mount is not None
    return mount.fstype


@pytest.mark.parametrize("inline", [True, False], ids=["read-by-the-loop", "observer-threads"])
def test_both_ways_of_reading_file_events_give_the_same_hints(tmp_path: Path, inline: bool) -> None:
    """The loop's own inotify reading (Linux) and watchdog's observer (the other platforms) say the same:
    a job linked or moved into a ready folder, a cancel marker written, a ready folder replaced."""
    root = tmp_path / "spool"
    folders = [root / name for name in ("high", "medium", "low", "scheduled")]
    markers = root / "running" / "node-1"
    for folder in [*folders, markers, root / "tmp"]:
        folder.mkdir(parents=True)
    waker = Waker()
    watcher = Watcher(folders, waker, root=root, markers=markers)
    watcher.start(inline=inline)
    try:
        assert (watcher.fileno() is not None) == (inline and sys.platform.startswith("linux"))

        def hints() -> set[str]:
            watcher.pump()
            return {str(path) for path in watcher.take_hints()}

        staged = root / "tmp" / ".a.part"
        staged.write_text("{}")
        os.link(staged, root / "high" / "a.json")  # a publish
        os.rename(staged, root / "low" / "b.json")  # a drop
        (markers / ".x.cancel").write_text("")
        seen: set[str] = set()
        wanted = {str(root / "high" / "a.json"), str(root / "low" / "b.json"), str(markers / ".x.cancel")}

        def all_seen() -> bool:
            seen.update(hints())
            return wanted <= seen

        wait_for(all_seen, 5, "the three hints")
        (root / "medium").rmdir()

        def noticed() -> bool:
            watcher.pump()
            return watcher.rearm_needed

        wait_for(noticed, 5, "the removed folder noticed")
        (root / "medium").mkdir()
        watcher.rearm()
        (root / "medium" / "c.json").write_text("{}")
        wait_for(lambda: str(root / "medium" / "c.json") in hints(), 5, "a job in the folder made again")
    finally:
        watcher.stop()
        waker.close()


@pytest.mark.skipif(not hasattr(select, "poll"), reason="select's limit is what poll avoids")
def test_the_loop_sleeps_on_descriptors_beyond_selects_limit() -> None:
    """A daemon with hundreds of workers holds two pipes per worker: its sleep must wake on an fd above
    select's FD_SETSIZE (1024), which select.select refuses outright."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the fd limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    read_end, write_end = os.pipe()
    high = os.dup2(read_end, 1100)
    waker = Waker()
    try:
        assert waker.sleep(0.01, [high, None]) == set()
        os.write(write_end, b"x")
        assert waker.sleep(5, [high, None]) == {high}
    finally:
        waker.close()
        for fd in (read_end, write_end, high):
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
