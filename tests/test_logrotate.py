"""contrib/logrotate/spoold with the real logrotate, rotating (and compressing) while a real daemon runs a few
thousand jobs: every job's `started` and `success` lines are found exactly once across the current, rotated
and compressed files.

logrotate comes from Debian (`apt-get install logrotate`, which .ci/run does when it is missing): without it
this test fails, saying so; it never skips.
"""

from __future__ import annotations

import collections
import gzip
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, Project, wait_for

from spoold.logs import parse_event_line

CONFIG = REPO / "contrib" / "logrotate" / "spoold"
JOBS = 3000
# The daemon follows a renamed log within REOPEN_CHECK_SECONDS (1 s); rotations closer than that could
# compress a file it still writes to, which the contrib file's comment rules out for real use (daily).
ROTATE_EVERY_SECONDS = 2.0


def logrotate_config(project: Project) -> Path:
    """The contrib file for this project's log folder: its path, no `su` (the test runs as whoever it is) and
    enough old files kept that none is dropped."""
    lines = []
    for line in CONFIG.read_text(encoding="utf-8").splitlines():
        if line.startswith("/srv/app/storage/logs/*.log"):
            line = line.replace("/srv/app/storage/logs", str(project.logs))
        elif line.strip().startswith("su "):
            continue
        elif line.strip().startswith("rotate "):
            line = "    rotate 1000"
        lines.append(line)
    directives = [line.strip() for line in lines if not line.lstrip().startswith("#")]
    assert {"compress", "delaycompress"} <= set(directives) and not any("copytruncate" in d for d in directives)
    text = "\n".join(lines) + "\n"
    assert f"{project.logs}/*.log {{" in text
    path = project.root / "logrotate.conf"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)  # logrotate refuses a config others may write
    return path


def all_lines(logs: Path, name: str) -> list[str]:
    lines = []
    for path in sorted(logs.glob(f"{name}*")):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines += data.decode("utf-8").splitlines()
    return lines


@pytest.mark.timeout(240)
def test_logrotate_with_compress_loses_and_repeats_no_line_while_a_daemon_runs(project: Project) -> None:
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    assert Path(logrotate).exists(), ("logrotate is not installed: `apt-get install logrotate` (.ci/run does it "
                                      "when it is missing)")
    project.configure(workers=2)
    config, state = logrotate_config(project), project.root / "logrotate.state"
    daemon = project.start()
    rotations = 0

    def rotate() -> None:
        nonlocal rotations
        done = subprocess.run([logrotate, "-f", "-s", str(state), str(config)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        rotations += 1

    with ThreadPoolExecutor(1) as pool:
        submitted = pool.submit(lambda: [project.submit("Echo", "handle", [str(i)]) for i in range(JOBS)])
        next_rotation = time.monotonic() + ROTATE_EVERY_SECONDS
        while not (submitted.done() and len(project.names("done")) == JOBS):
            if time.monotonic() >= next_rotation:
                rotate()
                next_rotation = time.monotonic() + ROTATE_EVERY_SECONDS
            time.sleep(0.05)
            assert rotations < 200, "the jobs are not getting done"
        ids = submitted.result()
    rotate()  # one more, with the daemon still writing its last lines
    wait_for(lambda: sum(1 for line in all_lines(project.logs, "background_jobs.log")
                         if " status=success" in line) >= JOBS, 10, "every success line written")
    code, out = project.stop(daemon)
    assert code == 0, out

    files = sorted(p.name for p in project.logs.iterdir())
    compressed = [name for name in files if name.endswith(".gz")]
    assert rotations >= 4 and len(compressed) >= 3, (rotations, files)
    assert "background_jobs.log.1" in files, "delaycompress: the newest rotated file stays plain"
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in all_lines(project.logs, "background_jobs.log"):
        event = parse_event_line(line)
        assert event is not None, f"a torn or foreign line: {line!r}"
        seen[(event.fields["job"], event.fields["status"])] += 1
    assert len(ids) == JOBS
    missing = [(job_id, status) for job_id in ids for status in ("started", "success") if seen[(job_id, status)] != 1]
    assert missing == [], f"{len(missing)} lines lost or repeated, e.g. {missing[:5]}"
    assert sum(seen.values()) == 2 * JOBS, "no line of anything else, and none twice"
    assert all_lines(project.logs, "background_jobs_errors.log") == []
