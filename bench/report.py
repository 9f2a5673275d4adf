"""The report: the machine it ran on, the tables (with the ratios to the peers and to the fork and file
floors), the issue's targets (met or not), the legend, the SVG chart, and the files written under bench/results/.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from systems import FILE_FLOOR_LOOPS, HERE, KINDS, WORKERS, System

REPO = HERE.parent
RESULTS = HERE / "results"


def machine_info(root: Path) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_gb = round(vm_meminfo("MemTotal:") / 1024 / 1024, 1)
    versions = {}
    for dist in ("huey", "rq", "redis", "psutil", "spoold", "watchdog"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
        versions["redis-server"] = next((w[2:] for w in out.split() if w.startswith("v=")), out.strip())
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "spoold"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += "+uncommitted" if dirty else ""
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "cpu_model": cpu_model, "nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "mem_gb": mem_gb, "kernel": platform.release(), "python": platform.python_version(),
            "filesystem": fs_type(root), "spoold_commit": commit, "spoold_source": source_digest(),
            "versions": versions}


def source_digest() -> str:
    """A short hash of spoold's .py files (sub-packages too) as they are now: the bench runs the working
    tree, whatever its state."""
    digest = hashlib.sha256()
    root = REPO / "spoold"
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def vm_meminfo(key: str) -> int:
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def _mount_of(path: Path) -> list[str]:
    """The /proc/mounts line (device, mount point, type, options) of the longest mount point above `path`."""
    best: list[str] = ["?", "", "?", ""]
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            mount = parts[1]
            inside = mount == "/" or str(path) == mount or str(path).startswith(mount + "/")
            if inside and len(mount) > len(best[1]):
                best = parts[:4]
    return best


def fs_type(path: Path) -> str:
    """The type of the filesystem holding `path`; for ext4, whether it keeps a journal (without one, a
    file's create skips every inode freed in the last minute or so: see fs_probe)."""
    device, _, kind, _ = _mount_of(path)
    if kind == "ext4":
        task = Path("/sys/fs/ext4") / Path(device).name / "journal_task"
        with contextlib.suppress(OSError):
            return "ext4 (no journal)" if task.read_text().strip() in ("", "<none>") else "ext4"
    return kind


PROBE_FILES = 400
PROBE_CHURN = 2000


def _timed_creates(folder: Path, stem: str, count: int) -> list[float]:
    seconds = []
    for n in range(count):
        began = time.perf_counter()
        os.close(os.open(folder / f"{stem}{n}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        seconds.append(time.perf_counter() - began)
    return seconds


def fs_probe(root: Path) -> dict[str, float]:
    """What creating a small file costs here, in µs (medians of PROBE_FILES): in a fresh folder, and
    again a second after PROBE_CHURN files were removed from it, as a spool removes its jobs' files.

    On ext4 without a journal a create steps over every inode freed between a second and a minute ago
    (six while its inode table block is dirty: the kernel's `recently_deleted`), so there the second
    figure, and spoold's rates, depend on the disk's last minutes, its own churn included; on a
    journaling filesystem both are alike. The peers make no file per job."""
    folder = Path(tempfile.mkdtemp(prefix="fs-probe-", dir=root))
    try:
        fresh = _timed_creates(folder, "fresh", PROBE_FILES)
        _timed_creates(folder, "churn", PROBE_CHURN)
        for name in os.listdir(folder):
            os.unlink(folder / name)
        time.sleep(1.1)  # an inode freed within the current second is not skipped
        churned = _timed_creates(folder, "after", PROBE_FILES)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"create_us": round(statistics.median(fresh) * 1e6, 1),
            "create_after_churn_us": round(statistics.median(churned) * 1e6, 1)}


def fmt(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return "—"
    if digits is None:
        digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "—"
    r = a / b
    return f"{r:.2f}" if r < 10 else f"{r:.1f}"


def value(row: dict[str, Any], part: str, key: str) -> float | None:
    run = row.get(part) or {}
    return run.get(key) if run.get("ok") else None


def ratio_cell(row: dict[str, Any], peer: dict[str, Any] | None, latency: bool = True) -> str:
    if peer is None or row["status"] != "ok":
        return "—"
    jobs = " / ".join(ratio(value(row, k, "jobs_per_s"), value(peer, k, "jobs_per_s")) for k in KINDS)
    if not latency:
        return jobs
    p50 = ratio(value(row, "latency", "p50_ms"), value(peer, "latency", "p50_ms"))
    return f"{jobs}; p50 {p50}"


FLOOR_OF = {"spoold-process-fsync": "fork-floor", "spoold-process-fast": "fork-floor",
            "spoold-worker-fsync": "file-floor-fsync", "spoold-worker-fast": "file-floor-fast"}


def table(report: dict[str, Any]) -> str:
    rows = report["rows"]
    by_key = {row["key"]: row for row in rows}
    peers = {"RQ": by_key.get("rq"), "Huey": by_key.get("huey"), "Huey fast-poll": by_key.get("huey-fast")}
    head = ["system", "jobs/s no-op", "jobs/s sleep 10 ms", "p50 ms", "p99 ms", "CPU ms/job no-op / sleep",
            "daemon CPU ms/job no-op / sleep", "peak RSS MB daemon / all", *(f"÷ {name}" for name in peers),
            "÷ fork floor", "÷ file floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | " + " | ".join([row["status"]] + ["—"] * (len(head) - 2)) + " |")
            continue
        cpu = " / ".join(fmt(value(row, k, "cpu_ms_per_job"), 2) for k in KINDS)
        own = ("—" if row["key"].startswith("file-floor") else  # its loops are one process and its forks
               " / ".join(fmt(value(row, k, "daemon_cpu_ms_per_job"), 2) for k in KINDS))
        daemon = max((value(row, k, "daemon_peak_rss_mb") or 0 for k in KINDS), default=0) or None
        everything = max((value(row, k, "all_peak_rss_mb") or 0 for k in KINDS), default=0) or None
        cells = [row["name"], fmt(value(row, "noop", "jobs_per_s")), fmt(value(row, "sleep", "jobs_per_s")),
                 fmt(value(row, "latency", "p50_ms"), 1), fmt(value(row, "latency", "p99_ms"), 1), cpu, own,
                 f"{fmt(daemon, 1)} / {fmt(everything, 1)}"]
        is_spoold = row["family"] == "spoold"
        cells += [ratio_cell(row, peer) if is_spoold else "—" for peer in peers.values()]
        floor_key = FLOOR_OF.get(row["key"], "") if is_spoold else ""
        for floor in ("fork-floor", "file-floor"):
            cells.append(ratio_cell(row, by_key.get(floor_key), latency=False) if floor_key.startswith(floor) else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _jobs_ratio(rows: dict[str, dict[str, Any]], key: str, peer: str) -> float | None:
    mine = value(rows.get(key) or {}, "noop", "jobs_per_s")
    theirs = value(rows.get(peer) or {}, "noop", "jobs_per_s")
    return round(mine / theirs, 2) if mine and theirs else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's targets, each with this run's figure and whether it is met (None: not measured)."""
    rows = {row["key"]: row for row in report["rows"]}
    out: list[dict[str, Any]] = []

    def add(target: str, system: str, threshold: str, shown: str, met: bool | None, **figures: Any) -> None:
        out.append({"target": target, "system": system, "threshold": threshold, "value": shown, "met": met,
                    **figures})

    for key, peer, peer_name, least in (("spoold-process-fsync", "rq", "RQ", 5.0),
                                        ("spoold-worker-fast", "huey", "Huey", 1.0),
                                        ("spoold-worker-fsync", "huey", "Huey", 0.7)):
        r = _jobs_ratio(rows, key, peer)
        add(f"no-op jobs/s ÷ {peer_name}'s", rows.get(key, {}).get("name", key), f"≥ {least:g}", fmt(r, 2),
            None if r is None else r >= least, ratio=r)
    for key in ("spoold-worker-fsync", "spoold-worker-fast"):
        ms = value(rows.get(key) or {}, "noop", "daemon_cpu_ms_per_job")
        add("daemon CPU per no-op job (its process and threads, not its children)",
            rows.get(key, {}).get("name", key), "≤ 0.4 ms", "—" if ms is None else f"{ms:.2f} ms",
            None if ms is None else ms <= 0.4, ms=ms)
    rate = report["sizes"]["latency_rate"]
    for key in FLOOR_OF:
        row = rows.get(key) or {}
        p50, p99 = value(row, "latency", "p50_ms"), value(row, "latency", "p99_ms")
        shown = "—" if p50 is None or p99 is None else f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        add(f"drop-to-start at {rate:g} jobs/s", row.get("name", key), "p50 ≤ 3 ms and p99 ≤ 10 ms", shown,
            None if p50 is None or p99 is None else p50 <= 3 and p99 <= 10, p50_ms=p50, p99_ms=p99)
    for entry in report["scale_runs"]:
        base, big = (entry["runs"] + [{}, {}])[:2]
        r = (round(big["jobs_per_s"] / base["jobs_per_s"], 2)
             if base.get("ok") and big.get("ok") and base.get("jobs_per_s") else None)
        add(f"jobs/s over the first {big.get('window', 0):,} jobs, {big.get('backlog', 0):,} ready files "
            f"÷ {base.get('backlog', 0):,}" + ("" if big.get("backlog") == 100_000 else
                                             " (fewer than the target's 100,000 at this scale)"),
            entry["name"], "≥ 0.8", fmt(r, 2), None if r is None else r >= 0.8, ratio=r)
    return out


def markdown(report: dict[str, Any]) -> str:
    """What is printed and saved as latest*.md: the header, the table, its legend, the scale run, the targets."""
    parts = [header(report), table(report), legend(report), scale_table(report), targets_table(report)]
    return "\n\n".join(parts) + "\n"


def targets_table(report: dict[str, Any]) -> str:
    lines = ["Issue 14's targets:", "", "| target | system | wanted | this run | met |", "|---|---|---|---|---|"]
    for t in report.get("targets", []):
        met = "n/a" if t["met"] is None else "met" if t["met"] else "**not met**"
        lines.append(f"| {t['target']} | {t['system']} | {t['threshold']} | {t['value']} | {met} |")
    return "\n".join(lines)


def scale_table(report: dict[str, Any]) -> str:
    head = ["spoold variant", "ready backlog", "first job started after s", "jobs/s over the first jobs",
            "daemon peak RSS MB", "throughput vs 1,000 backlog", "jobs/s later (vs 1,000 backlog)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for entry in report["scale_runs"]:
        base = entry["runs"][0] if entry["runs"] else {}
        for run in entry["runs"]:
            if not run.get("ok"):
                error = str(run.get("error", ""))[:80]
                lines.append(f"| {entry['name']} | {run['backlog']:,} | failed: {error} | — | — | — | — |")
                continue
            base_rate = base.get("jobs_per_s") if base.get("ok") else None
            later = (f"{fmt(run['later_jobs_per_s'])}, jobs {run['later'][0] + 1:,}–{run['later'][1]:,} "
                     f"({ratio(run['later_jobs_per_s'], base_rate)})" if run.get("later_jobs_per_s") else "—")
            lines.append(f"| {entry['name']} | {run['backlog']:,} | {fmt(run['first_start_s'], 2)} | "
                         f"{fmt(run['jobs_per_s'])} ({window_note(run)}) | {fmt(run['daemon_peak_rss_mb'], 1)} | "
                         f"{ratio(run['jobs_per_s'], base_rate)} | {later} |")
    return "\n".join(lines)


def window_note(run: dict[str, Any]) -> str:
    if run.get("partial"):
        return f"only {run['started']} of the first {run['window']:,} started in {run['measured_s']:g} s"
    return f"first {run['window']:,}"


def header(report: dict[str, Any]) -> str:
    m = report["machine"]
    s = report["sizes"]
    return (f"spoold bench, {m['date']}, scale {report['scale']}: {m['cpu_model']}, {m['nproc']} CPUs, "
            f"{m['mem_gb']} GB, Linux {m['kernel']}, Python {m['python']}, spool on {m['filesystem']}; "
            f"spoold {m['spoold_commit']}, Huey {m['versions'].get('huey')}, RQ {m['versions'].get('rq')}, "
            f"redis-server {m['versions'].get('redis-server')}. {WORKERS} workers each; {s['noop']:,} no-ops, "
            f"{s['sleep']:,} × sleep 10 ms; latency: {s['latency_jobs']} no-ops at {s['latency_rate']:g}/s "
            f"to idle workers. Load average before: {m['loadavg_at_start'][0]:g}"
            + (f", after: {m['loadavg_at_end'][0]:g}." if "loadavg_at_end" in m else ".") + probe_note(m))


def probe_note(machine: dict[str, Any]) -> str:
    """The filesystem's create cost (fs_probe) before and after, when the run measured it."""
    probes = [(when, machine[f"fs_probe_at_{when}"]) for when in ("start", "end") if f"fs_probe_at_{when}" in machine]
    if not probes:
        return ""
    said = "; ".join(f"{when} {p['create_us']:g} µs fresh, {p['create_after_churn_us']:g} µs after churn"
                     for when, p in probes)
    return f" A file's create on the spool's filesystem (bench/report.py, fs_probe): {said}."


def svg_chart(report: dict[str, Any]) -> str:
    rows = report["rows"]
    panels: list[tuple[str, str, str]] = [("jobs/s, no-op", "noop", "jobs_per_s"),
                                          ("jobs/s, sleep 10 ms", "sleep", "jobs_per_s"),
                                          ("p50 drop-to-start ms (lower is better)", "latency", "p50_ms")]
    colors = {"spoold": "#2b6cb0", "peer": "#dd6b20", "floor": "#a0aec0"}
    label_w, panel_w, bar_h, gap, top = 150, 250, 16, 6, 54
    height = top + len(rows) * (bar_h + gap) + 40
    width = label_w + len(panels) * (panel_w + 30) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="8" y="18" font-size="13" font-weight="bold">spoold vs Huey and RQ '
           f'({report["scale"]} run, {report["machine"]["date"][:10]}, {report["machine"]["nproc"]} CPUs, '
           f'{WORKERS} workers each)</text>']
    for i, row in enumerate(rows):
        y = top + i * (bar_h + gap)
        out.append(f'<text x="{label_w - 6}" y="{y + bar_h - 4}" text-anchor="end">{esc(row["name"])}</text>')
    for p, (title, part, key) in enumerate(panels):
        x0 = label_w + p * (panel_w + 30)
        values = [value(r, part, key) or 0 for r in rows]
        top_value = max(values, default=0) or 1
        out.append(f'<text x="{x0}" y="{top - 12}" font-weight="bold">{esc(title)}</text>')
        out.append(f'<line x1="{x0}" y1="{top - 4}" x2="{x0}" y2="{height - 30}" stroke="#333"/>')
        for i, (row, v) in enumerate(zip(rows, values, strict=True)):
            y = top + i * (bar_h + gap)
            w = max(1.0, v / top_value * (panel_w - 50)) if v else 0
            out.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colors[row["family"]]}"/>')
            missing = "n/a" if row["status"] != "ok" else "—"
            out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + bar_h - 4}">{fmt(v) if v else missing}</text>')
    legend_y = height - 12
    for j, (family, label) in enumerate((("spoold", "spoold"), ("peer", "peers"), ("floor", "floors"))):
        x = label_w + j * 90
        out.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colors[family]}"/>')
        out.append(f'<text x="{x + 16}" y="{legend_y}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_atomic(path: Path, text: str) -> None:
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)


