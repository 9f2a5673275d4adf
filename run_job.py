#!/usr/bin/env python3
"""Submit a background job from the command line: python run_job.py CLASS METHOD ["a,b"] [options].

The Python heir of run-job.php; the same as `spoold submit` (see README).
"""

from spoold.cli import run_job_main

if __name__ == "__main__":
    raise SystemExit(run_job_main())
