"""Who may do what (SPEC §9): tokens, the session cookie, CSRF tokens and the same-origin checks.

On a loopback address with no token configured, everything is open (a developer's machine). Once a
token is configured, every request needs one: `Authorization: Bearer TOKEN`, or the session cookie that
`POST /login` sets. The admin token may act; the read token may only look. A browser's form post also
needs the CSRF token of its page, and no request from another site may act, whatever it carries.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass, field
from enum import StrEnum

SESSION_COOKIE = "spoold_session"
SESSION_SECONDS = 12 * 3600
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


class Role(StrEnum):
    ADMIN = "admin"
    READ = "read"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """The tokens of one dashboard process, and the secret its cookies and CSRF tokens are signed with
    (new at every start, so a restart signs everyone out)."""

    token: str | None = None
    read_token: str | None = None
    secret: bytes = field(default_factory=lambda: os.urandom(32))

    @property
    def open(self) -> bool:
        """No token configured: allowed on loopback only (the server refuses to start otherwise)."""
        return not self.token and not self.read_token

    def role_of_token(self, presented: str) -> Role | None:
        """The role a presented token grants; compared in constant time."""
        given = presented.encode()
        if self.token and hmac.compare_digest(given, self.token.encode()):
            return Role.ADMIN
        if self.read_token and hmac.compare_digest(given, self.read_token.encode()):
            return Role.READ
        return None

    def _sign(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()

    def session_cookie(self, role: Role, now: float) -> str:
        expires = int(now + SESSION_SECONDS)
        body = f"{role.value}.{expires}"
        return f"{body}.{self._sign('session:' + body)}"

    def role_of_cookie(self, value: str, now: float) -> Role | None:
        role, _, rest = value.partition(".")
        expires, _, signature = rest.partition(".")
        body = f"{role}.{expires}"
        if not hmac.compare_digest(signature.encode(), self._sign("session:" + body).encode()):
            return None
        if not expires.isdigit() or int(expires) < now or role not in tuple(Role):
            return None
        return Role(role)

    def csrf_token(self, session: str) -> str:
        """Bound to the session cookie (or to this process, when open), so it cannot be forged or reused."""
        return self._sign("csrf:" + session)

    def csrf_ok(self, session: str, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf_token(session).encode())


def cross_site(headers: dict[str, str], host: str) -> str | None:
    """Why a state-changing request comes from another site, or None. `Sec-Fetch-Site` where the browser
    sends it (all current ones do), else `Origin` against our own host."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is not None and origin != "null":
        netloc = origin.split("://", 1)[-1]
        if netloc != host:
            return "cross-site request refused (Origin is not this dashboard)"
    elif origin == "null":
        return "cross-site request refused (Origin: null)"
    return None

