"""Requeueing the jobs of daemons that died (SPEC §2): their lock is free, so their folder is ours to empty.

Each orphan is first claimed by a rename into our own folder, so two daemons recovering the same dead
one never both requeue a job (notes case 29). A copy whose id already stands in a later state is the
leftover of a crash between two steps of a commit, and is dropped (precedence done/failed > ready > running).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from spoold.errors import JobRejected
from spoold.job import Job, decode_document
from spoold.outcomes import ready_folder, settle_orphan
from spoold.paths import JOB_SUFFIX, id_from_name, is_job_name
from spoold.spool.fsio import read_bounded
from spoold.spool.intake import Claim
from spoold.spool.node import OPERATOR_KIND, other_nodes, remove_dead_folder, try_lock_dead

if TYPE_CHECKING:
    from spoold.daemon.loop import Daemon

log = logging.getLogger(__name__)


def recover_dead(daemon: Daemon, now: float) -> int:
    """Requeue every job of every dead daemon's folder; returns how many were requeued or failed."""
    assert daemon.node is not None
    count = 0
    for folder in other_nodes(daemon.paths, daemon.node.id):
        lock = try_lock_dead(folder)
        if lock is None:
            continue
        try:
            for name in sorted(os.listdir(folder)):
                if is_job_name(name):
                    count += _adopt(daemon, folder, name, now)
        except FileNotFoundError:
            pass  # another daemon emptied and removed it between our probe and our look
        finally:
            remove_dead_folder(folder, lock)
    return count


def _put_back(daemon: Daemon, path: Path) -> int:
    """A file an operator command was moving when it died: back where its status says, no run counted."""
    try:
        job = Job(path.name[: -len(JOB_SUFFIX)], decode_document(read_bounded(path, 1 << 30)))
    except (JobRejected, ValueError, OSError):
        return 0  # left for the next pass; never deleted
    status = job.doc.get("status")
    folder = status if status in ("scheduled", "failed", "done") else ready_folder(job, daemon.config)
    daemon.mover.commit(job, path, str(folder))
    log.info("job=%s put back in %s/ after its operator command died", job.id, folder)
    return 1


def _adopt(daemon: Daemon, folder: Path, name: str, now: float) -> int:
    assert daemon.intake is not None and daemon.node is not None
    path = folder / name
    job_id = id_from_name(name)
    if job_id is not None and daemon.mover.id_taken(job_id):
        log.info("job=%s: dropping the stale copy %s (a later state exists)", job_id, path)
        path.unlink(missing_ok=True)
        return 0
    if folder.name.startswith(OPERATOR_KIND):  # `spoold retry/cancel` runs: their files were never running
        return _put_back(daemon, path)
    try:
        started = os.lstat(path).st_ctime
    except FileNotFoundError:
        return 0
    taken = daemon.intake.take(daemon.config, folder, name, now)
    if not isinstance(taken, Claim):
        return 0
    job = taken.job
    settled = settle_orphan(job, daemon.config, node=folder.name, started=started, now=now)
    daemon.events.event("recovered", job=job.id, class_=job.class_name, method=job.method,
                        attempt=job.attempts, error="Orphaned", detail=f"its daemon {folder.name} died while it ran")
    if settled.log_status == "retrying":
        settled = type(settled)(settled.folder, "")  # the recovered line ends this run (SPEC §8)
    daemon.write(job, taken.path, settled, None, now)
    return 1
