"""The HTML pages of SPEC §9, rendered on the server from the spool and the logs (Jinja2, which
escapes every value). A form post carries the page's CSRF token and goes through the same actions as
the JSON API."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from spoold.dashboard import actions, api, params
from spoold.dashboard.access import CSRF_FIELD, SESSION_COOKIE, SESSION_SECONDS, Role
from spoold.dashboard.charts import bars
from spoold.dashboard.context import Dashboard, Refused, read_form
from spoold.dashboard.explain import never_picked_up, why_not_running
from spoold.dashboard.listing import list_page, matching
from spoold.dashboard.stats import error_tail, job_errors, job_events
from spoold.paths import READY, is_valid_id
from spoold.spool.unique import holder
from spoold.spool.views import LIST_FOLDERS, Shown, show_job

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def relative(iso: Any, now: float | None = None) -> str:
    """`3m ago`, `in 20s`: the text of a <time> whose title is the ISO UTC time."""
    try:
        moment = datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return str(iso or "")
    seconds = (now or time.time()) - moment
    ahead, seconds = seconds < 0, abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if seconds >= size or unit == "s":
            text = f"{int(seconds // size)}{unit}"
            return f"in {text}" if ahead else f"{text} ago"
    return ""


TEMPLATES.env.filters["relative"] = relative
TEMPLATES.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, default=str)


def render(dashboard: Dashboard, request: Request, name: str, role: Role | None, **context: Any) -> HTMLResponse:
    context.update(request=request, role=role.value if role else None, csrf=dashboard.csrf_token(request),
                   csrf_field=CSRF_FIELD, open=dashboard.access.open, folders=LIST_FOLDERS, ready=READY)
    return TEMPLATES.TemplateResponse(request, name, context)


def overview(dashboard: Dashboard, request: Request) -> Response:
    role = dashboard.require(request, Role.READ, time.time())
    now = time.time()
    hour, day = dashboard.rollup.statistics(3600, now), dashboard.rollup.statistics(86400, now)
    return render(dashboard, request, "overview.html", role, status=api.status_document(dashboard),
                  hour_chart=bars(hour["series"], title="Successes and failures per minute, last hour"),
                  day_chart=bars(day["series"], title="Successes and failures per hour, last day"))


def jobs(dashboard: Dashboard, request: Request) -> Response:
    role = dashboard.require(request, Role.READ, time.time())
    query = params.list_query(dict(request.query_params))
    page = list_page(dashboard.paths, query.state, query.filters, limit=query.limit, cursor=query.cursor,
                     cache=dashboard.cache)
    filters = {key: value for key, value in request.query_params.items() if key not in ("cursor", "limit") and value}
    next_url = f"/jobs?{urlencode({**filters, 'cursor': page.next})}" if page.next else None
    return render(dashboard, request, "jobs.html", role, query=query, page=page, filters=filters, next_url=next_url,
                  bulk_actions=[a for a in actions.ACTIONS if query.state in
                                (actions.RETRYABLE if a == "retry" else actions.CANCELLABLE)],
                  filter_query=urlencode(filters))


def _timeline(dashboard: Dashboard, shown: Shown) -> list[dict[str, Any]]:
    """The document's history merged with the job's log lines, oldest first."""
    rows: list[dict[str, Any]] = []
    tracebacks = job_errors(dashboard.log_dir, shown.id)
    for run in (shown.document or {}).get("history") or []:
        if isinstance(run, dict):
            at = str(run.get("finished_at") or run.get("started_at") or "")
            rows.append({"at": at, "ts": _timestamp(at), "kind": "run", "run": run,
                         "traceback": tracebacks.get(str(run.get("attempt"))) if run.get("error_type") else None})
    created = _timestamp(str((shown.document or {}).get("created_at") or ""))
    for event in job_events(dashboard.log_dir, shown.id, since=created - 60 if created else None):
        at = datetime.fromtimestamp(event.at, UTC).isoformat()
        rows.append({"at": at, "ts": event.at, "kind": "log", "event": event.fields})
    return sorted(rows, key=lambda row: (row["ts"], row["kind"] == "run"))


def _timestamp(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def _chain(dashboard: Dashboard, doc: dict[str, Any]) -> dict[str, Any]:
    def state(job_id: Any) -> dict[str, Any] | None:
        if not isinstance(job_id, str) or not is_valid_id(job_id):
            return None
        found = dashboard.paths.find_job(job_id)
        return {"id": job_id, "state": found.relative_to(dashboard.paths.root).parts[0] if found else "gone"}

    return {"parent": state(doc.get("parent")), "next": state(doc.get("next")),
            "to_come": [step for step in doc.get("chain") or [] if isinstance(step, dict)]}


def _rules(dashboard: Dashboard, doc: dict[str, Any]) -> list[str]:
    """What SPEC §12 says about this job: the schedule slot it is, its unique_key's holder, its class's limit."""
    lines = []
    if isinstance(doc.get("schedule"), str):
        lines.append(f"the slot due at {doc.get('due_at')} of the schedule entry {doc['schedule']}")
    key = doc.get("unique_key")
    if isinstance(key, str):
        held = holder(dashboard.paths, key)
        lines.append(f"unique_key {key!r}: " + ("free (no live job holds it)" if held is None else
                                                "held by this job" if held == doc.get("id") else f"held by {held}"))
    limit = dashboard.config.concurrency.get(str(doc.get("class")))
    if limit:
        lines.append(f"its class runs at most {limit} at once across the spool ([concurrency])")
    return lines


def job(dashboard: Dashboard, request: Request) -> Response:
    role = dashboard.require(request, Role.READ, time.time())
    job_id = request.path_params["job_id"]
    if not is_valid_id(job_id):
        raise Refused(404, "not a job id")
    shown = show_job(dashboard.paths, job_id)
    if shown is None:
        hidden = never_picked_up(dashboard.paths, job_id)
        if not hidden:
            raise Refused(404, f"no job {job_id} in the spool")
        return render(dashboard, request, "hidden.html", role, job_id=job_id, hidden=hidden)
    doc = shown.document or {}
    relative_path = shown.path.relative_to(dashboard.paths.root)
    return render(dashboard, request, "job.html", role, shown=shown, doc=doc, path=relative_path,
                  why=why_not_running(dashboard.paths, shown, dashboard.config, time.time()),
                  timeline=_timeline(dashboard, shown), chain=_chain(dashboard, doc), rules=_rules(dashboard, doc),
                  spool=dashboard.paths.root, raw=shown.raw.decode("utf-8", errors="replace"),
                  can_retry=shown.folder in actions.RETRYABLE, can_cancel=shown.folder in actions.CANCELLABLE)


def errors(dashboard: Dashboard, request: Request) -> Response:
    role = dashboard.require(request, Role.READ, time.time())
    query = request.query_params.get("q") or None
    if query is not None and len(query) > params.MAX_TEXT:
        raise Refused(400, f"q: at most {params.MAX_TEXT} characters")
    return render(dashboard, request, "errors.html", role, entries=error_tail(dashboard.log_dir, query=query),
                  q=query or "")


def stats(dashboard: Dashboard, request: Request) -> Response:
    role = dashboard.require(request, Role.READ, time.time())
    window = params.window_of(dict(request.query_params))
    result = dashboard.rollup.statistics(window, time.time())
    return render(dashboard, request, "stats.html", role, stats=result, window=window,
                  chart=bars(result["series"], title=f"Successes and failures over the last {window}s"))


async def act(dashboard: Dashboard, request: Request) -> Response:
    """A form post from a job's page: retry or cancel, then back to the job where it now is."""
    role = dashboard.require(request, Role.ADMIN, time.time())
    dashboard.check_same_site(request)
    form = await read_form(request)
    dashboard.check_csrf(request, form.get(CSRF_FIELD, ""))
    done = actions.act(dashboard, request.path_params["job_id"], request.path_params["action"],
                       by=dashboard.who(request, role))
    return RedirectResponse(f"/jobs/{done.id}", status_code=303)


