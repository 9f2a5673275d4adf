"""The Prometheus endpoint of SPEC §10: a real daemon with metrics_port set, scraped over HTTP while it runs
jobs; its refusals at start; the folder counts it reads without listing an unchanged folder again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import Project, free_port, http_ok, read_pid, wait_for
from prometheus_client.parser import text_string_to_metric_families

from spoold.config import load_config
from spoold.paths import SpoolPaths
from spoold.spool.counts import FolderCounts

Sample = tuple[str, tuple[tuple[str, str], ...]]
ALLOWED = {"Echo", "Sleep", "Raise", "KillSelf", "WriteSentinel", "SlowSentinel", "Allocate", "KillParent", "WhoAmI",
           "SpawnGrandchild", "FailTimes", "NotSerializable", "Missing"}  # conftest's [allowed_jobs]


def scrape(port: int) -> dict[Sample, float]:
    """Every sample of one scrape, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def runs(samples: dict[Sample, float], cls: str, outcome: str) -> float:
    return value(samples, "spoold_jobs_total", **{"class": cls, "outcome": outcome})


def start_with_metrics(project: Project, *args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    daemon = project.start("--metrics-port", str(port), *args)
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/metrics"), 10, "the metrics endpoint")
    return daemon, port


def test_the_counters_histogram_and_gauges_follow_the_jobs_a_daemon_runs(project: Project, tmp_path: Path) -> None:
    project.configure(workers=2, retry_attempts=2)
    port = free_port()
    project.set_keys(metrics_port=port)
    daemon = project.start()
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/metrics"), 10, "the metrics endpoint")
    first = scrape(port)
    assert value(first, "spoold_workers") == 2 and value(first, "spoold_workers_busy") == 0
    assert all(runs(first, cls, outcome) == 0 for cls in ALLOWED
               for outcome in ("success", "failure", "retrying", "interrupted", "recovered"))

    done = [project.submit("Echo", "handle", [str(i)]) for i in range(5)]
    failed = [project.submit("Raise", "handle", ["RuntimeError", f"boom {i}"]) for i in range(2)]
    project.drop("medium", "evil.json", {"class": "Evil_Class_From_A_File", "method": "handle"})
    project.drop("high", "unlisted.json", {"class": "NotListed", "method": "handle"})
    project.drop("low", "broken.json", "{not json")

    def states_of(samples: dict[Sample, float]) -> dict[str, float]:
        return {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "spoold_jobs"}

    expected = {"high": 0, "medium": 0, "low": 0, "scheduled": 0, "running": 0, "done": 5, "failed": 2, "rejected": 3}

    def settled() -> dict[Sample, float] | None:
        samples = scrape(port)
        return samples if (runs(samples, "Echo", "success") == 5 and runs(samples, "Raise", "failure") == 2
                           and value(samples, "spoold_jobs_rejected_total") == 3
                           and states_of(samples) == expected) else None

    samples = wait_for(settled, 20, "5 successes, 2 failures and 3 rejections counted, and the files")
    assert runs(samples, "Raise", "retrying") == 4, "2 jobs x 2 retries"
    assert runs(samples, "Raise", "success") == runs(samples, "Echo", "failure") == 0
    assert value(samples, "spoold_job_duration_seconds_count", **{"class": "Echo"}) == 5
    assert value(samples, "spoold_job_duration_seconds_count", **{"class": "Raise"}) == 6, "every run, retries too"
    assert value(samples, "spoold_job_duration_seconds_bucket", **{"class": "Echo", "le": "+Inf"}) == 5
    assert 0 < value(samples, "spoold_job_duration_seconds_sum", **{"class": "Echo"}) < 5 * 30
    assert sorted(p.name for p in (project.spool / "done").iterdir()) == sorted(f"{i}.json" for i in done)
    assert len(failed) == 2 and value(samples, "spoold_oldest_ready_age_seconds") == 0

    # Busy: two long jobs fill both workers; a third waits in medium/.
    markers = [tmp_path / f"sleep{i}.pid" for i in range(2)]
    sleepers = [project.submit("Sleep", "handle", ["30", str(marker)]) for marker in markers]
    for marker in markers:
        read_pid(marker)
    waiting = project.submit("Echo", "handle", ["waits"])

    def backed_up() -> dict[Sample, float] | None:
        samples = scrape(port)
        return samples if (value(samples, "spoold_jobs", state="medium") == 1
                           and value(samples, "spoold_oldest_ready_age_seconds") >= 1.0) else None

    busy = wait_for(backed_up, 10, "the waiting job counted, and its age")
    assert value(busy, "spoold_workers_busy") == 2 and value(busy, "spoold_jobs", state="running") == 2
    assert value(busy, "spoold_oldest_ready_age_seconds") < 60
    for job_id in sleepers:
        assert project.cli("cancel", job_id, "--config", str(project.config)).returncode == 0
    wait_for(lambda: project.has("done", waiting), 10, "the waiting job runs once a worker is free")
    def cancels_counted() -> dict[Sample, float] | None:
        samples = scrape(port)
        return samples if runs(samples, "Sleep", "cancelled") == 2 else None

    after = wait_for(cancels_counted, 10, "the cancelled runs counted")
    assert value(after, "spoold_workers_busy") == 0 and runs(after, "Echo", "success") == 6

    labels = {dict(labels)["class"] for _, labels in after if "class" in dict(labels)}
    assert labels == ALLOWED, "class labels come from the allowlist only, never from a job file"
    code, out = project.stop(daemon)
    assert code == 0, out
    assert "metrics at http://127.0.0.1:" in out


def test_two_daemons_on_one_host_serve_their_own_counters_on_their_own_ports(project: Project) -> None:
    project.configure(workers=1)
    first, first_port = start_with_metrics(project)
    second, second_port = start_with_metrics(project)
    for i in range(20):
        project.submit("Echo", "handle", [str(i)])
    wait_for(lambda: len(project.names("done")) == 20, 20, "every job done")

    def both() -> tuple[dict[Sample, float], dict[Sample, float]] | None:
        pair = scrape(first_port), scrape(second_port)
        return pair if sum(runs(s, "Echo", "success") for s in pair) == 20 else None

    a, b = wait_for(both, 10, "the two daemons' counters add up to the 20 runs")
    assert value(a, "spoold_jobs", state="done") == value(b, "spoold_jobs", state="done") == 20, "the spool's own"
    assert value(a, "spoold_workers") == value(b, "spoold_workers") == 1
    for daemon in (first, second):
        code, out = project.stop(daemon)
        assert code == 0, out


def test_only_metrics_is_served_and_a_daemon_without_a_port_serves_nothing(project: Project) -> None:
    daemon, port = start_with_metrics(project)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    assert refused.value.code == 404
    refused.value.close()
    project.stop(daemon)
    plain = project.start()
    assert "metrics at" not in project.stop(plain)[1]


def test_a_port_in_use_is_a_one_line_error_and_the_daemon_never_joins_the_spool(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project.set_keys(metrics_port=port)
        result = project.cli("start", "--config", str(project.config), timeout=30)
    assert result.returncode == 2
    assert result.stderr == (f"spoold: {project.config}: metrics_port: cannot serve metrics on 127.0.0.1:{port}: "
                             "Address already in use\n")
    assert project.daemon_folders() == []


def test_without_prometheus_client_a_metrics_port_is_a_one_line_error_naming_the_extra(project: Project,
                                                                                      tmp_path: Path) -> None:
    project.set_keys(metrics_port=free_port())
    code = ("import sys; sys.modules['prometheus_client'] = None; from spoold.commands.cli import main; "
            f"sys.exit(main(['start', '--config', {str(project.config)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                            env=dict(os.environ), cwd=project.root)
    assert result.returncode == 2
    assert result.stderr == (f"spoold: {project.config}: metrics_port: serving metrics needs prometheus-client, "
                             "which is not installed: pip install 'spoold[metrics]'\n")
    assert project.daemon_folders() == []
    off = project.cli("start", "--drain", "--metrics-port", "0", "--config", str(project.config), timeout=30)
    assert off.returncode == 0, off.stderr  # --metrics-port 0 turns them off whatever the file says


def test_a_bad_metrics_port_option_is_refused_with_exit_2(project: Project) -> None:
    result = project.cli("start", "--metrics-port", "70000", "--config", str(project.config), timeout=30)
    assert (result.returncode, result.stderr) == (
        2, "spoold: --metrics-port: expected a port number from 1 to 65535, or 0 for off, got 70000\n")


# -- the folder counts behind spoold_jobs{state} ------------------------------------------------------------


def age(folder: Path, seconds: float) -> None:
    """Make the folder's last change `seconds` old, past the racy window, as if nothing touched it since."""
    then = time.time() - seconds
    os.utime(folder, (then, then))


def test_an_unchanged_folder_is_not_listed_again_and_a_changed_one_is(project: Project) -> None:
    config = load_config(project.config)
    paths = SpoolPaths(config.spool_dir)
    paths.create()
    for i in range(50):
        project.drop("done", f"job{i}.json", "{}")
    (project.spool / "done" / "2026-12-01").mkdir()
    project.drop("done/2026-12-01", "sharded.json", "{}")
    for folder in project.spool.rglob("*"):
        if folder.is_dir():
            age(folder, 10)
    counts = FolderCounts(paths)
    assert counts.counts()["done"] == 51
    listed = counts.listed
    assert counts.counts()["done"] == 51 and counts.listed == listed, "nothing changed: only stats"
    project.drop("done", "one-more.json", "{}")
    project.drop("done/2026-12-01", "another.json", "{}")
    assert counts.counts()["done"] == 53, "a small folder that changed is counted again at once"
    (project.spool / "done" / "2026-12-01" / "another.json").unlink()
    age(project.spool / "done" / "2026-12-01", 5)
    assert counts.counts()["done"] == 52


def test_a_large_changed_folder_is_counted_again_only_as_often_as_its_cost_allows(project: Project,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from spoold.spool import counts as module

    paths = SpoolPaths(load_config(project.config).spool_dir)
    paths.create()
    now = [1000.0]
    counts = FolderCounts(paths, clock=lambda: now[0])
    original = module.list_folder

    def costly(path: Path, *, ages: bool, clock: object = None) -> module.Listing | None:
        """The real listing, timed by the fake clock, and done/ as costly as one of 100,000 files."""
        listing = original(path, ages=ages)
        if listing is None:
            return None
        return module.Listing(listing.key, listing.trusted, listing.files, listing.oldest, listing.subfolders,
                              listed_at=now[0], cost=0.05 if path.name == "done" else 0.0)

    monkeypatch.setattr(module, "list_folder", costly)
    project.drop("done", "a.json", "{}")
    project.drop("high", "h.json", "{}")
    assert (counts.counts()["done"], counts.counts()["high"]) == (1, 1)
    project.drop("done", "b.json", "{}")
    project.drop("high", "h2.json", "{}")
    now[0] += 1.0
    assert (counts.counts()["done"], counts.counts()["high"]) == (1, 2), "done/ waits 200 x 0.05 s = 10 s"
    now[0] += 9.5
    assert counts.counts()["done"] == 2
