"""Several hosts on one GlusterFS spool (issue 12, point 4; SPEC §11): real daemons, real faults.

A `Cluster` is N simulated hosts, each a FUSE mount of one volume (tests/sharedfs.py), each running D
daemons started as that host (a UTS namespace of its own, tests/hosts.py), each host with its own local
bgjobs.toml (spool_dir = that host's mount), log_dir and copy of the tests' `jobs` namespace. The jobs are
`Record` jobs: every run writes its own file (token, host, pid, monotonic start, then end) on local disk,
so overlaps and duplicates are counted from the runs themselves, never from the daemons' logs.

`run_fault(cluster, fault, jobs)` is one scenario: a batch of jobs, one fault once a fifth of them are
done ("kill": one daemon's whole process tree SIGKILLed; "freeze": one daemon SIGSTOPped past its lease,
then SIGCONT; "cut": one host partitioned from the file server past its lease, then healed), every job
to done/, every daemon SIGTERMed (each must exit 0), then the checks; it returns what it measured.
Used by tests/test_multihost.py (a few hundred jobs), soak/run.py (thousands) and bench/multihost.py.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conftest import BASE_CONFIG, DEFAULTS  # noqa: E402

if TYPE_CHECKING:  # imported as a pytest plugin by the tests: importing it here first would stop its rewrite
    from sharedfs import Host

HEARTBEAT = 1.0
LEASE = 6.0  # stat and content caches are ~1 s stale on the default volume
LONG_SECONDS = 8.0
STATE_FOLDERS = ("tmp", "high", "medium", "low", "scheduled", "running", "done", "failed", "rejected")

RECORD_JOB = '''

class Record:
    """One file per run, on local disk: `token host pid start`, then `end T` once it finished (multihost)."""

    def handle(self, folder: str, token: str, seconds: str = "0") -> str:
        import socket
        import time as _time
        path = Path(folder) / f"{token}.{socket.gethostname()}.{os.getpid()}.{_time.time_ns()}"
        path.write_text(f"{token} {socket.gethostname()} {os.getpid()} {_time.monotonic():.3f}\\n")
        _time.sleep(float(seconds))
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"end {_time.monotonic():.3f}\\n")
        return token
'''


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (its fork server and job children, which have sessions of their own)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(p) for p in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@dataclass
class Run:
    token: str
    host: str
    pid: int
    start: float
    end: float | None


def read_runs(records: Path) -> list[Run]:
    runs = []
    for path in records.iterdir():
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines:
            continue
        token, host, pid, start = lines[0].split()
        end = float(lines[1].split()[1]) if len(lines) > 1 else None
        runs.append(Run(token, host, int(pid), float(start), end))
    return runs


@dataclass
class Daemon:
    host: Host
    proc: subprocess.Popen[str]
    output: Path
    nodes: list[str] = field(default_factory=list)  # its node ids so far (a new one after each lost lease)

    @property
    def pid(self) -> int:
        """The daemon's own pid: the child of `unshare --fork` (hosts.py execs into spoold)."""
        children = [p for p in descendants(self.proc.pid) if p != self.proc.pid]
        if not children:
            raise RuntimeError(f"daemon under unshare {self.proc.pid} is gone")
        return children[0]


