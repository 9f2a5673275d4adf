"""Job: a lesson has been created; appends an ``event=created`` line to ``<log_dir>/lessons.log``."""

from __future__ import annotations

from services._lesson_event import LessonEventService


class LessonCreatedService(LessonEventService):
    """``handle(lesson_name)`` returns ``{"lesson": name, "event": "created", "at": ISO time}``."""

    event = "created"
