"""Example job classes, the default job namespace (SPEC §4).

Each class lives in its own snake_case module (``LessonCreatedService`` in ``lesson_created_service.py``)
and nothing is imported here: the daemon imports only the module of a job it has allowed.
"""