class Cluster:
    """Hosts × daemons on one spool folder of the volume; every process it starts is killed in close()."""

    def __init__(self, root: Path, hosts: list[Host], spool_relative: str, *, daemons_per_host: int = 2,
                 workers: int = 2, seconds: float = 0.3, long_every: int = 25) -> None:
        self.root, self.hosts, self.seconds, self.long_every = root, hosts, seconds, long_every
        self.daemons_per_host, self.workers = daemons_per_host, workers
        self.spool_relative = spool_relative
        self.records = root / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.daemons: list[Daemon] = []
        self.configs = {host.name: self._make_host(host) for host in hosts}

    def spool(self, host: Host | None = None) -> Path:
        return (host or self.hosts[0]).mount / self.spool_relative

    def _make_host(self, host: Host) -> Path:
        local = self.root / host.name
        local.mkdir(parents=True, exist_ok=True)
        jobs = local / "jobs"
        if not jobs.exists():
            shutil.copytree(HERE / "jobs", jobs, ignore=shutil.ignore_patterns("__pycache__"))
            with open(jobs / "__init__.py", "a", encoding="utf-8") as handle:
                handle.write(RECORD_JOB)
        (local / "scratch").mkdir(exist_ok=True)
        top = {"heartbeat_seconds": HEARTBEAT, "lease_seconds": LEASE, "observer": "auto"}
        text = "".join(f"{key} = {json.dumps(value)}\n" for key, value in top.items())
        text += BASE_CONFIG.format(**(DEFAULTS | {"workers": self.workers, "retry_attempts": 5,
                                                  "rescan_seconds": 0.5, "extra": 'Record = ["handle"]'}))
        text = text.replace('spool_dir = "spool"', f'spool_dir = "{self.spool(host)}"')
        text = text.replace('log_dir = "logs"', f'log_dir = "{local / "logs"}"')
        config = local / "bgjobs.toml"
        config.write_text(text, encoding="utf-8")
        return config

    # -- daemons -------------------------------------------------------------------------------------------

    def start(self, host: Host) -> Daemon:
        local = self.root / host.name
        output = local / f"daemon-{sum(d.host is host for d in self.daemons)}.out"
        command = [sys.executable, "-m", "spoold", "start", "--config", str(self.configs[host.name])]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(local / "scratch"))
        with output.open("w", encoding="utf-8") as out:
            proc = subprocess.Popen(["unshare", "--uts", "--fork", sys.executable, str(HERE / "hosts.py"), host.name,
                                     "--", *command], cwd=local, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
        daemon = Daemon(host, proc, output)
        self.daemons.append(daemon)
        return daemon

    def start_all(self) -> None:
        for host in self.hosts:
            for _ in range(self.daemons_per_host):
                self.start(host)
        deadline = time.monotonic() + 60
        while not all(self.node_of(d) for d in self.daemons):
            for daemon in self.daemons:
                if daemon.proc.poll() is not None:
                    raise RuntimeError(f"daemon on {daemon.host.name} exited at start: {daemon.output.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("not every daemon joined the spool within 60s")
            time.sleep(0.1)

    def node_folders(self, through: Host | None = None) -> list[str]:
        try:
            return [n for n in os.listdir(self.spool(through) / "running") if not n.startswith(".")]
        except OSError:
            return []

    def node_of(self, daemon: Daemon, through: Host | None = None) -> str | None:
        """The daemon's current node id (its folder in running/), noted in daemon.nodes."""
        try:
            prefix = f"{daemon.host.name}-{daemon.pid}-"
        except RuntimeError:
            return None
        names = [n for n in self.node_folders(through) if n.startswith(prefix)]
        for name in names:
            if name not in daemon.nodes:
                daemon.nodes.append(name)
        return names[-1] if names else None

    def held(self, node: str, through: Host, *, seized: bool = True) -> set[str]:
        """Job ids in a node's folder (its claims, and unless `seized` is off its seized copies), listed
        through `through`."""
        try:
            names = os.listdir(self.spool(through) / "running" / node)
        except OSError:
            return set()
        pattern = r"\.?(.+)\.json(?:\.moving)?" if seized else r"([^.].*)\.json"
        return {m.group(1) for n in names if (m := re.fullmatch(pattern, n))}

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every daemon; node -> exit code."""
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                with contextlib.suppress(RuntimeError, ProcessLookupError):
                    os.kill(daemon.pid, signal.SIGTERM)
        codes = {}
        for daemon in self.daemons:
            try:
                codes[",".join(daemon.nodes)] = daemon.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                codes[",".join(daemon.nodes)] = -999
        return codes

    def close(self) -> None:
        """Kill whatever is left (daemons, fork servers, job children), also after a failure."""
        for host in self.hosts:
            if host.link is not None:
                with contextlib.suppress(Exception):
                    host.heal()
        for daemon in self.daemons:
            for pid in descendants(daemon.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.proc.wait(timeout=30)

    # -- jobs ----------------------------------------------------------------------------------------------

    def submit(self, count: int, prefix: str) -> dict[str, str]:
        """`count` Record jobs, dropped through every host in turn; token -> job id."""
        from spoold import run_background_jobs

        tokens: dict[str, str] = {}
        per_host = [[f"{prefix}{i}" for i in range(count) if i % len(self.hosts) == h] for h in range(len(self.hosts))]
        for host, names in zip(self.hosts, per_host, strict=True):
            specs = [("Record", "handle", [str(self.records), token, str(self.seconds_of(token))]) for token in names]
            for token, job_id in zip(names, run_background_jobs(specs, config=self.configs[host.name]), strict=True):
                tokens[token] = job_id
        return tokens

    def seconds_of(self, token: str) -> float:
        """Every `long_every`-th job outlives a lease, so a fault finds some running that must be killed."""
        every = self.long_every
        return LONG_SECONDS if every and int(token.rsplit("-", 1)[1]) % every == every - 1 else self.seconds

    def done_count(self, through: Host | None = None) -> int:
        try:
            return sum(1 for n in os.listdir(self.spool(through) / "done") if n.endswith(".json"))
        except OSError:
            return 0

    def wait_done(self, target: int, timeout: float, through: Host | None = None) -> None:
        deadline = time.monotonic() + timeout
        while self.done_count(through) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.done_count(through)}/{target} done within {timeout:.0f}s")
            time.sleep(0.2)

    def placement(self, through: Host) -> dict[str, list[str]]:
        """Every file in the spool, seen through one mount: id -> the folders holding one (hidden ones too)."""
        where: dict[str, list[str]] = collections.defaultdict(list)
        root = self.spool(through)
        for folder in STATE_FOLDERS:
            for dirpath, _, names in os.walk(root / folder):
                for name in names:
                    where[name].append(os.path.relpath(dirpath, root))
        return dict(where)

    def recovered_lines(self) -> list[str]:
        """The job id of every `recovered` line in every host's log."""
        found = []
        for host in self.hosts:
            log = self.root / host.name / "logs" / "background_jobs.log"
            if log.exists():
                found += [job.group(1) for line in log.read_text(encoding="utf-8").splitlines()
                          if "status=recovered" in line and (job := re.search(r" job=(\S+)", line))]
        return found

    def orphaned_runs(self, through: Host) -> list[tuple[str, str]]:
        """(job id, node) of every run done/ records as Orphaned: the node that held it when it was taken over."""
        found = []
        for name in os.listdir(self.spool(through) / "done"):
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads((self.spool(through) / "done" / name).read_text(encoding="utf-8"))
                found += [(name[: -len(".json")], run.get("node", "?")) for run in doc.get("history", [])
                          if run.get("error_type") == "Orphaned"]
        return found


@dataclass
class Outcome:
    fault: str
    jobs: int
    seconds: float = 0.0
    takeover_seconds: float | None = None  # fault -> the faulted node's folder emptied by the others
    fence_seconds: float | None = None  # cut: fault -> the last of its job children gone
    held: int = 0  # jobs in the faulted daemons' folders at the fault
    ran_twice: int = 0  # jobs whose records show two runs or more (allowed only for the held ones)
    lost: int = 0  # jobs not in done/, or in it more than once, or elsewhere too
    runs: int = 0
    rejoined: int = 0
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_fault(cluster: Cluster, fault: str, jobs: int, *, timeout: float = 240.0) -> Outcome:
    """One scenario on a fresh cluster (not started yet): start, submit, fault, finish, stop, check."""
    outcome = Outcome(fault, jobs)
    began = time.monotonic()
    cluster.start_all()
    tokens = cluster.submit(jobs, prefix=f"{fault}-")
    healthy = cluster.hosts[0]
    victim_host = cluster.hosts[-1]
    victims = [d for d in cluster.daemons if d.host is victim_host]
    if fault != "cut":
        victims = victims[:1]
    cluster.wait_done(max(1, jobs // 5), timeout, through=healthy)
    victim_nodes = [n for d in victims if (n := cluster.node_of(d))]
    fault_at = time.monotonic()
    held = _inject(cluster, fault, victims, victim_nodes, healthy)
    outcome.held = len(held)
    # Its claims (not the copies it had seized, which stay for it: H3), listed while it cannot move them.
    claimed = {j for n in victim_nodes for j in cluster.held(n, healthy, seized=False)}
    _await_takeover(cluster, outcome, victim_nodes, victim_host, healthy, fault_at)
    if fault in ("freeze", "cut") and claimed and (outcome.takeover_seconds or 0) < LEASE - HEARTBEAT:
        outcome.problems.append(f"{fault}: taken over after {outcome.takeover_seconds}s, before the lease of {LEASE}s")
    time.sleep(1.0)
    if fault == "freeze":
        # Past its lease even if it held no claim (then nothing was waited for): it must join again.
        time.sleep(max(0.0, fault_at + LEASE + HEARTBEAT - time.monotonic()))
        os.kill(victims[0].pid, signal.SIGCONT)
    elif fault == "cut":
        victim_host.heal()
    cluster.wait_done(jobs, timeout, through=healthy)
    if fault in ("freeze", "cut"):  # each faulted daemon joins again as a new node of the same process
        _await_rejoin(cluster, outcome, victims, victim_nodes, healthy)
    codes = cluster.stop_all()
    outcome.seconds = round(time.monotonic() - began, 1)
    bad = {node: code for node, code in codes.items() if code != 0 and not (fault == "kill" and code == -9)}
    if bad:
        outcome.problems.append(f"daemons did not exit 0 on SIGTERM: {bad}")
    time.sleep(1.5)  # the mounts' stat and content caches (~1 s) settle
    outcome.problems += check_spool(cluster, tokens, healthy, victim_nodes, held, fault, outcome)
    return outcome


def _inject(cluster: Cluster, fault: str, victims: list[Daemon], victim_nodes: list[str], healthy: Host) -> set[str]:
    """The fault; returns the ids the faulted daemons held then (listed while they could not move them)."""
    if fault == "kill":  # the whole tree: daemon, fork server, job children (sessions of their own)
        tree = descendants(victims[0].proc.pid)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        held = {j for n in victim_nodes for j in cluster.held(n, healthy)}
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        victims[0].proc.wait(timeout=30)
        return held
    if fault == "freeze":
        os.kill(victims[0].pid, signal.SIGSTOP)  # the daemon only: its job children run on, and finish
    elif fault == "cut":
        victims[0].host.cut()
        time.sleep(0.3)  # requests already on the wire land; nothing more from it reaches the server
    else:
        raise ValueError(fault)
    return {j for n in victim_nodes for j in cluster.held(n, healthy)}


def _await_takeover(cluster: Cluster, outcome: Outcome, victim_nodes: list[str], victim_host: Host, healthy: Host,
                    fault_at: float) -> None:
    """The others take the faulted nodes' jobs over: their folders empty (or go), as a healthy host sees them.
    A frozen daemon still holds its lock, and the copies it had seized (mostly jobs already committed, whose
    unlink its reaper had not done yet) stay for it to finish when it wakes (docs/design.md, H3): for a
    freeze, its claims must go. For a cut: the cut host's job children must be gone when its lease ends
    (it fenced itself)."""
    cut = outcome.fault == "cut"
    seized = outcome.fault != "freeze"
    deadline = time.monotonic() + 3 * LEASE + 30
    fence_checked = False
    while True:
        now = time.monotonic()
        if cut and outcome.fence_seconds is None and not _running_at_cut(cluster, victim_host, fault_at):
            outcome.fence_seconds = round(now - fault_at, 2)
        if cut and not fence_checked and now - fault_at >= LEASE:
            fence_checked = True
            outcome.problems += _children_left(cluster, victim_host, fault_at)
        if outcome.takeover_seconds is None and not any(cluster.held(n, healthy, seized=seized) for n in victim_nodes):
            outcome.takeover_seconds = round(now - fault_at, 2)
        if outcome.takeover_seconds is not None and (fence_checked or not cut):
            break
        if now > deadline:
            outcome.problems.append(f"{outcome.fault}: its jobs were not taken over within {now - fault_at:.0f}s")
            break
        time.sleep(0.1)
    if cut:
        fenced = [r.end for r in read_runs(cluster.records) if r.host == victim_host.name and r.start < fault_at]
        outcome.details["cut_host_runs_finished_after_cut"] = sum(1 for e in fenced if e is not None and e > fault_at)
        outcome.details["cut_host_runs_killed"] = sum(1 for e in fenced if e is None)


def _await_rejoin(cluster: Cluster, outcome: Outcome, victims: list[Daemon], victim_nodes: list[str],
                  healthy: Host) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fresh = [cluster.node_of(d, healthy) for d in victims]
        if all(node is not None and node not in victim_nodes for node in fresh):
            break
        time.sleep(0.2)
    else:
        outcome.problems.append(f"{outcome.fault}: the faulted daemon(s) did not join the spool again")
    outcome.rejoined = sum(1 for d in victims if len(d.nodes) > 1)


def _running_at_cut(cluster: Cluster, host: Host, fault_at: float) -> list[Run]:
    return [r for r in read_runs(cluster.records)
            if r.host == host.name and r.start < fault_at and r.end is None and alive(r.pid)]


def _children_left(cluster: Cluster, host: Host, fault_at: float) -> list[str]:
    """At the end of the cut host's lease: none of its job children that ran at the cut may still run."""
    left = _running_at_cut(cluster, host, fault_at)
    return [f"cut: {len(left)} job child(ren) of the cut host still running {LEASE}s after the cut "
            f"(tokens {[r.token for r in left][:5]})"] if left else []


def check_spool(cluster: Cluster, tokens: dict[str, str], through: Host, victim_nodes: list[str], held: set[str],
                fault: str, outcome: Outcome) -> list[str]:
    problems = []
    where = cluster.placement(through)
    ids = set(tokens.values())
    misplaced = {i: where.get(f"{i}.json", []) for i in ids if where.get(f"{i}.json", []) != ["done"]}
    outcome.lost = len(misplaced)
    if misplaced:
        problems.append(f"{len(misplaced)} job(s) not in done/ exactly once, e.g. {dict(list(misplaced.items())[:5])}")
    # A daemon SIGKILLed while staging a file leaves its tmp/ part (reaped later, never a job).
    strangers = sorted(name for name in where if name[: -len(".json")] not in ids
                       and not (where[name] == ["tmp"] and name.startswith(".") and name.endswith(".part")))
    if strangers:
        problems.append(f"unexpected file(s) in the spool: {[(s, where[s]) for s in strangers[:5]]}")
    left = [n for n in os.listdir(cluster.spool(through) / "running")]
    if left:
        problems.append(f"left in running/ after every daemon stopped: {left}")
    runs = read_runs(cluster.records)
    outcome.runs = len(runs)
    per_token = collections.Counter(r.token for r in runs)
    never = sorted(t for t in tokens if per_token[t] == 0)
    if never:
        problems.append(f"{len(never)} job(s) never ran, e.g. {never[:5]}")
    recovered = cluster.recovered_lines()
    orphaned = cluster.orphaned_runs(through)
    wrong = [(j, n) for j, n in orphaned if n not in victim_nodes]
    if wrong:
        problems.append(f"jobs recovered from daemons that were not faulted: {wrong[:5]}")
    allowed = held | {j for j, _ in orphaned}
    twice = {tokens[t] for t, n in per_token.items() if n > 1}
    outcome.ran_twice = len(twice)
    outside = sorted(twice - allowed)
    if outside:
        problems.append(f"{len(outside)} job(s) ran twice though no faulted daemon held them, e.g. {outside[:5]}")
    outcome.details["recovered"] = len(recovered)
    if set(recovered) != {j for j, _ in orphaned}:
        problems.append(f"recovered lines {sorted(recovered)[:5]} do not match the Orphaned runs in done/")
    # Nothing the faulted daemon lost is written by it: the last run of each held job another node took over
    # is that node's. A held job nobody took over is the faulted daemon's to write: one it had seized before it
    # froze stays with it (design H3), and one it committed just before the fault may still be listed for a moment.
    by_id = {v: k for k, v in tokens.items()}
    taken_over = set(recovered) | {j for j, _ in orphaned}
    written_by_victim = []
    for job_id in held & ids & taken_over:
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            doc = json.loads((cluster.spool(through) / "done" / f"{job_id}.json").read_text(encoding="utf-8"))
            if doc["history"][-1]["node"] in victim_nodes:
                written_by_victim.append(by_id[job_id])
    if written_by_victim and fault != "kill":
        problems.append(f"{fault}: the faulted daemon wrote back {len(written_by_victim)} job(s) it had lost, "
                        f"e.g. {written_by_victim[:5]}")
    outcome.details["held_written_by_victim"] = len(written_by_victim)
    return problems
