"""The runs: throughput (every job handed over first), latency (one job at a time to idle workers) and the
scale run (spoold on a large ready backlog), each in a fresh folder and within the run's time budget.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processes import PROCS, Monitor, children_cpu_seconds, log, pid_cpu_seconds
from systems import KINDS, Spoold, System, write_backlog

KIND_LABEL = {"noop": "no-op", "sleep": "sleep 10 ms"}

SCALES: dict[str, dict[str, Any]] = {
    # jobs per throughput run; latency samples and their rate; the scale run's backlogs and measuring window;
    # the spawn floor's (smaller) runs; the time budget after which the remaining runs are skipped.
    "full": {"noop": 5000, "sleep": 1000, "latency_jobs": 150, "latency_rate": 10.0,
             "scale_files": 100_000, "scale_base": 1000, "scale_window": 300, "scale_later": (1000, 2000),
             "scale_limit_s": 90,
             "spawn_floor": {"noop": 500, "sleep": 100}, "budget_s": 16 * 60},
    "small": {"noop": 300, "sleep": 100, "latency_jobs": 30, "latency_rate": 10.0,
              "scale_files": 10_000, "scale_base": 1000, "scale_window": 100, "scale_later": (1000, 1500),
              "scale_limit_s": 45,
              "budget_s": 5 * 60},
    "tiny": {"noop": 40, "sleep": 20, "latency_jobs": 10, "latency_rate": 10.0,
             "scale_files": 500, "scale_base": 100, "scale_window": 30, "scale_later": (100, 200),
             "scale_limit_s": 20,
             "budget_s": 3 * 60},
}


@dataclass
class Record:
    """What the job bodies wrote: first start and end per seq (warm-up jobs have seq < 0)."""

    starts: dict[int, float] = field(default_factory=dict)
    ends: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0

    @classmethod
    def read(cls, path: Path) -> Record:
        record = cls()
        with contextlib.suppress(FileNotFoundError), path.open() as handle:
            for line in handle:
                parts = line.split()
                if len(parts) != 4:
                    continue
                seq, start, end = int(parts[0]), float(parts[1]), float(parts[2])
                if seq in record.starts:
                    record.duplicates += 1
                    continue
                record.starts[seq], record.ends[seq] = start, end
        return record


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Budget:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


class Bench:
    def __init__(self, scale: str, root: Path) -> None:
        self.scale = scale
        self.sizes = SCALES[scale]
        self.root = root
        self.budget = Budget(float(os.environ.get("BENCH_BUDGET_S", self.sizes["budget_s"])))
        self.counter = 0

    def run_dir(self, system: System, what: str) -> Path:
        self.counter += 1
        path = self.root / f"{self.counter:02d}-{system.key}-{what}"
        path.mkdir()
        return path

    def cleanup(self, path: Path) -> None:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(path, ignore_errors=True)

    def throughput(self, system: System, kind: str, n: int) -> dict[str, Any]:
        """All n jobs handed over first; then the workers start; jobs/s = n / (last job end - start)."""
        run_dir = self.run_dir(system, kind)
        result: dict[str, Any] = {"jobs": n}
        try:
            system.setup(run_dir, kind)
            record = run_dir / "record.txt"
            t_submit = time.perf_counter()
            for seq in range(n):
                system.submit(kind, seq, record)
            system.flush()
            result["submit_s"] = round(time.perf_counter() - t_submit, 3)
            os.sync()  # the submitters' writes are not the workers' cost
            time.sleep(0.2)
            extra = system.extra_pids()
            cpu0 = children_cpu_seconds() + sum(pid_cpu_seconds(pid) for pid in extra)
            t0 = time.time()
            procs = system.launch(kind, batch=True)
            monitor = Monitor(record, [p.pid for p in procs], extra)
            deadline = time.monotonic() + min(max(60.0, n * 0.1), max(30.0, self.budget.left()))
            state = monitor.wait_lines(n, deadline, procs)
            error = system.finish(procs, monitor, batch=True)
            cpu = children_cpu_seconds() + sum(pid_cpu_seconds(pid) for pid in extra) - cpu0
            got = Record.read(record)
            done = [s for s in got.starts if s >= 0]
            if state != "ok" or len(done) < n:
                raise RuntimeError(f"{state}: {len(done)} of {n} jobs started; {error or ''} {tail(system.log_path())}")
            last_end = max(got.ends[s] for s in done)
            elapsed = last_end - t0
            result.update(
                ok=True, seconds=round(elapsed, 3), jobs_per_s=round(n / elapsed, 1),
                first_start_s=round(min(got.starts[s] for s in done) - t0, 3),
                cpu_ms_per_job=round(cpu * 1000 / n, 2),
                daemon_cpu_ms_per_job=(None if monitor.daemon_cpu_per_job_s is None
                                       else round(monitor.daemon_cpu_per_job_s * 1000, 3)),
                daemon_cpu_ms_per_job_whole_run=round(monitor.daemon_cpu_s * 1000 / n, 3),
                daemon_peak_rss_mb=monitor.daemon_peak_mb, all_peak_rss_mb=monitor.all_peak_mb,
                duplicates=got.duplicates, error=error)
            if getattr(system, "drain_exit_at", None):
                result["drain_exit_s"] = round(system.drain_exit_at - t0, 3)  # type: ignore[attr-defined]
        except Exception as e:  # one failed row must not lose the others
            result.update(ok=False, error=f"{type(e).__name__}: {e}"[:600])
            log(f"{system.name} {kind}: FAILED {result['error']}")
            traceback.print_exc(file=sys.stderr)
        finally:
            PROCS.stop_all()
            self.cleanup(run_dir)
        return result

    def latency(self, system: System, m: int, rate: float) -> dict[str, Any]:
        """Workers idle and warmed up; m no-ops handed over one at a time at `rate` per second."""
        run_dir = self.run_dir(system, "latency")
        result: dict[str, Any] = {"jobs": m, "rate_per_s": rate}
        try:
            system.setup(run_dir, "noop")
            record = run_dir / "record.txt"
            procs = system.launch("noop", batch=False)
            monitor = Monitor(record, [p.pid for p in procs], system.extra_pids())
            for seq in (-1, -2):  # warm-up: the workers are up and have imported the job module
                system.submit("noop", seq, record)
            if monitor.wait_lines(2, time.monotonic() + 60, procs) != "ok":
                raise RuntimeError(f"warm-up jobs did not run; {tail(system.log_path())}")
            time.sleep(1.0)
            drops: dict[int, float] = {}
            t_start = time.monotonic()
            for seq in range(m):
                pause = t_start + seq / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                drops[seq] = time.time()
                system.submit("noop", seq, record)
                monitor.sample()
            state = monitor.wait_lines(m + 2, time.monotonic() + 60, procs)
            error = system.finish(procs, monitor, batch=False)
            got = Record.read(record)
            waits = [(got.starts[s] - drops[s]) * 1000 for s in drops if s in got.starts]
            if state != "ok" or len(waits) < m:
                raise RuntimeError(f"{state}: {len(waits)} of {m} jobs started; {error or ''}")
            result.update(ok=True, p50_ms=round(percentile(waits, 0.50), 2), p90_ms=round(percentile(waits, 0.90), 2),
                          p99_ms=round(percentile(waits, 0.99), 2), max_ms=round(max(waits), 2),
                          mean_ms=round(sum(waits) / len(waits), 2), error=error)
        except Exception as e:
            result.update(ok=False, error=f"{type(e).__name__}: {e}"[:600])
            log(f"{system.name} latency: FAILED {result['error']}")
            traceback.print_exc(file=sys.stderr)
        finally:
            PROCS.stop_all()
            self.cleanup(run_dir)
        return result

    def scale_run(self, system: Spoold, backlog: int, window: int,
                  later: tuple[int, int] | None = None) -> dict[str, Any]:
        """`backlog` ready no-ops, then `spoold start`: time to the first start, jobs/s over the first
        `window` jobs (the start-up scan of the backlog runs meanwhile), jobs/s over jobs `later` (from,
        to: past the start-up, at almost the whole backlog), the daemon's peak RSS; then SIGTERM."""
        run_dir = self.run_dir(system, f"scale{backlog}")
        result: dict[str, Any] = {"backlog": backlog, "window": window}
        try:
            system.setup(run_dir, "noop")
            record = run_dir / "record.txt"
            t_write = time.perf_counter()
            result["writer"] = write_backlog(system.config, record, backlog)
            os.sync()
            result["write_s"] = round(time.perf_counter() - t_write, 1)
            time.sleep(0.5)
            t0 = time.time()
            procs = system.launch("noop", batch=False)
            monitor = Monitor(record, [p.pid for p in procs])
            limit_s = min(self.sizes["scale_limit_s"], max(20.0, self.budget.left() - 30))
            later = later if later is not None and backlog >= later[1] else None
            state = monitor.wait_lines(max(window, later[1] if later else 0), time.monotonic() + limit_s, procs)
            t_stop = time.time()
            error = system.finish(procs, monitor, batch=False)
            result["stop_s"] = round(time.time() - t_stop, 2)
            every = sorted(Record.read(record).starts.values())
            if later is not None and len(every) >= later[1]:
                span = every[later[1] - 1] - every[later[0]]
                result.update(later=list(later), later_jobs_per_s=round((later[1] - later[0] - 1) / span, 1))
            starts = every[:window]
            if len(starts) < 2:
                raise RuntimeError(f"{state}: {len(starts)} of {window} jobs started in {limit_s:.0f} s; "
                                   f"{error or ''} {tail(system.log_path())}")
            result.update(ok=True, started=len(starts), first_start_s=round(starts[0] - t0, 3),
                          daemon_peak_rss_mb=monitor.daemon_peak_mb, all_peak_rss_mb=monitor.all_peak_mb,
                          error=error)
            if len(starts) == window:
                result["jobs_per_s"] = round((window - 1) / (starts[-1] - starts[0]), 1)
            else:  # cut off at the time limit: the rate over the time it had, not over the jobs it managed
                result.update(partial=True, measured_s=round(t_stop - starts[0], 1),
                              jobs_per_s=round(len(starts) / (t_stop - starts[0]), 1))
                log(f"{system.name} scale {backlog}: only {len(starts)} of {window} jobs started in {limit_s:.0f} s")
        except Exception as e:
            result.update(ok=False, error=f"{type(e).__name__}: {e}"[:600])
            log(f"{system.name} scale {backlog}: FAILED {result['error']}")
            traceback.print_exc(file=sys.stderr)
        finally:
            PROCS.stop_all()
            self.cleanup(run_dir)
        return result

def tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "log: " + " | ".join(text[-lines:])


def run_throughput(bench: Bench, system: System, row: dict[str, Any]) -> None:
    for kind in KINDS:
        n = system.jobs(kind, bench.sizes[kind])
        if bench.budget.left() < 30:
            row[kind] = {"ok": False, "error": "skipped: time budget spent"}
            continue
        log(f"throughput: {system.name}, {n:,} × {KIND_LABEL[kind]}")
        run = bench.throughput(system, kind, n)
        row[kind] = run
        if run.get("ok"):
            log(f"  {run['jobs_per_s']:,} jobs/s, {run['cpu_ms_per_job']} CPU ms/job "
                f"(daemon alone {run['daemon_cpu_ms_per_job']}), "
                f"daemon {run['daemon_peak_rss_mb']} MB, all {run['all_peak_rss_mb']} MB")


def run_latency(bench: Bench, system: System, row: dict[str, Any]) -> None:
    jobs, rate = bench.sizes["latency_jobs"], bench.sizes["latency_rate"]
    if bench.budget.left() < 30:
        row["latency"] = {"ok": False, "error": "skipped: time budget spent"}
        return
    log(f"latency: {system.name}, {jobs} no-ops at {rate:g}/s")
    run = bench.latency(system, jobs, rate)
    row["latency"] = run
    if run.get("ok"):
        log(f"  p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms")