def bulk_confirm(dashboard: Dashboard, request: Request) -> Response:
    """The confirmation of a bulk action states how many jobs match now; the post sends that count back."""
    role = dashboard.require(request, Role.ADMIN, time.time())
    query = dict(request.query_params)
    action = query.pop("action", "")
    if action not in actions.ACTIONS:
        raise Refused(400, "action: expected retry or cancel")
    state, filters = params.state_of(query), params.filters_of(query)
    ids = matching(dashboard.paths, state, filters, dashboard.cache, cap=actions.BULK_CAP)
    return render(dashboard, request, "bulk.html", role, action=action, state=state, fields=query, count=len(ids),
                  over_cap=len(ids) > actions.BULK_CAP, result=None)


async def bulk(dashboard: Dashboard, request: Request) -> Response:
    role = dashboard.require(request, Role.ADMIN, time.time())
    dashboard.check_same_site(request)
    form = await read_form(request)
    dashboard.check_csrf(request, form.pop(CSRF_FIELD, ""))
    action = form.pop("action", "")
    expect = params.expect_of(form.pop("expect", None))
    result = actions.bulk(dashboard, action, params.state_of(form), params.filters_of(form), expect=expect,
                          by=dashboard.who(request, role))
    return render(dashboard, request, "bulk.html", role, action=action, state=params.state_of(form), fields=form,
                  count=result.matched, over_cap=False, result=result)


def login_page(dashboard: Dashboard, request: Request) -> Response:
    return render(dashboard, request, "login.html", dashboard.role(request, time.time()), failed=False)


async def login(dashboard: Dashboard, request: Request) -> Response:
    """The token typed once gives a session cookie: HttpOnly, SameSite=Strict, signed, for 12 hours."""
    dashboard.check_same_site(request)
    form = await read_form(request)
    role = dashboard.access.role_of_token(form.get("token", ""))
    if role is None:
        page = render(dashboard, request, "login.html", None, failed=True)
        page.status_code = 401
        return page
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, dashboard.access.session_cookie(role, time.time()), max_age=SESSION_SECONDS,
                        httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


async def logout(dashboard: Dashboard, request: Request) -> Response:
    dashboard.check_same_site(request)
    form = await read_form(request)
    dashboard.check_csrf(request, form.get(CSRF_FIELD, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def is_page(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


def refused_page(dashboard: Dashboard, request: Request, refused: Refused) -> Response:
    if refused.status == 401 and request.method == "GET":
        return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)
    response = render(dashboard, request, "refused.html", dashboard.role(request, time.time()), refused=refused)
    response.status_code = refused.status
    return response

