"""Job: a user logged in; appends an ``event=login`` line to ``<log_dir>/users.log`` and stamps
``last_login`` on the user's dashboard (see ``user_dashboard_service``). A line looks like::

    2026-11-28T19:26:15.123456+00:00 event=login user_id=42
"""

from __future__ import annotations

from services._checks import check_user_id
from services._storage import Clock, JsonDict, append_line, utc_now
from services.user_dashboard_service import UserDashboardService

USERS_LOG = "users.log"


class UserLoginService:
    """``handle(user_id)`` returns ``{"user_id", "event": "login", "at", "dashboard"}``."""

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self._clock = clock

    def handle(self, user_id: str | int) -> JsonDict:
        uid = check_user_id(user_id)  # before any write: a bad id leaves no trace
        at = self._clock().isoformat()
        append_line(USERS_LOG, f"{at} event=login user_id={uid}")
        dashboard = UserDashboardService(clock=self._clock).customise(uid, last_login=at)
        return {"user_id": uid, "event": "login", "at": at, "dashboard": dashboard}
