"""The query parameters of the lists, the stats and the bulk actions, each checked and bounded: a bad
one is a 400 naming it, never an empty answer or an unbounded scan."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from spoold.dashboard.context import Refused
from spoold.dashboard.listing import MAX_LIMIT, Filters
from spoold.dashboard.stats import DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW
from spoold.paths import READY, Folder, is_valid_id
from spoold.spool.views import LIST_FOLDERS

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
MAX_TEXT = 200
DEFAULT_LIMIT = 50
LIST_KEYS = {"state", "class", "method", "priority", "error", "q", "limit", "cursor"}


@dataclass(frozen=True)
class ListQuery:
    state: str
    filters: Filters
    limit: int
    cursor: str | None


def _name(value: str | None, key: str) -> str | None:
    if not value:
        return None
    if NAME.fullmatch(value) is None:
        raise Refused(400, f"{key}: expected a plain name (letters, digits, _), got {value[:40]!r}")
    return value


def _bounded_int(value: str | None, key: str, low: int, high: int, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise Refused(400, f"{key}: expected an integer from {low} to {high}, got {value[:40]!r}")
    return int(value)


def filters_of(query: Mapping[str, str]) -> Filters:
    priority = query.get("priority") or None
    if priority is not None and priority not in READY:
        raise Refused(400, f"priority: expected one of {', '.join(READY)}, got {priority[:40]!r}")
    text = query.get("q") or None
    if text is not None and len(text) > MAX_TEXT:
        raise Refused(400, f"q: at most {MAX_TEXT} characters")
    return Filters(class_name=_name(query.get("class"), "class"), method=_name(query.get("method"), "method"),
                   priority=priority, error_type=_name(query.get("error"), "error"), text=text)


def state_of(query: Mapping[str, str], default: str = Folder.FAILED) -> str:
    state = query.get("state") or default
    if state not in LIST_FOLDERS:
        raise Refused(400, f"state: expected one of {', '.join(LIST_FOLDERS)}, got {state[:40]!r}")
    return state


def list_query(query: Mapping[str, str], *, default_state: str = Folder.FAILED) -> ListQuery:
    unknown = sorted(set(query) - LIST_KEYS)
    if unknown:
        raise Refused(400, f"unknown parameter {unknown[0][:40]!r} (known: {', '.join(sorted(LIST_KEYS))})")
    cursor = query.get("cursor") or None
    if cursor is not None and not is_valid_id(cursor):
        raise Refused(400, "cursor: not a job id")
    return ListQuery(state_of(query, default_state), filters_of(query),
                     _bounded_int(query.get("limit"), "limit", 1, MAX_LIMIT, DEFAULT_LIMIT), cursor)


def window_of(query: Mapping[str, str]) -> int:
    return _bounded_int(query.get("window"), "window", MIN_WINDOW, MAX_WINDOW, DEFAULT_WINDOW)


def expect_of(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise Refused(400, f"expect: expected a count >= 0, got {str(value)[:40]!r}")
    return int(value)
