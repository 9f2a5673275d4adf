"""The report: the machine it ran on, the tables (with the ratios to the peers and to the fork floor), the
legend, the SVG chart, and the files written under bench/results/.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from systems import HERE, KINDS, WORKERS, System

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
    """A short hash of spoold/*.py as they are now: the bench runs the working tree, whatever its state."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "spoold").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def vm_meminfo(key: str) -> int:
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def fs_type(path: Path) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            mount = parts[1]
            inside = mount == "/" or str(path) == mount or str(path).startswith(mount + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


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


def table(report: dict[str, Any]) -> str:
    rows = report["rows"]
    by_key = {row["key"]: row for row in rows}
    peers = {"RQ": by_key.get("rq"), "Huey": by_key.get("huey"), "Huey fast-poll": by_key.get("huey-fast")}
    head = ["system", "jobs/s no-op", "jobs/s sleep 10 ms", "p50 ms", "p99 ms", "CPU ms/job no-op / sleep",
            "peak RSS MB daemon / all", *(f"÷ {name}" for name in peers), "÷ fork floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | " + " | ".join([row["status"]] + ["—"] * (len(head) - 2)) + " |")
            continue
        cpu = " / ".join(fmt(value(row, k, "cpu_ms_per_job"), 2) for k in KINDS)
        daemon = max((value(row, k, "daemon_peak_rss_mb") or 0 for k in KINDS), default=0) or None
        everything = max((value(row, k, "all_peak_rss_mb") or 0 for k in KINDS), default=0) or None
        cells = [row["name"], fmt(value(row, "noop", "jobs_per_s")), fmt(value(row, "sleep", "jobs_per_s")),
                 fmt(value(row, "latency", "p50_ms"), 1), fmt(value(row, "latency", "p99_ms"), 1), cpu,
                 f"{fmt(daemon, 1)} / {fmt(everything, 1)}"]
        is_spoold = row["family"] == "spoold"
        cells += [ratio_cell(row, peer) if is_spoold else "—" for peer in peers.values()]
        floor = by_key.get("fork-floor")
        cells.append(ratio_cell(row, floor, latency=False) if is_spoold and "process" in row["key"] else "—")
        lines.append("| " + " | ".join(cells) + " |")
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
            + (f", after: {m['loadavg_at_end'][0]:g}." if "loadavg_at_end" in m else "."))


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
            "jobs/s: jobs ÷ (last job's end − workers' launch), every job handed over first. p50/p99: drop-to-start "
            "(the submitter's clock before handing the job over → the job body's first line). CPU: user+sys of the "
            "workers' whole process tree (+ redis-server for RQ) ÷ jobs (no-op / sleep). RSS: the daemon's (each RQ "
            "worker's, Huey's consumer's) peak VmHWM / the peak sum over the whole tree (+ redis). ÷ PEER: this row's "
            "jobs/s ÷ the peer's (no-op / sleep; above 1 = faster), then p50 ÷ the peer's (below 1 = starts sooner). "
            "÷ fork floor: jobs/s ÷ the bare fork loop's (process-per-job modes only).")
