"""The dashboard's routes, actions and refusals (SPEC §9), served in-process over a real spool filled by a
real daemon; `spoold dashboard` itself as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, fill_for_dashboard, free_port, http_ok, read_pid, wait_for
from starlette.testclient import TestClient

from spoold.config import load_config
from spoold.dashboard import listing
from spoold.dashboard.access import Access
from spoold.dashboard.app import create_app
from spoold.dashboard.context import Dashboard
from spoold.dashboard.serve import allowed_hosts

ADMIN, READER = "admin-secret-token", "read-only-token"


def client(project: Project, access: Access | None = None) -> TestClient:
    dashboard = Dashboard(load_config(project.config), access or Access())
    return TestClient(create_app(dashboard, allowed_hosts=allowed_hosts("127.0.0.1")), base_url="http://127.0.0.1")


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def spool_tree(project: Project) -> list[str]:
    return sorted(str(p.relative_to(project.spool)) for p in project.spool.rglob("*") if p.is_file())


@pytest.fixture
def filled(project: Project) -> Iterator[dict[str, Any]]:
    """Two done, two failed (one RuntimeError, one ValueError), one hostile job waiting, one rejected file."""
    done, failed, waiting = fill_for_dashboard(project)
    yield {"done": done, "failed": failed, "waiting": waiting}


# -- pages and the read API -----------------------------------------------------------------------------


def test_every_page_renders_and_carries_the_security_headers(project: Project, filled: dict[str, Any]) -> None:
    web = client(project)
    for url in ["/", "/jobs?state=failed", "/jobs?state=low", "/jobs?state=rejected", f"/jobs/{filled['failed'][0]}",
                "/errors", "/errors?q=boom", "/stats", "/stats?window=86400", "/login", "/static/dashboard.css"]:
        response = web.get(url)
        assert response.status_code == 200, url
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert "<script>" not in web.get("/").text.replace('<script src="/static/dashboard.js" defer></script>', "")


def test_api_status_is_the_object_of_spoold_status_json(project: Project, filled: dict[str, Any]) -> None:
    web = client(project)
    response = web.get("/api/status")
    cli = json.loads(project.cli("status", "--json", "--config", str(project.config)).stdout)
    assert response.json()["counts"] == cli["counts"] == {
        "high": 0, "medium": 0, "low": 1, "scheduled": 0, "running": 0, "done": 2, "failed": 2, "rejected": 1}
    assert set(response.json()) >= {"spool", "daemons", "counts", "oldest_ready_age_seconds"}
    again = web.get("/api/status", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304, "an unchanged spool answers 304"


def test_the_job_list_is_newest_first_paged_by_a_cursor_and_reads_only_its_page(project: Project) -> None:
    ids = [project.submit("Echo", "handle", [str(i)]) for i in range(7)]
    web = client(project)
    first = web.get("/api/jobs?state=medium&limit=3").json()
    assert [j["id"] for j in first["jobs"]] == sorted(ids, reverse=True)[:3]
    assert first["scanned"] == 3 and first["total"] == 7
    second = web.get(f"/api/jobs?state=medium&limit=3&cursor={first['next']}").json()
    last = web.get(f"/api/jobs?state=medium&limit=3&cursor={second['next']}").json()
    assert [j["id"] for j in first["jobs"] + second["jobs"] + last["jobs"]] == sorted(ids, reverse=True)
    assert last["next"] is None
    entry = first["jobs"][0]
    assert set(entry) >= {"id", "state", "class", "method", "priority", "attempts", "status", "error_type",
                          "created_at", "finished_at"}
    assert (entry["class"], entry["priority"], entry["state"]) == ("Echo", "medium", "medium")


def test_filters_match_class_error_type_and_text(project: Project, filled: dict[str, Any]) -> None:
    web = client(project)
    by_error = web.get("/api/jobs?state=failed&error=ValueError").json()["jobs"]
    assert [j["id"] for j in by_error] == [filled["failed"][1]]
    by_text = web.get("/api/jobs?state=failed&q=BOOM").json()["jobs"]
    assert [j["id"] for j in by_text] == [filled["failed"][0]]
    assert web.get("/api/jobs?state=done&class=Raise").json()["jobs"] == []
    assert len(web.get("/api/jobs?state=done&class=Echo&method=handle").json()["jobs"]) == 2
    assert [j["id"] for j in web.get("/api/jobs?state=low&priority=low").json()["jobs"]] == [filled["waiting"]]


def test_a_filter_scan_is_bounded_and_the_page_says_so(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(6):
        project.submit("Echo", "handle", [str(i)])
    monkeypatch.setattr(listing, "SCAN_BUDGET", 4)
    web = client(project)
    page = web.get("/api/jobs?state=medium&class=Nope").json()
    assert page["scan_stopped"] and page["scanned"] == 4 and page["next"] is not None
    rest = web.get(f"/api/jobs?state=medium&class=Nope&cursor={page['next']}").json()
    assert not rest["scan_stopped"] and rest["scanned"] == 2
    assert "Searched the newest 4 files of 6" in web.get("/jobs?state=medium&class=Nope").text


@pytest.mark.parametrize("query", ["state=nope", "limit=0", "limit=501", "limit=ten", "cursor=../x", "class=a.b",
                                   "priority=urgent", "bogus=1", "q=" + "x" * 201])
def test_a_bad_list_parameter_is_a_400_naming_it(project: Project, query: str) -> None:
    response = client(project).get(f"/api/jobs?{query}")
    assert response.status_code == 400
    assert response.json()["error"].split(":")[0] in query or "unknown parameter" in response.json()["error"]


@pytest.mark.parametrize("query", ["window=59", "window=604801", "window=-1", "window=1e3", "days=7"])
def test_a_bad_stats_window_is_a_400(project: Project, query: str) -> None:
    assert client(project).get(f"/api/stats?{query}").status_code == 400


def test_stats_come_from_the_log(project: Project, filled: dict[str, Any]) -> None:
    stats = client(project).get("/api/stats").json()
    by_class = {c["class"]: c for c in stats["classes"]}
    assert (by_class["Echo"]["runs"], by_class["Echo"]["failures"]) == (2, 0)
    assert (by_class["Raise"]["runs"], by_class["Raise"]["failures"]) == (2, 2)
    assert by_class["Echo"]["p50_ms"] is not None and by_class["Echo"]["p95_ms"] >= by_class["Echo"]["p50_ms"]
    assert sum(p["success"] for p in stats["series"]) == 2 and sum(p["failure"] for p in stats["series"]) == 2


def test_job_detail_json_for_a_job_and_for_a_rejected_file(project: Project, filled: dict[str, Any]) -> None:
    web = client(project)
    job = web.get(f"/api/jobs/{filled['failed'][0]}").json()
    assert job["state"] == "failed" and job["job"]["error"]["type"] == "RuntimeError"
    assert job["path"].endswith(f"failed/{filled['failed'][0]}.json")
    rejected = web.get("/api/jobs/broken").json()
    assert rejected["state"] == "rejected" and rejected["content"] == "{not json" and "bad JSON" in rejected["reason"]


@pytest.mark.parametrize("job_id", ["nope", "..%2F..%2Fbgjobs", "%2e%2e", "a" * 129, ".hidden"])
def test_an_unknown_or_malformed_id_is_a_404_and_no_path_leaves_the_spool(project: Project, job_id: str) -> None:
    web = client(project)
    assert web.get(f"/api/jobs/{job_id}").status_code == 404
    assert web.get(f"/jobs/{job_id}").status_code == 404


def test_the_job_page_shows_the_path_the_shell_commands_the_timeline_and_the_traceback(
        project: Project, filled: dict[str, Any]) -> None:
    job_id = filled["failed"][0]
    page = client(project).get(f"/jobs/{job_id}").text
    assert f"spoold retry {job_id}" in page and f"failed/{job_id}.json" in page
    assert "attempt 1: failure" in page and "log: started" in page and "log: failure" in page
    assert "Traceback" in page and "RuntimeError: boom" in page


def test_a_hostile_job_shows_as_text_everywhere(project: Project, filled: dict[str, Any]) -> None:
    web = client(project)
    for url in [f"/jobs/{filled['waiting']}", "/jobs?state=low&q=script"]:
        page = web.get(url).text
        assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert" in web.get(f"/jobs/{filled['waiting']}").text


def test_why_a_ready_job_is_not_running_when_no_daemon_is_alive(project: Project, filled: dict[str, Any]) -> None:
    page = client(project).get(f"/jobs/{filled['waiting']}").text
    assert "Why it is not running" in page and "no live daemon" in page


def test_why_a_delayed_job_waits_and_a_hidden_file_is_never_picked_up(project: Project) -> None:
    delayed = project.submit("Echo", "handle", ["later"], delay=3600)
    project.drop("high", ".secret-job.json", {"class": "Echo"})
    web = client(project)
    assert "scheduled: due at" in web.get(f"/jobs/{delayed}").text
    hidden = web.get("/jobs/secret-job").text
    assert "hidden files are never jobs" in hidden


# -- actions ----------------------------------------------------------------------------------------------


def test_retry_from_the_api_moves_the_file_and_logs_who_did_it(project: Project, filled: dict[str, Any]) -> None:
    web = client(project)
    job_id = filled["failed"][0]
    token = csrf_of(web.get(f"/jobs/{job_id}").text)
    response = web.post(f"/api/jobs/{job_id}/retry", headers={"X-CSRF-Token": token})
    assert response.status_code == 200 and response.json() == {"id": job_id, "state": "medium"}
    assert project.has("medium", job_id) and not project.has("failed", job_id)
    assert web.post(f"/api/jobs/{job_id}/retry", headers={"X-CSRF-Token": token}).status_code == 409
    assert web.post("/api/jobs/nope/retry", headers={"X-CSRF-Token": token}).status_code == 404
    assert web.post(f"/api/jobs/{job_id}/explode", headers={"X-CSRF-Token": token}).status_code == 404


def test_every_dashboard_action_logs_one_line_naming_the_dashboard_role_and_client(project: Project,
                                                                                  filled: dict[str, Any]) -> None:
    web = client(project)
    token = csrf_of(web.get("/").text)
    retried = filled["failed"][0]
    assert web.post(f"/api/jobs/{retried}/retry", headers={"X-CSRF-Token": token}).status_code == 200
    bulk = web.post("/api/bulk", json={"action": "cancel", "state": "low", "expect": 1},
                    headers={"X-CSRF-Token": token})
    assert bulk.status_code == 200 and bulk.json()["acted"] == 1
    acted = [line.split(" ", 1)[1] for line in project.log_lines() if " by=" in line]
    assert acted == [
        f"job={retried} class=Raise method=handle attempt=1 status=requeued by=dashboard:admin@testclient",
        f"job={filled['waiting']} class=Echo method=handle attempt=0 status=cancelled by=dashboard:admin@testclient"]


def test_cancel_from_a_page_form_files_the_job_as_cancelled(project: Project, filled: dict[str, Any]) -> None:
    web = client(project)
    job_id = filled["waiting"]
    token = csrf_of(web.get(f"/jobs/{job_id}").text)
    response = web.post(f"/jobs/{job_id}/cancel", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/jobs/{job_id}"
    assert project.doc("failed", job_id)["error"]["type"] == "Cancelled"
    assert any(" status=cancelled " in line and " by=dashboard:admin@" in line for line in project.log_lines())


def test_bulk_acts_on_the_whole_filter_and_refuses_a_count_that_changed(project: Project,
                                                                        filled: dict[str, Any]) -> None:
    web = client(project)
    token = csrf_of(web.get("/").text)
    before = spool_tree(project)
    stale = web.post("/api/bulk", json={"action": "retry", "state": "failed", "expect": 5},
                     headers={"X-CSRF-Token": token})
    assert stale.status_code == 409 and spool_tree(project) == before, "a count that changed moves nothing"
    done = web.post("/api/bulk", json={"action": "retry", "state": "failed", "class": "Raise", "expect": 2},
                    headers={"X-CSRF-Token": token})
    assert done.json() == {"matched": 2, "acted": 2, "skipped": []}
    assert project.names("failed") == [] and len(project.names("medium")) == 2


def test_bulk_from_the_pages_confirms_the_count_first(project: Project, filled: dict[str, Any]) -> None:
    web = client(project)
    confirm = web.get("/bulk?action=cancel&state=low")
    assert confirm.status_code == 200 and "1 job matches now" in confirm.text
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirm.text))
    result = web.post("/bulk", data=form)
    assert "Matched 1, cancel done for 1, skipped 0" in result.text
    assert project.doc("failed", filled["waiting"])["error"]["type"] == "Cancelled"


@pytest.mark.parametrize("body", [b"[1]", b"not json", b'{"action": "delete", "state": "failed"}',
                                  b'{"action": "retry", "state": "done"}', b'{"action": "retry", "zap": 1}',
                                  b'{"action": "retry", "state": "failed", "expect": "many"}'])
def test_a_bad_bulk_request_is_refused_and_moves_nothing(project: Project, filled: dict[str, Any],
                                                         body: bytes) -> None:
    web = client(project)
    token = csrf_of(web.get("/").text)
    before = spool_tree(project)
    response = web.post("/api/bulk", content=body,
                        headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
    assert response.status_code in (400, 409) and "error" in response.json()
    assert spool_tree(project) == before


# -- access --------------------------------------------------------------------------------------------------


def test_with_tokens_every_request_needs_one_and_the_read_token_cannot_act(project: Project,
                                                                           filled: dict[str, Any]) -> None:
    web = client(project, Access(token=ADMIN, read_token=READER))
    job_id = filled["failed"][0]
    before = spool_tree(project)
    assert web.get("/api/status").status_code == 401
    assert web.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/", follow_redirects=False).status_code == 303, "a page sends the person to /login"
    reader = {"Authorization": f"Bearer {READER}"}
    assert web.get("/api/status", headers=reader).status_code == 200
    assert web.post(f"/api/jobs/{job_id}/retry", headers=reader).status_code == 403
    assert spool_tree(project) == before, "a refused request changes nothing"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert web.post(f"/api/jobs/{job_id}/retry", headers=admin).status_code == 200, "a Bearer token needs no CSRF"


def test_login_sets_a_strict_httponly_cookie_and_its_posts_need_the_csrf_token(project: Project,
                                                                                filled: dict[str, Any]) -> None:
    web = client(project, Access(token=ADMIN, read_token=READER))
    assert web.post("/login", data={"token": "nope"}).status_code == 401
    signed_in = web.post("/login", data={"token": ADMIN}, follow_redirects=False)
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    job_id = filled["failed"][0]
    assert web.post(f"/api/jobs/{job_id}/retry").status_code == 403, "the cookie alone does not act"
    token = csrf_of(web.get("/").text)
    assert web.post(f"/api/jobs/{job_id}/retry", headers={"X-CSRF-Token": token}).status_code == 200


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Origin": "http://evil.example"}, {"Origin": "null"}])
def test_a_request_from_another_site_is_refused_whatever_it_carries(project: Project, filled: dict[str, Any],
                                                                     headers: dict[str, str]) -> None:
    web = client(project)
    token = csrf_of(web.get("/").text)
    before = spool_tree(project)
    response = web.post(f"/api/jobs/{filled['failed'][0]}/retry", headers={"X-CSRF-Token": token, **headers})
    assert response.status_code == 403 and "cross-site" in response.json()["error"]
    assert spool_tree(project) == before


def test_a_loopback_dashboard_refuses_another_host_name(project: Project) -> None:
    """DNS rebinding: a page of evil.example that resolves to 127.0.0.1 still sends its own Host."""
    assert client(project).get("/api/status", headers={"Host": "evil.example"}).status_code == 400


def test_a_body_over_8_kib_is_refused(project: Project) -> None:
    web = client(project)
    token = csrf_of(web.get("/").text)
    response = web.post("/api/bulk", content=b"{" + b" " * 9000 + b"}",
                        headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
    assert response.status_code == 413


# -- the command ---------------------------------------------------------------------------------------------


def test_spoold_dashboard_serves_until_interrupted(project: Project) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "spoold", "dashboard", "--port", str(port), "--config",
                             str(project.config)], cwd=project.root, env=project.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    project.procs.append(proc)
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/api/status"), 15, "the dashboard answers")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out


def test_spoold_dashboard_off_loopback_without_a_token_refuses_to_start(project: Project) -> None:
    result = project.cli("dashboard", "--host", "0.0.0.0", "--config", str(project.config), timeout=15)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "0.0.0.0 is not a loopback address" in line and "dashboard.token" in line


def test_spoold_dashboard_without_its_extra_says_how_to_install_it(project: Project) -> None:
    code = ("import sys; sys.modules['uvicorn'] = None; from spoold.commands.cli import main; "
            f"sys.exit(main(['dashboard', '--config', {str(project.config)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                            env=dict(os.environ), cwd=project.root)
    assert result.returncode == 2
    assert "pip install 'spoold[dashboard]'" in result.stderr


def test_a_bad_dashboard_key_is_a_config_error_naming_it(project: Project, tmp_path: Path) -> None:
    project.config.write_text(project.config.read_text() + '\n[dashboard]\nport = "eighty"\n')
    result = project.cli("status", "--config", str(project.config))
    assert result.returncode == 2 and "dashboard.port: expected a port number" in result.stderr


def test_each_failed_attempt_shows_its_own_error_from_the_errors_log(project: Project) -> None:
    project.configure(retry_attempts=1)
    job_id = project.submit("Raise", "handle", ["RuntimeError", "boom"])
    assert project.drain().returncode == 0
    page = client(project).get(f"/jobs/{job_id}").text
    assert page.count('<details class="attempt-error">') == 2
    assert page.count("RuntimeError: boom") >= 2


def test_the_stats_rollup_reads_only_what_was_appended_and_follows_a_rotated_log(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from spoold.dashboard.stats import Rollup

    log = tmp_path / "background_jobs.log"
    now = time.time()
    stamp = datetime.fromtimestamp(now - 30, UTC).isoformat()

    def line(status: str, job: str) -> str:
        return f"{stamp} job={job} class=Echo method=handle attempt=1 status={status} duration_ms=7\n"

    log.write_text(line("success", "a") + line("failure", "b") + line("success", "c")[:20])  # the last: half written
    rollup = Rollup(tmp_path)
    first = rollup.statistics(3600, now)["classes"]
    assert [(c["runs"], c["failures"]) for c in first] == [(2, 1)]
    with log.open("a") as handle:
        handle.write(line("success", "c")[20:] + line("retrying", "d"))
    assert [(c["runs"], c["failures"]) for c in rollup.statistics(3600, now)["classes"]] == [(4, 2)]
    log.rename(tmp_path / "background_jobs.log.1")
    log.write_text(line("success", "e"))
    assert [(c["runs"], c["failures"]) for c in rollup.statistics(3600, now)["classes"]] == [(1, 0)]


def test_cancelling_a_running_job_from_the_dashboard_stops_it_and_logs_who_asked(project: Project,
                                                                                tmp_path: Path) -> None:
    marker = tmp_path / "sleep.pid"
    project.start()
    job_id = project.submit("Sleep", "handle", ["30", str(marker)])
    read_pid(marker)  # the job runs
    web = client(project)
    response = web.post(f"/api/jobs/{job_id}/cancel", headers={"X-CSRF-Token": csrf_of(web.get("/").text)})
    assert response.status_code == 200 and response.json() == {"id": job_id, "state": "failed"}
    assert project.doc("failed", job_id)["error"]["type"] == "Cancelled"
    def cancelled_lines() -> list[str]:  # the daemon logs once the job's move is written
        return [line for line in project.log_lines() if f" job={job_id} " in line and " status=cancelled" in line]

    [line] = wait_for(cancelled_lines, 10, "the daemon's cancelled line")
    assert " by=dashboard:admin@" in line


def test_a_folders_names_come_back_from_the_disk_cache_only_while_its_key_is_unchanged(tmp_path: Path) -> None:
    from spoold.dashboard.diskcache import DiskCache
    from spoold.dashboard.listing import PERSIST_FROM, NameCache

    folder = tmp_path / "done"
    folder.mkdir()
    ids = [f"20261201-000000-{i:06d}-00000000" for i in range(PERSIST_FROM)]
    for job_id in ids:
        (folder / f"{job_id}.json").write_text("{}")
    os.utime(folder, (time.time() - 10, time.time() - 10))  # older than the racy window
    disk = DiskCache(tmp_path / "cache")
    assert NameCache(disk=disk).ids(folder) == ids
    stamp = os.stat(folder)
    (folder / "zz-added-by-hand.json").write_text("{}")
    os.utime(folder, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the same key: the cache is believed
    if os.stat(folder).st_size == stamp.st_size:
        assert NameCache(disk=disk).ids(folder) == ids, "an earlier run's list, read instead of the folder"
    os.utime(folder, (time.time() - 5, time.time() - 5))  # a new key: listed again
    assert NameCache(disk=disk).ids(folder)[-1] == "zz-added-by-hand"


def test_the_stats_rollup_comes_back_from_the_disk_cache_for_the_same_log(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from spoold.dashboard.diskcache import DiskCache
    from spoold.dashboard.stats import Rollup

    now = time.time()
    stamp = datetime.fromtimestamp(now - 90, UTC).isoformat()
    log = tmp_path / "background_jobs.log"
    log.write_text(f"{stamp} job=a class=Echo method=handle attempt=1 status=success duration_ms=7\n")
    disk = DiskCache(tmp_path / "cache")
    first = Rollup(tmp_path, disk).statistics(3600, now)
    later = Rollup(tmp_path, disk)
    assert later.offset == log.stat().st_size, "restored: nothing of the log needs reading again"
    assert later.statistics(3600, now) == first
    log.rename(tmp_path / "old.log")
    log.write_text("")
    assert Rollup(tmp_path, disk).statistics(3600, now)["classes"] == [], "another file: the cache is not used"
