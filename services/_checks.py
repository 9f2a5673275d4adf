"""Checks on the values a job is called with: params come from JSON or the command line, so trust none."""

from __future__ import annotations

import re
import unicodedata

USER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
LESSON_NAME_MAX = 200
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")


def check_user_id(value: object) -> str:
    """Return the user id as text; it names a file, so it must not be able to leave the dashboards folder."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"user_id: expected a string or an integer, got {type(value).__name__}")
    if not USER_ID_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(
            f"user_id: expected 1-128 letters, digits, '_', '-', '.' or '@', starting with a letter or "
            f"digit and without '..', got {value!r}"
        )
    return value


def check_lesson_name(value: object) -> str:
    """Return the lesson name unchanged; it must be non-blank and fit on one log line."""
    if not isinstance(value, str):
        raise ValueError(f"lesson_name: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"lesson_name: expected a non-blank name, got {value!r}")
    if len(value) > LESSON_NAME_MAX:
        raise ValueError(f"lesson_name: expected at most {LESSON_NAME_MAX} characters, got {len(value)}")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value):
        raise ValueError(f"lesson_name: expected no control characters or line breaks, got {value!r}")
    return value


def parse_flag(name: str, value: object) -> bool:
    """A yes/no param: a bool from JSON, or text from the command line."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    allowed = ", ".join(repr(w) for w in TRUE_WORDS + FALSE_WORDS)
    raise ValueError(f"{name}: expected true or false (or one of {allowed}), got {value!r}")
