"""The shared body of the three lesson services: one line in ``lessons.log`` per lesson event.

All three write to the same ``<log_dir>/lessons.log`` so a lesson's created/started/ended lines read
in order in one place. A line looks like::

    2026-11-28T19:26:15.123456+00:00 event=created lesson="English Grammar 101"
"""

from __future__ import annotations

import json
from typing import ClassVar

from services._checks import check_lesson_name
from services._storage import Clock, JsonDict, append_line, utc_now

LESSONS_LOG = "lessons.log"


class LessonEventService:
    """Base class; a subclass only names its ``event``."""

    event: ClassVar[str]

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self._clock = clock

    def handle(self, lesson_name: str) -> JsonDict:
        """Record the event; returns ``{"lesson", "event", "at"}``, stored as the job's result."""
        name = check_lesson_name(lesson_name)
        at = self._clock().isoformat()
        # json.dumps quotes the name, so spaces, '=' and quotes in it cannot break the key=value line.
        append_line(LESSONS_LOG, f"{at} event={self.event} lesson={json.dumps(name, ensure_ascii=False)}")
        return {"lesson": name, "event": self.event, "at": at}
