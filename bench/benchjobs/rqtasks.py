"""RQ's side: plain functions (RQ imports them by dotted name in the work horse)."""

from __future__ import annotations

import time

from benchjobs import common


def noop(seq: int, path: str) -> None:
    start = time.time()
    common.record(seq, path, start)


def sleep(seq: int, path: str) -> None:
    start = time.time()
    time.sleep(common.SLEEP_SECONDS)
    common.record(seq, path, start)


TASKS = {"noop": noop, "sleep": sleep}
