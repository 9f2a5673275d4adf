"""Bench jobs, importable by spoold (namespace "benchjobs"), Huey (hueytasks) and RQ (rqtasks).

The harness copies this package into each run's temporary project folder.
"""

from __future__ import annotations

import time

from benchjobs import common


class BenchJob:
    """spoold's job class: `BenchJob.noop` / `BenchJob.sleep`, params `[seq, record_path]`."""

    def noop(self, seq: int, path: str) -> None:
        start = time.time()
        common.record(seq, path, start)

    def sleep(self, seq: int, path: str) -> None:
        start = time.time()
        time.sleep(common.SLEEP_SECONDS)
        common.record(seq, path, start)
