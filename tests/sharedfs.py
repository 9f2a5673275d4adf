"""A GlusterFS volume on this machine with one FUSE mount per simulated host (issue 12, SHARED-FS-NOTES §5).

One brick, the volume options the notes measured (gfid2path off, strict locks, 5 s ping and TCP user
timeouts), and N mounts, each a "host". Variants: `strict` (performance translators off and zero
kernel timeouts: views coherent in ms) or the default caches (about 1 s stale stat and content), and
`partition`: each host's FUSE client runs in its own network namespace behind a veth on a private
bridge, so `host.cut()` is a real partition from the file server and `host.heal()` ends it.

Several pytest processes may use it at once (xdist workers, two sessions): glusterd is shared, and
each process makes its own volumes, named `spoold-PID-VARIANT`, with their mounts and networks.
Before making one, whatever a dead process left (mounts, FUSE clients, volumes, namespaces) is
removed; the last process out stops the glusterd it started. A machine that cannot do it (no glusterd,
no /dev/fuse, not root) fails the tests with the reason: they are never skipped.

    python tests/sharedfs.py cleanup    # remove what killed runs left behind (no live owner)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

STATE = Path(os.environ.get("SPOOLD_SHAREDFS_ROOT", "/srv/spoold-sharedfs"))  # bricks, logs, owners
MOUNTS = Path(os.environ.get("SPOOLD_SHAREDFS_MOUNTS", "/run/spoold-sharedfs"))  # MOUNTS/VOLUME/HOST
PREFIX = "spoold-"
GLUSTERD_PID = STATE / "glusterd.pid"
USERS = STATE / "users"  # one file per process using the rig: glusterd stops when the last one leaves
STRICT_OFF = ("stat-prefetch", "quick-read", "open-behind", "write-behind", "io-cache", "read-ahead",
              "readdir-ahead")
STRICT_MOUNT = "attribute-timeout=0,entry-timeout=0,negative-timeout=0,"
VOLUME_OPTIONS = (
    ("storage.gfid2path", "off"),       # else the loser of two concurrent unlink()s can be told it succeeded
    ("client.strict-locks", "on"),      # an fd whose locks were lost in a disconnect gets EBADFD
    ("network.ping-timeout", "5"),      # default 42 s
    ("server.tcp-user-timeout", "5"),   # a silent client's locks are dropped in ~5 s, not 42 s
)
COMMAND_TIMEOUT = 60.0


class RigError(Exception):
    """Raised when the GlusterFS rig cannot be made on this machine; the message says what is missing."""


def _run(*argv: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise RigError(f"{argv[0]} is not installed ({e})") from e
    except subprocess.TimeoutExpired as e:
        raise RigError(f"`{' '.join(argv)}` did not finish within {timeout:g}s") from e
    if check and result.returncode != 0:
        raise RigError(f"`{' '.join(argv)}` failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")
    return result


def gluster(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("gluster", "--mode=script", *args, check=check)


# -- processes and owners --------------------------------------------------------------------------

def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process for life."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(owner: str) -> bool:
    pid, _, started = owner.partition(" ")
    return pid.isdigit() and _start_time(int(pid)) == started


def _me() -> str:
    return f"{os.getpid()} {_start_time(os.getpid())}"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _gluster_pids(needle: str) -> list[int]:
    """Pids of gluster processes (glusterfs clients, glusterfsd bricks) with `needle` in their command line."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = _cmdline(int(entry.name))
            if argv and Path(argv[0]).name.startswith("glusterfs") and any(needle in a for a in argv):
                pids.append(int(entry.name))
    return pids


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """One process at a time starts or stops glusterd and clears leftovers."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# -- hosts and volumes -----------------------------------------------------------------------------

@dataclass
class Host:
    """One simulated host: a FUSE mount of the volume; with a network namespace when it can be cut off."""

    name: str
    mount: Path
    netns: str | None = None
    link: str | None = None  # the bridge side of its veth: down = partitioned

    def cut(self) -> None:
        """Partition this host from the file server (its FUSE client keeps running, unanswered)."""
        if self.link is None:
            raise RigError(f"{self.name}: not a partition-capable host (use the partition variant)")
        _run("ip", "link", "set", self.link, "down")

    def heal(self) -> None:
        if self.link is None:
            raise RigError(f"{self.name}: not a partition-capable host (use the partition variant)")
        _run("ip", "link", "set", self.link, "up")

    def client_pid(self) -> int | None:
        """The pid of this host's FUSE client (SIGKILL it to simulate the host's death)."""
        pids = _gluster_pids(str(self.mount))
        return pids[0] if pids else None


@dataclass
class Volume:
    name: str
    strict: bool
    partition: bool
    hosts: list[Host] = field(default_factory=list)
    subnet: int | None = None

    def folders(self, relative: str) -> list[Path]:
        """`relative` as each host sees it, in host order; made (through the first host) if missing."""
        (self.hosts[0].mount / relative).mkdir(parents=True, exist_ok=True)
        return [host.mount / relative for host in self.hosts]

    @property
    def state(self) -> Path:
        return STATE / self.name


def _server_address(subnet: int | None) -> str:
    # The CLI refuses 127.0.0.1 and localhost even with force; the hostname is accepted (SHARED-FS-NOTES §5).
    return socket.gethostname() if subnet is None else f"10.253.{subnet}.1"


def _bridge(subnet: int) -> str:
    return f"spoold-br{subnet}"


def _netns(subnet: int, i: int) -> str:
    return f"spoold-{subnet}-h{i}"


def _veth(subnet: int, i: int) -> str:
    return f"spoold-{subnet}h{i}"  # at most 15 characters: subnet < 256, i < 10


def _free_subnet() -> int:
    taken = {int(p.read_text()) for p in STATE.glob(f"{PREFIX}*/subnet") if p.read_text().strip().isdigit()}
    for subnet in range(1, 250):
        if subnet not in taken and not Path(f"/sys/class/net/{_bridge(subnet)}").exists():
            return subnet
    raise RigError("no free 10.253.X.0/24 subnet for the partition variant")


def _make_network(subnet: int, count: int) -> list[tuple[str, str]]:
    net = f"10.253.{subnet}"
    bridge = _bridge(subnet)
    _run("ip", "link", "add", bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{net}.1/24", "dev", bridge)
    _run("ip", "link", "set", bridge, "up")
    made = []
    for i in range(1, count + 1):
        ns, veth = _netns(subnet, i), _veth(subnet, i)
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "link", "set", veth, "master", bridge, "up")
        _run("ip", "-n", ns, "addr", "add", f"{net}.{10 + i}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        made.append((ns, veth))
    return made


def _remove_network(subnet: int) -> None:
    for i in range(1, 10):
        ns = _netns(subnet, i)
        if Path(f"/run/netns/{ns}").exists():
            _run("ip", "netns", "del", ns, check=False)  # takes its veth with it
    if Path(f"/sys/class/net/{_bridge(subnet)}").exists():
        _run("ip", "link", "del", _bridge(subnet), check=False)


def _mounted_under(folder: Path) -> list[Path]:
    """Mount points at or below `folder`, deepest first (/proc/self/mountinfo, field 5, octal escapes)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            point = Path(fields[4].encode().decode("unicode_escape"))
            if point == folder or folder in point.parents:
                points.append(point)
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def _unmount(point: Path) -> None:
    """Unmount, lazily if the mount is busy or hung, and end its FUSE client: nothing stays behind."""
    clients = _gluster_pids(str(point))
    if _run("umount", str(point), check=False, timeout=20).returncode != 0:
        _run("umount", "-l", str(point), check=False, timeout=20)
    deadline = time.monotonic() + 5
    while any(_running(p) for p in clients) and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill([p for p in clients if _running(p)])


