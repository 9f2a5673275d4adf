"""The dashboard's ASGI app: its routes, the refusals as `{"error"}` or a page, and the headers every
response carries (a Content-Security-Policy without inline script, no framing, no sniffing, no caching)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spoold.dashboard import api, pages
from spoold.dashboard.context import Dashboard, Refused, error_json

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",  # with no-referrer, Chromium posts forms with `Origin: null`
    "cache-control": "no-store",
}

Handler = Callable[[Dashboard, Request], Response | Awaitable[Response]]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response, static files and refusals included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.decode().lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _endpoint(dashboard: Dashboard, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            response = handler(dashboard, request)
            if inspect.isawaitable(response):
                response = await response
            return response
        except Refused as refused:
            if pages.is_page(request):
                return pages.refused_page(dashboard, request, refused)
            return error_json(refused.status, refused.message)

    return endpoint


def create_app(dashboard: Dashboard, *, allowed_hosts: list[str] | None = None) -> Starlette:
    """`allowed_hosts`: the Host headers accepted (a loopback dashboard accepts only its own names, so a
    page of another site cannot reach it through DNS rebinding)."""

    def route(path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, _endpoint(dashboard, handler), methods=list(methods))

    routes = [
        route("/", pages.overview),
        route("/jobs", pages.jobs),
        route("/jobs/{job_id:str}", pages.job),
        route("/jobs/{job_id:str}/{action:str}", pages.act, ("POST",)),
        route("/errors", pages.errors),
        route("/stats", pages.stats),
        route("/bulk", pages.bulk_confirm),
        route("/bulk", pages.bulk, ("POST",)),
        route("/login", pages.login_page),
        route("/login", pages.login, ("POST",)),
        route("/logout", pages.logout, ("POST",)),
        route("/api/status", api.status),
        route("/api/jobs", api.jobs),
        route("/api/jobs/{job_id:str}", api.job),
        route("/api/jobs/{job_id:str}/{action:str}", api.act, ("POST",)),
        route("/api/bulk", api.bulk, ("POST",)),
        route("/api/stats", api.stats),
        Mount("/static", StaticFiles(directory=str(Path(__file__).with_name("static"))), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    return Starlette(routes=routes, middleware=middleware)
