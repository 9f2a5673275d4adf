"""Job: a user's dashboard settings, one JSON file per user at ``<log_dir>/../dashboards/<user_id>.json``.

With the default ``log_dir`` that is ``storage/dashboards/``. Every write replaces the whole file
atomically; two jobs changing the same user at once are not merged, the last one to finish wins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services._checks import check_user_id
from services._storage import Clock, JsonDict, dashboards_dir, utc_now, write_json_atomic


def default_dashboard(user_id: str) -> JsonDict:
    """What a user sees before any customisation, and again after a reset."""
    return {
        "user_id": user_id,
        "theme": "light",
        "widgets": ["upcoming_lessons", "recent_activity"],
        "last_login": None,
    }


class UserDashboardService:
    """Loads, customises and resets the dashboard file; ``handle(user_id)`` stamps ``last_login`` with now."""

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self._clock = clock

    def handle(self, user_id: str | int) -> JsonDict:
        return self.customise(user_id, last_login=self._clock().isoformat())

    def path_for(self, user_id: str | int) -> Path:
        return dashboards_dir() / f"{check_user_id(user_id)}.json"

    def load(self, user_id: str | int) -> JsonDict:
        """The saved dashboard over the defaults; the defaults alone if none is saved (nothing is written)."""
        uid = check_user_id(user_id)
        path = self.path_for(uid)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default_dashboard(uid)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: bad JSON: {e.msg} at line {e.lineno}") from e
        if not isinstance(saved, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(saved).__name__}")
        return {**default_dashboard(uid), **saved, "user_id": uid}

    def customise(self, user_id: str | int, **settings: Any) -> JsonDict:
        """Merge ``settings`` into the saved dashboard and save it; values must be JSON."""
        dashboard = {**self.load(user_id), **settings}
        write_json_atomic(self.path_for(user_id), dashboard)
        return dashboard

    def reset(self, user_id: str | int) -> JsonDict:
        """Save and return the defaults, dropping every customisation."""
        dashboard = default_dashboard(check_user_id(user_id))
        write_json_atomic(self.path_for(user_id), dashboard)
        return dashboard
