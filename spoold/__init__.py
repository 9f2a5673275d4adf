"""spoold: background jobs as files in a spool folder, run by a small daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spoold.errors import SubmitError

if TYPE_CHECKING:
    from spoold.spool.submit import run_background_job

__version__ = "0.1.0"
__all__ = ["SubmitError", "__version__", "run_background_job"]


def __getattr__(name: str) -> Any:
    """Import the submit path on first use only: a job's child imports `spoold.execution.child`, never this."""
    if name == "run_background_job":
        from spoold.spool.submit import run_background_job

        return run_background_job
    raise AttributeError(f"module 'spoold' has no attribute {name!r}")