def _remove_volume(name: str) -> None:
    state = STATE / name
    subnet_file = state / "subnet"
    subnet = int(subnet_file.read_text()) if subnet_file.is_file() else None
    if subnet is not None:  # a cut host would make its umount hang
        for i in range(1, 10):
            if Path(f"/sys/class/net/{_veth(subnet, i)}").exists():
                _run("ip", "link", "set", _veth(subnet, i), "up", check=False)
    for point in _mounted_under(MOUNTS / name):
        _unmount(point)
    if _glusterd_answers():
        gluster("volume", "stop", name, "force", check=False)
        gluster("volume", "delete", name, check=False)
    _kill(_gluster_pids(f"{name}.") + _gluster_pids(f"/{name}"))  # bricks and clients glusterd no longer knows
    if subnet is not None:
        _remove_network(subnet)
    shutil.rmtree(MOUNTS / name, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)


def _glusterd_answers() -> bool:
    try:
        return gluster("pool", "list", check=False).returncode == 0
    except RigError:
        return False


def _volume_names(*, ours: bool = True) -> list[str]:
    """Volumes glusterd knows (ours: named PREFIX...); it prints "No volumes present in cluster" for none."""
    if not _glusterd_answers():
        return []
    out = gluster("volume", "list", check=False).stdout
    names = [line.strip() for line in out.splitlines() if line.strip() and " " not in line.strip()]
    return [name for name in names if name.startswith(PREFIX) or not ours]


