"""What a person or script types: the `spoold` and `run_job.py` commands and `--now`."""
