"""What every request of one dashboard shares: the configuration, the spool, the tokens, the caches,
and the checks each route runs first (who is asking, and may they)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse

from spoold.config import Config
from spoold.dashboard.access import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, Access, Role, cross_site
from spoold.dashboard.diskcache import DiskCache
from spoold.dashboard.listing import NameCache
from spoold.dashboard.stats import Rollup
from spoold.paths import SpoolPaths

MAX_BODY = 8 * 1024
OPEN_SESSION = "open"


class Refused(Exception):
    """Raised when a request may not go on; it becomes `{"error": message}` with `status` (or a page)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Dashboard:
    config: Config
    access: Access
    disk: DiskCache = field(default_factory=lambda: DiskCache(None))  # serve.py gives the user's cache folder
    cache: NameCache = field(init=False)
    rollup: Rollup = field(init=False)

    def __post_init__(self) -> None:
        self.cache = NameCache(disk=self.disk)
        self.rollup = Rollup(self.config.log_dir, self.disk)

    @property
    def paths(self) -> SpoolPaths:
        return SpoolPaths(self.config.spool_dir)

    @property
    def log_dir(self) -> Path:
        return self.config.log_dir

    # -- who is asking ---------------------------------------------------------------------------------

    def role(self, request: Request, now: float) -> Role | None:
        if self.access.open:
            return Role.ADMIN
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return self.access.role_of_token(header[7:].strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.access.role_of_cookie(cookie, now) if cookie else None

    def require(self, request: Request, needed: Role, now: float) -> Role:
        role = self.role(request, now)
        if role is None:
            raise Refused(401, "a token is needed: Authorization: Bearer TOKEN, or sign in at /login")
        if needed == Role.ADMIN and role != Role.ADMIN:
            raise Refused(403, "the read-only token cannot act; use the admin token")
        return role

    def session_of(self, request: Request) -> str:
        """What CSRF tokens are bound to: the session cookie, or this process when the dashboard is open."""
        return request.cookies.get(SESSION_COOKIE) or OPEN_SESSION

    def csrf_token(self, request: Request) -> str:
        return self.access.csrf_token(self.session_of(request))

    def who(self, request: Request, role: Role) -> str:
        client = request.client.host if request.client else "unknown"
        return f"dashboard:{role.value}@{client}"

    # -- may it act --------------------------------------------------------------------------------------

    def check_same_site(self, request: Request) -> None:
        reason = cross_site({k.lower(): v for k, v in request.headers.items()}, request.headers.get("host", ""))
        if reason is not None:
            raise Refused(403, reason)

    def check_csrf(self, request: Request, presented: str) -> None:
        """A browser's post (cookie or open dashboard) carries the page's token; a Bearer header needs none,
        since no other site can make a browser send it."""
        if request.headers.get("authorization", "").lower().startswith("bearer "):
            return
        if not self.access.csrf_ok(self.session_of(request), presented or request.headers.get(CSRF_HEADER, "")):
            raise Refused(403, "missing or wrong CSRF token: reload the page and try again")


async def read_body(request: Request) -> bytes:
    """The body, refused past MAX_BODY before more of it is read."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise Refused(413, f"request body over {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Refused(413, f"request body over {MAX_BODY} bytes")
    return body


async def read_form(request: Request) -> dict[str, str]:
    """A small url-encoded form, decoded by the standard library (no multipart parser is needed)."""
    body = await read_body(request)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as e:
        raise Refused(400, f"bad form: {e}") from e
    return dict(pairs)


def error_json(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


__all__ = ["CSRF_FIELD", "Dashboard", "Refused", "error_json", "read_body", "read_form"]
