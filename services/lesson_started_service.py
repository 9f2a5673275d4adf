"""Job: a lesson has started; appends an ``event=started`` line to ``<log_dir>/lessons.log``."""

from __future__ import annotations

from services._lesson_event import LessonEventService


class LessonStartedService(LessonEventService):
    """``handle(lesson_name)`` returns ``{"lesson": name, "event": "started", "at": ISO time}``."""

    event = "started"
