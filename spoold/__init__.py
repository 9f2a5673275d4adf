"""spoold: background jobs as files in a spool folder, run by a small daemon."""

from spoold.errors import SubmitError
from spoold.submit import run_background_job

__version__ = "0.1.0"
__all__ = ["SubmitError", "__version__", "run_background_job"]
