"""Where a job's CPU goes in spoold: per process and per daemon thread, then py-spy stacks (issue 5).

    bench/.venv/bin/python bench/profile.py [JOBS] [ISOLATION] [DURABILITY]   (make bench-profile)

Two drains of JOBS no-op bench jobs on a throw-away project: the first reads every process's and
thread's CPU time from /proc (exact, no profiler in the way); the second runs under `py-spy record
--subprocesses --threads` and counts, per thread, the frames where samples landed, leaving out the
frames where a thread only waits (select, poll, a condition, a blocking read). Linux only (it reads
/proc). Writes bench/results/profile-ISOLATION-DURABILITY.md and prints it.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
# Leaf frames where a thread sleeps: not work.
IDLE = re.compile(r"Waker\.sleep|_check_inotify_fd|Condition\.wait|SimpleQueue\.get|select \(|Server\.serve"
                  r"|_read_all|ForkServerLauncher\._read \(spoold/warmstart\.py:9[0-9]\)")


def make_project(root: Path, isolation: str, durability: str, jobs: int) -> Path:
    shutil.copytree(HERE / "benchjobs", root / "benchjobs", ignore=shutil.ignore_patterns("__pycache__"))
    config = root / "bgjobs.toml"
    config.write_text(f'spool_dir = "spool"\nlog_dir = "logs"\nnamespace = "benchjobs"\nworkers = 2\n'
                      f'retry_attempts = 0\nkeep_done_days = 0\nisolation = "{isolation}"\n'
                      f'durability = "{durability}"\n[allowed_jobs]\nBenchJob = ["noop"]\n', encoding="utf-8")
    subprocess.run([sys.executable, "-c", "import sys\nfrom spoold import run_background_job\n"
                    f"for i in range({jobs}): run_background_job('BenchJob', 'noop', [i, sys.argv[1]], "
                    "config='bgjobs.toml')", str(root / "record.txt")],
                   cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=True)
    os.sync()
    return config


def cpu_ticks(pid: int, task: str | None = None) -> tuple[int, int]:
    """(own user+sys, reaped children's user+sys) in clock ticks."""
    path = f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def accounting_run(root: Path, config: Path, jobs: int) -> dict[str, float]:
    """CPU ms per job of the daemon's threads, the fork server, and the job children (via the server)."""
    proc = subprocess.Popen([str(BIN / "spoold"), "start", "--drain", "--config", str(config)], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)}, stderr=subprocess.DEVNULL)
    threads: dict[str, int] = {}  # the last reading of each, so an exited one still counts
    server: dict[str, tuple[int, int]] = {}
    helper: dict[str, int] = {}
    live: dict[str, int] = {}  # the server's children alive at the last look (long-lived workers): own ticks
    while proc.poll() is None:
        try:
            for task in os.listdir(f"/proc/{proc.pid}/task"):
                threads[task] = cpu_ticks(proc.pid, task)[0]
            for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                if child not in helper and b"spool/blanks.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                    helper[child] = 0
                if child in helper:  # the daemon's blank-file helper (spoold/spool/blanks.py): the daemon's work
                    helper[child] = cpu_ticks(int(child))[0]
                    continue
                server[child] = cpu_ticks(int(child))
                kids = Path(f"/proc/{child}/task/{child}/children").read_text().split()
                live = {kid: cpu_ticks(int(kid))[0] for kid in kids if Path(f"/proc/{kid}").exists()}
        except (OSError, ValueError, IndexError):
            pass  # a thread or process ended between the listing and the read
        time.sleep(0.02)
    result: dict[str, float] = {}
    for task, ticks in threads.items():
        name = ("daemon: main thread" if task == str(proc.pid)
                else "daemon: its other threads (lease heartbeat; in fsync mode the committer)")
        result[name] = result.get(name, 0.0) + ticks * TICK_MS / jobs
    own = sum(own for own, _ in server.values())
    children = sum(kids for _, kids in server.values()) + sum(live.values())  # reaped ones, then the rest
    result["fork server (its own work, the forks)"] = own * TICK_MS / jobs
    if helper:
        result["daemon: its blank-file helper process"] = sum(helper.values()) * TICK_MS / jobs
    result["job children (all of them)"] = children * TICK_MS / jobs
    return result


def spy_run(root: Path, config: Path, out: Path) -> None:
    subprocess.run([str(BIN / "py-spy"), "record", "--subprocesses", "--threads", "--rate", "400", "--format", "raw",
                    "-o", str(out), "--", str(BIN / "python"), "-m", "spoold", "start", "--drain", "--config",
                    str(config)], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def summarize_spy(raw: Path, top: int = 8) -> list[str]:
    per_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        parts = stack.split(";")
        if len(parts) < 3 or IDLE.search(parts[-1]):
            continue
        labels = [p for p in parts if p.startswith(("process ", "thread ("))]
        process = "fork server" if any("spoold.execution.forkserver" in p for p in labels) else "daemon"
        thread = next((re.sub(r"^thread \(\d+\):? ?", "", p) for p in labels if p.startswith("thread (")), "")
        thread = "watchdog" if re.fullmatch(r"Thread-\d+", thread) else thread or "main thread, starting"
        parts = parts[len(labels):]
        if not parts:
            continue
        frame = next((f for f in reversed(parts) if "spoold/" in f), parts[-1])
        per_thread[f"{process}, {thread}"][f"{parts[-1]}  ← {frame}" if frame != parts[-1] else frame] += int(count)
    lines = []
    for thread, frames in sorted(per_thread.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(frames.values())
        lines.append(f"\n**{thread}**: {total} busy samples\n")
        lines += [f"- {count / total * 100:4.1f} % `{frame}`" for frame, count in frames.most_common(top)]
    return lines


def main() -> int:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    isolation = sys.argv[2] if len(sys.argv) > 2 else "process"
    durability = sys.argv[3] if len(sys.argv) > 3 else "fsync"
    if not Path("/proc/self/task").is_dir() or shutil.which("py-spy", path=str(BIN)) is None:
        print("profile: needs Linux /proc and py-spy in bench/.venv (make bench-profile installs it)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="spoold-profile-"))
    try:
        first = work / "accounting"
        first.mkdir()
        cpu = accounting_run(first, make_project(first, isolation, durability, jobs), jobs)
        second = work / "spy"
        second.mkdir()
        raw = work / "spy.txt"
        spy_run(second, make_project(second, isolation, durability, jobs), raw)
        lines = [f"# Where the CPU goes: {jobs:,} no-op jobs, isolation = {isolation}, durability = {durability}",
                 "", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `bench/.venv/bin/python bench/profile.py "
                 f"{jobs} {isolation} {durability}`. 2 workers.", "", "| process / thread | CPU ms per job |",
                 "|---|---|"]
        lines += [f"| {name} | {ms:.2f} |" for name, ms in sorted(cpu.items(), key=lambda kv: -kv[1])]
        lines += [f"| **total** | **{sum(cpu.values()):.2f}** |", "",
                  "py-spy samples where a thread was working (waits left out), by the frame they landed in "
                  "and the spoold frame that called it; job children live about 2 ms, mostly too short for "
                  "py-spy to attach, so their cost is in the table above only."]
        lines += summarize_spy(raw)
        text = "\n".join(lines) + "\n"
        target = HERE / "results" / f"profile-{isolation}-{durability}.md"
        target.write_text(text, encoding="utf-8")
        print(text)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
