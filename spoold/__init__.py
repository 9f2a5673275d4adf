"""spoold: background jobs as files in a spool folder, run by a small daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spoold.errors import SubmitError

if TYPE_CHECKING:
    from spoold.spool.batch import run_background_jobs
    from spoold.spool.lookup import JobFailed, JobInfo, get_job
    from spoold.spool.submit import run_background_job
    from spoold.spool.waiting import wait_for_job

__version__ = "0.1.0"
__all__ = ["JobFailed", "JobInfo", "SubmitError", "__version__", "get_job", "run_background_job",
           "run_background_jobs", "wait_for_job"]


def __getattr__(name: str) -> Any:
    """Import the API on first use only: a job's child imports `spoold.execution.child`, never this.

    None of these modules imports watchdog: wait_for_job() imports it when it arms its watch.
    """
    if name == "run_background_job":
        from spoold.spool import submit

        return submit.run_background_job
    if name == "run_background_jobs":
        from spoold.spool import batch

        return batch.run_background_jobs
    if name in ("get_job", "JobInfo", "JobFailed"):
        from spoold.spool import lookup

        return getattr(lookup, name)
    if name == "wait_for_job":
        from spoold.spool import waiting

        return waiting.wait_for_job
    raise AttributeError(f"module 'spoold' has no attribute {name!r}")
