"""Three hosts × two daemons on one GlusterFS volume, and one fault each (issue 12, point 4; SPEC §2, §11).

The hosts are FUSE mounts of the partition-capable volume (tests/sharedfs.py), so one can be cut off from
the file server; the daemons run as their host (UTS namespaces). What each run did comes from the jobs'
own records (tests/multihost.py). The long version is `make soak` (soak/run.py, scenario multihost).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from multihost import Cluster, run_fault

if TYPE_CHECKING:
    from sharedfs import Volume

pytest_plugins = ["sharedfs"]

JOBS = int(os.environ.get("SPOOLD_MULTIHOST_JOBS", "240"))


@pytest.fixture
def cluster(tmp_path: Path, partition_dir: list[Path], sharedfs_partition: Volume) -> Iterator[Cluster]:
    assert shutil.which("unshare") and os.geteuid() == 0, "these tests need root and unshare (util-linux)"
    relative = os.path.relpath(partition_dir[0], sharedfs_partition.hosts[0].mount)
    made = Cluster(tmp_path, sharedfs_partition.hosts, os.path.join(relative, "spool"))
    try:
        yield made
    finally:
        made.close()


@pytest.mark.timeout(200)
@pytest.mark.parametrize("fault", ["kill", "freeze", "cut"])
def test_three_hosts_lose_no_job_and_run_none_twice_but_the_faulted_daemons_when(cluster: Cluster, fault: str) -> None:
    outcome = run_fault(cluster, fault, JOBS)
    print(f"{fault}: {outcome}")
    assert outcome.ok, "\n".join(outcome.problems)
    if fault != "kill":
        assert outcome.rejoined >= 1
