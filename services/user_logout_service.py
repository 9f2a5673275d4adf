"""Job: a user logged out; appends an ``event=logout`` line to ``<log_dir>/users.log`` and, when asked,
resets the user's dashboard to the defaults. A line looks like::

    2026-11-28T19:26:15.123456+00:00 event=logout user_id=42 reset_dashboard=false
"""

from __future__ import annotations

from services._checks import check_user_id, parse_flag
from services._storage import Clock, JsonDict, append_line, utc_now
from services.user_dashboard_service import UserDashboardService
from services.user_login_service import USERS_LOG


class UserLogoutService:
    """``handle(user_id, reset_dashboard=False)`` returns ``{"user_id", "event": "logout", "at",
    "dashboard_reset", "dashboard"}``; ``dashboard`` is the reset one, or None when it was left alone.

    ``reset_dashboard`` comes from the command line as text, so "true"/"1"/"yes" count as True.
    """

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self._clock = clock

    def handle(self, user_id: str | int, reset_dashboard: bool | str = False) -> JsonDict:
        uid = check_user_id(user_id)  # both checks before any write
        reset = parse_flag("reset_dashboard", reset_dashboard)
        at = self._clock().isoformat()
        append_line(USERS_LOG, f"{at} event=logout user_id={uid} reset_dashboard={str(reset).lower()}")
        dashboard = UserDashboardService(clock=self._clock).reset(uid) if reset else None
        return {"user_id": uid, "event": "logout", "at": at, "dashboard_reset": reset, "dashboard": dashboard}
