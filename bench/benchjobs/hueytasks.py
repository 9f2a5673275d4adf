"""Huey's side: SqliteHuey (its defaults: WAL journal) at $BENCH_HUEY_DB, the two bodies as tasks."""

from __future__ import annotations

import os
import time

from huey import SqliteHuey

from benchjobs import common

huey = SqliteHuey("bench", filename=os.environ["BENCH_HUEY_DB"])


@huey.task()
def noop(seq: int, path: str) -> None:
    start = time.time()
    common.record(seq, path, start)


@huey.task()
def sleep(seq: int, path: str) -> None:
    start = time.time()
    time.sleep(common.SLEEP_SECONDS)
    common.record(seq, path, start)


TASKS = {"noop": noop, "sleep": sleep}


def use_database(filename: str) -> None:
    """Point the submitting side (the harness) at another run's database."""
    huey.storage.close()
    huey.storage_kwargs["filename"] = filename
    huey.storage = huey.create_storage()
