"""The names of closed sets, defined once: the folders of a spool (SPEC §2) and the priorities.

A module of its own, importing nothing but `enum`, so that a job's child (which validates documents with
spoold.job) pays for these two classes and nothing of paths.py.
"""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """A ready folder's name, highest first; also a job's `priority` field."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Folder(StrEnum):
    """The sub-folders of a spool (SPEC §2): each is a state of a job."""

    TMP = "tmp"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"


__all__ = ["Folder", "Priority"]
