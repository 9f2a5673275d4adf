"""`bootstrap = "spoold.integrations.django:setup"`: Django's set-up, once per process that runs jobs.

`DJANGO_SETTINGS_MODULE` names the settings, as for `manage.py`. In process isolation this runs in
the fork server, and every job is a fork of it: a database connection open there would be shared by
every child (two processes on one socket, or one SQLite handle), so every connection is closed before
the first fork and each child opens its own on its first query. In worker isolation each worker runs
it, and keeps its connection from job to job, as a request thread does (README, "Django").
"""

from __future__ import annotations

import os


def setup() -> None:
    """django.setup(), then no open connection is left for a forked child to inherit."""
    import django
    from django.db import connections

    django.setup()
    connections.close_all()
    if hasattr(os, "register_at_fork"):
        # A connection a job module opened while it was imported by the fork server is not reused by its
        # children: each child forgets the inherited ones without closing them (that would end the parent's).
        os.register_at_fork(after_in_child=_forget_inherited_connections)


def _forget_inherited_connections() -> None:
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.connection = None
