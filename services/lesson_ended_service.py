"""Job: a lesson has ended; appends an ``event=ended`` line to ``<log_dir>/lessons.log``."""

from __future__ import annotations

from services._lesson_event import LessonEventService


class LessonEndedService(LessonEventService):
    """``handle(lesson_name)`` returns ``{"lesson": name, "event": "ended", "at": ISO time}``."""

    event = "ended"