def clean_leftovers() -> list[str]:
    """Remove every volume, mount, client and network of ours whose owning process is gone; their names."""
    names = set(_volume_names()) | {p.name for p in STATE.glob(f"{PREFIX}*") if p.is_dir()}
    if MOUNTS.is_dir():
        names |= {p.name for p in MOUNTS.iterdir() if p.name.startswith(PREFIX)}
    gone = []
    for name in sorted(names):
        owner = STATE / name / "owner"
        if owner.is_file() and _owner_alive(owner.read_text().strip()):
            continue
        _remove_volume(name)
        gone.append(name)
    return gone


def _check_machine() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (mounts, bricks and network namespaces need it)")
    if not Path("/dev/fuse").exists():
        problems.append("no /dev/fuse (load the fuse module, or give the container --device /dev/fuse)")
    for tool in ("glusterd", "gluster", "mount.glusterfs"):
        if shutil.which(tool) is None:
            problems.append(f"no {tool} (apt-get install glusterfs-server glusterfs-client)")
    if problems:
        raise RigError("; ".join(problems))


class Rig:
    """glusterd (shared by every process using the rig) and this process's volumes."""

    def __init__(self) -> None:
        self.volumes: dict[tuple[bool, bool, int], Volume] = {}
        self.started_glusterd = False

    def start(self) -> None:
        _check_machine()
        with _machine_lock():
            if not _glusterd_answers():
                clean_leftovers()  # clears mounts and networks; glusterd restarts the old bricks, removed below
                GLUSTERD_PID.unlink(missing_ok=True)
                _run("glusterd", "-p", str(GLUSTERD_PID), f"--log-file={STATE / 'glusterd.log'}")
                deadline = time.monotonic() + 20
                while not _glusterd_answers():
                    if time.monotonic() > deadline:
                        raise RigError(f"glusterd did not answer within 20s (see {STATE / 'glusterd.log'})")
                    time.sleep(0.1)
            clean_leftovers()
            USERS.mkdir(exist_ok=True)
            (USERS / str(os.getpid())).write_text(_me())

    def volume(self, *, strict: bool = False, partition: bool = False, hosts: int = 3) -> Volume:
        """This process's volume of that kind, made on first use and kept for the session."""
        key = (strict, partition, hosts)
        if key not in self.volumes:
            variant = ("s" if strict else "d") + ("p" if partition else "") + str(hosts)
            name = f"{PREFIX}{os.getpid()}-{variant}"
            with _machine_lock():
                volume = Volume(name, strict, partition)
                self.volumes[key] = volume  # registered first: a failure half-way is still torn down
                volume.state.mkdir(parents=True, exist_ok=True)
                (volume.state / "owner").write_text(_me())
                if partition:
                    volume.subnet = _free_subnet()
                    (volume.state / "subnet").write_text(str(volume.subnet))
            self._make(volume, hosts)
        return self.volumes[key]

    def _make(self, volume: Volume, count: int) -> None:
        brick = volume.state / "brick"
        brick.mkdir(parents=True)
        networks = _make_network(volume.subnet, count) if volume.subnet is not None else []
        server = _server_address(volume.subnet)
        gluster("volume", "create", volume.name, f"{server}:{brick}", "force")
        options = [*VOLUME_OPTIONS, *((f"performance.{o}", "off") for o in STRICT_OFF if volume.strict)]
        for key, value in options:
            gluster("volume", "set", volume.name, key, value)
        gluster("volume", "start", volume.name)
        mount_options = (STRICT_MOUNT if volume.strict else "")
        for i in range(1, count + 1):
            host = Host(f"host{chr(ord('A') + i - 1)}", MOUNTS / volume.name / f"h{i}")
            host.mount.mkdir(parents=True, exist_ok=True)
            argv = ["mount", "-t", "glusterfs", "-o", f"{mount_options}log-file={volume.state / f'h{i}.log'}",
                    f"{server}:/{volume.name}", str(host.mount)]
            if networks:
                host.netns, host.link = networks[i - 1]
                argv = ["nsenter", f"--net=/run/netns/{host.netns}", *argv]
            _run(*argv)
            volume.hosts.append(host)
            if not os.path.ismount(host.mount):
                raise RigError(f"{host.mount}: mount -t glusterfs returned 0 but nothing is mounted "
                               f"(see {volume.state / f'h{i}.log'})")

    def close(self) -> None:
        with _machine_lock():
            for volume in self.volumes.values():
                _remove_volume(volume.name)
            self.volumes.clear()
            (USERS / str(os.getpid())).unlink(missing_ok=True)
            stop_unused_glusterd()