def scale_variants(spoolds: list[Spoold]) -> list[Spoold]:
    """One per isolation mode that runs here, with the default durability (fsync) when it can."""
    chosen: dict[str, Spoold] = {}
    for variant in spoolds:
        if variant.keys is not None and (variant.isolation not in chosen or variant.durability == "fsync"):
            chosen.setdefault(variant.isolation, variant)
    return list(chosen.values())


def run_scale(bench: Bench, variant: Spoold) -> dict[str, Any]:
    sizes = bench.sizes
    entry: dict[str, Any] = {"key": variant.key, "name": variant.name, "runs": []}
    for backlog in (sizes["scale_base"], sizes["scale_files"]):
        if bench.budget.left() < 45:
            entry["runs"].append({"backlog": backlog, "window": sizes["scale_window"], "ok": False,
                                  "error": "skipped: time budget spent"})
            continue
        log(f"scale: {variant.name}, {backlog:,} ready files, first {sizes['scale_window']} jobs")
        run = bench.scale_run(variant, backlog, sizes["scale_window"], tuple(sizes["scale_later"]))
        entry["runs"].append(run)
        if run.get("ok"):
            log(f"  first start after {run['first_start_s']} s, {run['jobs_per_s']} jobs/s, "
                f"later {run.get('later_jobs_per_s', '—')} jobs/s, "
                f"daemon {run['daemon_peak_rss_mb']} MB (backlog written in {run['write_s']} s)")
    return entry
