#!/usr/bin/env python3
"""Submit a background job from the command line: python run_job.py CLASS METHOD ["a,b"] [options].

The Python heir of run-job.php; the same as `spoold submit` (see README). Submitting needs only the
standard library, so this works with any Python >= 3.11, even outside the project's virtualenv.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spoold.commands.cli import run_job_main  # noqa: E402  (after the path set-up above)

if __name__ == "__main__":
    raise SystemExit(run_job_main())