def stop_unused_glusterd() -> None:
    """Stop the glusterd a rig started once no live process uses it and it serves no volume (lock held)."""
    users = [u for u in USERS.glob("*") if _owner_alive(u.read_text().strip())] if USERS.is_dir() else []
    if not users and not _volume_names(ours=False) and GLUSTERD_PID.is_file():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(GLUSTERD_PID.read_text().strip()), signal.SIGTERM)
        GLUSTERD_PID.unlink(missing_ok=True)


# -- pytest fixtures -------------------------------------------------------------------------------

def _fail(e: Exception) -> NoReturn:
    pytest.fail(f"the GlusterFS test rig cannot be made on this machine: {e}", pytrace=False)


@pytest.fixture(scope="session")
def gluster_rig() -> Iterator[Rig]:
    """glusterd is up and leftovers of killed runs are gone; every volume made through it is removed at the end."""
    rig = Rig()
    try:
        problem = None
        try:
            rig.start()
        except RigError as e:
            problem = e
        if problem is not None:
            _fail(problem)  # outside the except: the reason alone, not a chained traceback
        yield rig
    finally:
        rig.close()


VolumeMaker = Callable[..., Volume]


@pytest.fixture(scope="session")
def shared_volume(gluster_rig: Rig) -> VolumeMaker:
    """`shared_volume(strict=False, partition=False, hosts=3)`: a volume of that kind for the session."""
    def make(*, strict: bool = False, partition: bool = False, hosts: int = 3) -> Volume:
        problem = None
        try:
            return gluster_rig.volume(strict=strict, partition=partition, hosts=hosts)
        except RigError as e:
            problem = e
        _fail(problem)
    return make


@pytest.fixture(scope="session")
def sharedfs(shared_volume: VolumeMaker) -> Volume:
    """Default caches (realistic: about 1 s stale stat and content), three plain mounts."""
    return shared_volume()


@pytest.fixture(scope="session")
def sharedfs_strict(shared_volume: VolumeMaker) -> Volume:
    """Performance translators off and zero mount timeouts: the hosts' views agree within milliseconds."""
    return shared_volume(strict=True)


@pytest.fixture(scope="session")
def sharedfs_partition(shared_volume: VolumeMaker) -> Volume:
    """Three hosts in their own network namespaces: `host.cut()` partitions one (partition_dir heals them)."""
    return shared_volume(partition=True)


@pytest.fixture
def shared_dir(request: pytest.FixtureRequest, sharedfs: Volume) -> Iterator[list[Path]]:
    """A fresh folder on the default volume, as each host sees it (host order); removed after the test."""
    yield from _fresh(request, sharedfs)


def _fresh(request: pytest.FixtureRequest, volume: Volume) -> Iterator[list[Path]]:
    relative = f"t{os.getpid()}-{request.node.name}"[:120].replace("/", "_")
    folders = volume.folders(relative)
    try:
        yield folders
    finally:
        for host in volume.hosts:
            if host.link is not None:
                host.heal()
        shutil.rmtree(folders[0], ignore_errors=True)


@pytest.fixture
def partition_dir(request: pytest.FixtureRequest, sharedfs_partition: Volume) -> Iterator[list[Path]]:
    """A fresh folder on the partition-capable volume; every host is healed after the test."""
    yield from _fresh(request, sharedfs_partition)


if __name__ == "__main__":
    if sys.argv[1:] != ["cleanup"]:
        sys.exit(f"usage: {sys.argv[0]} cleanup")
    with _machine_lock():
        print("\n".join(clean_leftovers()) or "nothing left behind")
        stop_unused_glusterd()
