"""What each step of the daemon's loop costs per call, in its main thread: wall and CPU time.

    .venv/bin/python bench/loop_steps.py [JOBS] [ISOLATION] [DURABILITY]   (defaults: 3000 worker fast)

Drains JOBS no-op jobs on a throw-away project (bench/profile.py's) with a daemon whose chosen methods
are wrapped by a timer (time.perf_counter and time.thread_time around each call made in the main
thread; calls from other threads are not counted). Steps nest (a pass contains a claim, which contains
the id check), so the rows do not add up; each says what one call of that step costs. The timers add
about a microsecond per wrapped call. Prints one row per step, slowest first. Linux or macOS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from profile import BIN, make_project  # noqa: E402  (bench/profile.py, beside this file)

STEPS = [  # (module, class, method): the loop's pass, and what a job's claim, start and commit are made of
    ("spoold.daemon.loop", "Daemon", "loop_once"),
    ("spoold.daemon.loop", "Daemon", "take_and_start"),
    ("spoold.daemon.loop", "Daemon", "start"),
    ("spoold.daemon.loop", "Daemon", "collect_finished"),
    ("spoold.daemon.loop", "Daemon", "written"),
    ("spoold.spool.intake", "Intake", "take"),
    ("spoold.spool.moves", "Mover", "id_taken"),
    ("spoold.spool.moves", "Mover", "seize"),
    ("spoold.spool.moves", "Mover", "commit"),
    ("spoold.logs", "EventLog", "job_event"),
    ("spoold.execution.forkclient", "ForkServerLauncher", "_send"),
    ("spoold.execution.forkclient", "ForkServerLauncher", "pump"),
]

WRAPPER = """
import atexit, importlib, sys, threading, time
STEPS = {steps!r}
main = threading.main_thread().ident
stats = {{}}

def timed(label, method):
    def call(*args, **kwargs):
        if threading.get_ident() != main:
            return method(*args, **kwargs)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            row = stats.setdefault(label, [0, 0.0, 0.0])
            row[0] += 1
            row[1] += time.perf_counter() - wall
            row[2] += time.thread_time() - cpu
    return call

for module, owner, name in STEPS:
    cls = getattr(importlib.import_module(module), owner)
    setattr(cls, name, timed(owner + "." + name, getattr(cls, name)))

@atexit.register
def report():
    for label, (calls, wall, cpu) in sorted(stats.items(), key=lambda item: -item[1][1] / item[1][0]):
        print(f"STEP {{label}} {{calls}} {{wall / calls * 1e6:.1f}} {{cpu / calls * 1e6:.1f}}", file=sys.stderr)

from spoold.commands.cli import main as cli_main
sys.exit(cli_main(sys.argv[1:]))
"""


def main() -> int:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    isolation = sys.argv[2] if len(sys.argv) > 2 else "worker"
    durability = sys.argv[3] if len(sys.argv) > 3 else "fast"
    root = Path(tempfile.mkdtemp(prefix="spoold-loop-steps-"))
    try:
        config = make_project(root, isolation, durability, jobs)
        wrapper = root / "timed_daemon.py"
        wrapper.write_text(WRAPPER.format(steps=STEPS), encoding="utf-8")
        run = subprocess.run([str(BIN / "python"), str(wrapper), "start", "--drain", "--config", str(config)],
                             cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [line.split()[1:] for line in run.stderr.splitlines() if line.startswith("STEP ")]
    if run.returncode != 0 or not rows:
        print(run.stderr[-2000:], file=sys.stderr)
        return 1
    print(f"{jobs} no-op jobs, {isolation}/{durability}: per call, in the daemon's main thread")
    print(f"{'step':<36} {'calls':>7} {'wall µs':>9} {'CPU µs':>9}")
    for label, calls, wall, cpu in rows:
        print(f"{label:<36} {calls:>7} {float(wall):>9.1f} {float(cpu):>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
