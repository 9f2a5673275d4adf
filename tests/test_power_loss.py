"""spoold through power cuts (issue 14): a sample of tests/powerloss.py's trials on a crashfs spool.

Each test is one trial: 1-2 daemons, jobs submitted through the API, a power cut at a random moment, a
drain; then no job whose submit returned may be missing, none may have two records, nothing may be left
waiting. `make soak` (its power-loss scenario) runs 120 of them. The cut times are random; the seed of a
failed trial is in its message, and `.venv/bin/python tests/powerloss.py --trial-seed SEED` runs it again
(SPOOLD_POWERLOSS_SEED fixes the seeds of a whole run).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from crashfs import CrashFS
from powerloss import run_trial

TRIALS = 8
SEED = int(os.environ.get("SPOOLD_POWERLOSS_SEED") or random.randrange(1 << 30))


@pytest.mark.parametrize("n", range(TRIALS))
def test_a_power_cut_loses_no_submitted_job_and_records_none_twice(crash: CrashFS, tmp_path: Path, n: int) -> None:
    seed = random.Random(SEED + n).randrange(1 << 30)
    trial = run_trial(crash, tmp_path / "app", seed, drain_timeout=40)
    checkout = str(Path(__file__).resolve().parents[1])
    assert trial.modules and all(m.split(": ", 1)[1].startswith(checkout) for m in trial.modules), trial.modules
    assert trial.ok, (f"{trial.line()}\n{trial.problems()}\nagain: .venv/bin/python tests/powerloss.py "
                      f"--trial-seed {seed}; the spool after the cut and after the drain: {tmp_path / 'app'}")
