"""The JSON API of SPEC §9. Errors are `{"error": "one line"}` with 400, 401, 403, 404, 409 (413 for
a body over 8 KiB, 503 when the spool cannot be written)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from spoold.dashboard import actions, params
from spoold.dashboard.access import Role
from spoold.dashboard.context import Dashboard, Refused, read_body
from spoold.dashboard.listing import list_page
from spoold.paths import Folder, is_valid_id
from spoold.spool.limits import limits_view
from spoold.spool.slots import schedule_view
from spoold.spool.views import LIST_FOLDERS, job_entries, live_daemons, oldest_ready_since, show_job


def status_document(dashboard: Dashboard) -> dict[str, Any]:
    """`spoold status --json`'s object, its counts taken from the name cache (an unchanged 100,000-file
    done/ costs a stat, not a listing)."""
    paths = dashboard.paths
    counts = {name: (sum(1 for _ in job_entries(paths.running, nested=True)) if name == Folder.RUNNING
                     else dashboard.cache.count(paths.folder(name))) for name in LIST_FOLDERS}
    since = oldest_ready_since(paths)
    age = None if since is None else round(max(0.0, time.time() - since), 3)
    return {"spool": str(paths.root), "daemons": [d.as_json() for d in live_daemons(paths)], "counts": counts,
            "oldest_ready_age_seconds": age, "oldest_ready_since": since,
            "schedule": schedule_view(paths, dashboard.config, time.time()),
            "concurrency": limits_view(paths, dashboard.config)}


def status(dashboard: Dashboard, request: Request) -> Response:
    """The object of `spoold status --json` (plus `oldest_ready_since`, the moment the age counts from);
    answers 304 when nothing but the passing of time changed since the caller's copy."""
    dashboard.require(request, Role.READ, time.time())
    status = status_document(dashboard)
    unchanging = {key: value for key, value in status.items() if key != "oldest_ready_age_seconds"}
    etag = f'"{hashlib.blake2b(json.dumps(unchanging, sort_keys=True).encode(), digest_size=8).hexdigest()}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(json.dumps(status).encode(), media_type="application/json", headers={"ETag": etag})


def jobs(dashboard: Dashboard, request: Request) -> JSONResponse:
    dashboard.require(request, Role.READ, time.time())
    query = params.list_query(dict(request.query_params))
    page = list_page(dashboard.paths, query.state, query.filters, limit=query.limit, cursor=query.cursor,
                     cache=dashboard.cache)
    return JSONResponse({"jobs": page.jobs, "next": page.next, "total": page.total, "scanned": page.scanned,
                         "scan_stopped": page.scan_stopped})


def job(dashboard: Dashboard, request: Request) -> JSONResponse:
    dashboard.require(request, Role.READ, time.time())
    job_id = request.path_params["job_id"]
    shown = show_job(dashboard.paths, job_id) if is_valid_id(job_id) else None
    if shown is None:
        raise Refused(404, f"no job {job_id[:130]} in the spool")
    if shown.folder == Folder.REJECTED or shown.document is None:
        return JSONResponse({"id": shown.id, "state": shown.folder, "path": str(shown.path), "reason": shown.reason,
                             "content": shown.raw.decode("utf-8", errors="replace")})
    return JSONResponse({"id": shown.id, "state": shown.folder, "path": str(shown.path), "job": shown.document})


async def act(dashboard: Dashboard, request: Request) -> JSONResponse:
    role = dashboard.require(request, Role.ADMIN, time.time())
    dashboard.check_same_site(request)
    dashboard.check_csrf(request, "")
    await read_body(request)
    job_id = request.path_params["job_id"]
    if not is_valid_id(job_id):
        raise Refused(404, "not a job id")
    done = actions.act(dashboard, job_id, request.path_params["action"], by=dashboard.who(request, role))
    return JSONResponse({"id": done.id, "state": done.state})


async def bulk(dashboard: Dashboard, request: Request) -> JSONResponse:
    role = dashboard.require(request, Role.ADMIN, time.time())
    dashboard.check_same_site(request)
    dashboard.check_csrf(request, "")
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise Refused(400, "expected a JSON body (Content-Type: application/json)")
    try:
        body = json.loads(await read_body(request))
    except ValueError as e:
        raise Refused(400, f"bad JSON: {e}") from e
    if not isinstance(body, dict):
        raise Refused(400, "expected a JSON object")
    known = {"action", "state", "class", "method", "priority", "error", "q", "expect"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise Refused(400, f"unknown key {unknown[0][:40]!r} (known: {', '.join(sorted(known))})")
    texts = {key: value for key, value in body.items() if key != "expect"}
    if any(not isinstance(value, str) for value in texts.values()):
        raise Refused(400, "action, state and the filters are strings")
    result = actions.bulk(dashboard, str(body.get("action", "")), params.state_of(texts), params.filters_of(texts),
                          expect=params.expect_of(body.get("expect")), by=dashboard.who(request, role))
    return JSONResponse({"matched": result.matched, "acted": result.acted, "skipped": result.skipped})


def stats(dashboard: Dashboard, request: Request) -> JSONResponse:
    dashboard.require(request, Role.READ, time.time())
    unknown = sorted(set(request.query_params) - {"window"})
    if unknown:
        raise Refused(400, f"unknown parameter {unknown[0][:40]!r} (known: window)")
    return JSONResponse(dashboard.rollup.statistics(params.window_of(dict(request.query_params)), time.time()))
