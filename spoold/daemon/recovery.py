"""Requeueing the jobs of daemons that died (SPEC §2): their lock is free, so their folder is ours to empty.

Each orphan is first claimed by a rename into our own folder, so two daemons recovering the same dead
one never both requeue a job (docs/design.md, F29). A copy whose id already stands in a
later state is the leftover of a crash between two steps of a commit, and is dropped (precedence
done/failed > ready > running). What recovery decides for each orphan is returned; the daemon logs
and writes it, through the same commit as any other run's end.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from spoold.config import Config
from spoold.errors import JobRejected
from spoold.job import Job, JobStatus, decode_document
from spoold.outcomes import Settled, ready_folder, settle_orphan
from spoold.paths import JOB_SUFFIX, Folder, SpoolPaths, id_from_name, is_job_name
from spoold.spool.fsio import read_bounded
from spoold.spool.intake import Claim, Intake
from spoold.spool.moves import Mover
from spoold.spool.node import OPERATOR_KIND, other_nodes, remove_dead_folder, try_lock_dead

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Orphan:
    """A job whose daemon died while it ran: now claimed by us, that run settled as `Orphaned`."""

    job: Job
    claimed: Path
    settled: Settled
    dead_node: str


@dataclass
class Recovery:
    """The recovery of one daemon: what it may read, claim and move."""

    paths: SpoolPaths
    own_id: str
    intake: Intake
    mover: Mover

    def recover_dead(self, config: Config, now: float) -> list[Orphan]:
        """Empty every dead daemon's folder: its orphans are claimed and returned, for the caller to write."""
        orphans: list[Orphan] = []
        for folder in other_nodes(self.paths, self.own_id):
            lock = try_lock_dead(folder)
            if lock is None:
                continue
            try:
                for name in sorted(os.listdir(folder)):
                    if is_job_name(name):
                        orphans += self._adopt(config, folder, name, now)
            except FileNotFoundError:
                pass  # another daemon emptied and removed it between our probe and our look
            finally:
                remove_dead_folder(folder, lock)
        return orphans

    def _put_back(self, config: Config, path: Path) -> None:
        """A file an operator command was moving when it died: back where its status says, no run counted.
        Moved while we hold the dead command's lock, so no other daemon moves it too."""
        try:
            job = Job(path.name[: -len(JOB_SUFFIX)], decode_document(read_bounded(path, 1 << 30)))
        except (JobRejected, ValueError, OSError):
            return  # left for the next pass; never deleted
        status = job.doc.get("status")
        resting = (JobStatus.SCHEDULED, JobStatus.FAILED, JobStatus.DONE)
        folder = Folder(status) if status in resting else ready_folder(job, config)
        self.mover.commit(job, path, folder)
        log.info("job=%s put back in %s/ after its operator command died", job.id, folder)

    def _held_elsewhere(self, job_id: str, dead: Path) -> bool:
        """The id stands in a later state: a state folder, or a live node's running/ folder, ours included
        (a retry linked into a ready folder just before its daemon died may have been claimed again already,
        by us or by another daemon, before its stale copy is found here; docs/design.md, P18)."""
        if self.mover.id_taken(job_id):
            return True
        name = job_id + JOB_SUFFIX
        nodes = [self.paths.running_of(self.own_id), *other_nodes(self.paths, self.own_id)]
        return any(os.path.lexists(node / name) for node in nodes if node != dead)

    def _adopt(self, config: Config, folder: Path, name: str, now: float) -> list[Orphan]:
        path = folder / name
        job_id = id_from_name(name)
        if job_id is not None and self._held_elsewhere(job_id, folder):
            log.info("job=%s: dropping the stale copy %s (a later state exists)", job_id, path)
            path.unlink(missing_ok=True)
            return []
        if folder.name.startswith(OPERATOR_KIND):  # `spoold retry/cancel` runs: their files were never running
            self._put_back(config, path)
            return []
        try:
            started = os.lstat(path).st_ctime
        except FileNotFoundError:
            return []
        taken = self.intake.take(config, folder, name, now)
        if not isinstance(taken, Claim):
            return []
        settled = settle_orphan(taken.job, config, node=folder.name, started=started, now=now)
        if settled.log_status == "retrying":
            settled = Settled(settled.folder, "")  # the recovered line ends this run (SPEC §8)
        return [Orphan(taken.job, taken.path, settled, folder.name)]