def save(report: dict[str, Any], markdown: str) -> list[Path]:
    """full: latest.* and a dated JSON; small: latest-small.*; tiny (a smoke test of the harness): nothing."""
    if report["scale"] == "tiny":
        return []
    RESULTS.mkdir(exist_ok=True)
    stem = "latest" if report["scale"] == "full" else f"latest-{report['scale']}"
    data = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    written = [RESULTS / f"{stem}.json", RESULTS / f"{stem}.svg", RESULTS / f"{stem}.md"]
    write_atomic(written[0], data)
    write_atomic(written[1], svg_chart(report))
    write_atomic(written[2], markdown)
    if report["scale"] == "full":
        dated = RESULTS / f"{report['machine']['date'][:19].replace(':', '')}.json"
        write_atomic(dated, data)
        written.append(dated)
    return written


def new_row(system: System) -> dict[str, Any]:
    unavailable = getattr(system, "unavailable", None)
    return {"key": system.key, "name": system.name, "family": system.family, "notes": system.notes,
            "status": f"n/a ({unavailable})" if unavailable else "ok", "config": getattr(system, "keys", None)}


def legend(report: dict[str, Any]) -> str:
    spawn: dict[str, Any] = next((r for r in report["rows"] if r["key"] == "spawn-floor"), {})
    counts = " / ".join(f"{(spawn.get(k) or {}).get('jobs', 0):,}" for k in KINDS)
    sizes = " / ".join(f"{report['sizes'][k]:,}" for k in KINDS)
    note = f"spawn floor: {counts} jobs (its rate is steady; fewer keep the run short). " if counts != sizes else ""
    warning = "".join(f"**{n}.** " for n in report.get("notes", []))
    return (f"{warning}{note}"
            "jobs/s: jobs ÷ (last job's end − workers' launch), every job handed over first. p50/p99: "
            "drop-to-start (the submitter's clock before handing the job over → the job body's first line). CPU: "
            "user+sys of the workers' whole process tree (+ redis-server for RQ) ÷ jobs (no-op / sleep), start-up"
            " included. daemon CPU: user+sys of the main process alone, all its threads, none of its children "
            "but spoold's blank-file helper, which does the daemon's own creates (spoold's daemon without its "
            "fork server, workers or job children; Huey's consumer without its "
            "worker processes; both RQ workers without their work horses; a floor's loop without its children), "
            "from /proc/PID/stat, between the first job's record line and the last's ÷ the jobs in between "
            "(start-up and exit left out; the whole run's figure is in the JSON). RSS: the daemon's (each RQ "
            "worker's, Huey's consumer's) peak VmHWM / the peak sum over the whole tree (+ redis). ÷ PEER: this "
            "row's jobs/s ÷ the peer's (no-op / sleep; above 1 = faster), then p50 ÷ the peer's (below 1 = starts"
            " sooner). The two floors: the fork floor is a bare loop that renames a job file in, forks a child of"
            " the daemon's size to run the body, reaps it and renames the file out, 2 at a time: the ceiling for "
            "a process per job; ÷ fork floor = a process-mode row's jobs/s ÷ its. The file floor is spoold's file"
            " protocol and nothing else, the body run in-process (no child, no pipe, no log): per job the claim "
            "rename into running/NODE/, a read of the claimed file, the body, the seize rename to "
            ".ID.json.moving, the result document (about 670 bytes) written to a fresh tmp/ file (O_EXCL), "
            "fsynced (fsync only), running/NODE/ fsynced (fsync only: the claim made durable first), linked into "
            "done/, done/ fsynced (fsync only), then both copies unlinked; "
            f"{FILE_FLOOR_LOOPS} such loops in parallel (as many as spoold's workers), each one job at a time (no "
            "group commit: every job pays its own fsyncs); ÷ file floor = worker/fsync ÷ file floor fsync, "
            "worker/fast ÷ file floor fast. Below 1: what spoold adds to what the spool itself costs.")
