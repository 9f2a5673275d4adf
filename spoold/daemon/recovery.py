"""Requeueing the jobs of daemons that died (SPEC §2, §11): their folder is ours to empty.

A daemon of this host is dead as soon as its lock is free. A daemon of another host is dead only once
its heartbeat has not been seen to change for `lease_seconds` of our own clock (lease.py): its lock
may be local to its host, or still held by a frozen process. A frozen owner of this host past its
lease counts as dead too. Each orphan is first claimed by a rename into our own folder, so two daemons
recovering the same dead one never both requeue a job (docs/design.md, F29, H3). A copy whose id already stands in a
later state is the leftover of a crash between two steps of a commit, and is dropped (precedence
done/failed > ready > running). What recovery decides for each orphan is returned; the daemon logs
and writes it, through the same commit as any other run's end.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from spoold.config import Config
from spoold.errors import JobRejected, LostClaim
from spoold.job import Job, JobStatus, decode_document
from spoold.outcomes import Settled, ready_folder, settle_orphan
from spoold.paths import JOB_SUFFIX, Folder, SpoolPaths, id_from_name, is_job_name, unseized_name
from spoold.spool.fsio import listed, read_bounded, renamed_from
from spoold.spool.intake import Claim, Intake
from spoold.spool.lease import LeaseBook
from spoold.spool.moves import Mover
from spoold.spool.node import OPERATOR_KIND, host_of, other_nodes, remove_dead_folder, this_host, try_lock_dead
from spoold.spool.slots import is_marked, unstaged_name

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
    book: LeaseBook = field(default_factory=lambda: LeaseBook(30.0))
    warned: set[str] = field(default_factory=set)  # nodes past their lease whose frozen owner keeps the lock

    def is_dead(self, folder: Path, lease_seconds: float) -> tuple[bool, FileLock | None]:
        """Whether the node of `folder` is dead, and its lock if we now hold it (None: a frozen owner
        still holds it, so its folder is emptied but left for it; docs/design.md, H2)."""
        self.book.lease_seconds = lease_seconds
        lock = try_lock_dead(folder)
        expired = self.book.expired(folder)  # read at every pass, so the lease is timed from each change
        if lock is not None and (expired or host_of(folder.name) == this_host()):
            return True, lock
        if lock is not None:
            lock.release(force=True)  # free, but another host's lock may be local to it: its lease decides
        return expired, None

    def recover_dead(self, config: Config, now: float) -> list[Orphan]:
        """Empty every dead daemon's folder: its orphans are claimed and returned, for the caller to write."""
        orphans: list[Orphan] = []
        nodes = other_nodes(self.paths, self.own_id)
        names = {folder.name for folder in nodes}
        self.book.forget(names)
        self.warned &= names
        for folder in nodes:
            dead, lock = self.is_dead(folder, config.lease_seconds)
            if not dead:
                continue
            if lock is None and folder.name not in self.warned:  # its folder stays: said once, not every pass
                self.warned.add(folder.name)
                log.warning("node=%s has not renewed its lease for %gs: taking its jobs over", folder.name,
                            config.lease_seconds)
            try:
                for name in sorted(os.listdir(folder)):
                    if lock is None and (unseized_name(name) or unstaged_name(name)):
                        # Its owner still holds its lock (frozen past its lease): a file it has begun to
                        # move out is its own, and it finishes that move when it wakes; the seize decides
                        # only if no one else takes the seized file (docs/design.md, H3).
                        continue
                    if is_job_name(name) or unseized_name(name) or unstaged_name(name):
                        orphans += self._adopt(config, folder, name, now)
            except FileNotFoundError:
                pass  # another daemon emptied and removed it between our probe and our look
            finally:
                if lock is not None:
                    remove_dead_folder(folder, lock)
        return orphans

    def _staged_slot(self, config: Config, path: Path, plain: str) -> list[Orphan]:
        """A slot's job its daemon staged and died (docs/design.md, S2): if the marker is linked to it, the
        slot is its and the job goes to its ready folder; if not, the slot was never its, and the copy goes."""
        if not is_marked(self.paths, path, plain.removesuffix(JOB_SUFFIX)):
            path.unlink(missing_ok=True)
            return []
        self._slot_back(config, path, plain)
        return []

    def _slot_back(self, config: Config, path: Path, plain: str) -> None:
        """A taken slot's job, under its staged, claimed or seized name: to its ready folder, no run counted."""
        if path.name != plain:
            try:
                os.rename(path, path.with_name(plain))  # the owner's own next step, if it wakes: one of us wins
            except FileNotFoundError:
                return
        self._put_back(config, path.with_name(plain), "its daemon died while submitting its slot")

    def _put_back(self, config: Config, path: Path, why: str = "its operator command died") -> None:
        """A file a node was moving when it died, and never ran there: back where its status says, no run
        counted. Its commit starts with a seize, so no other daemon (nor a woken owner) moves it too."""
        try:
            job = Job(path.name[: -len(JOB_SUFFIX)], decode_document(read_bounded(path, 1 << 30)))
        except (JobRejected, ValueError, OSError):
            return  # left for the next pass; never deleted
        status = job.doc.get("status")
        resting = (JobStatus.SCHEDULED, JobStatus.FAILED, JobStatus.DONE)
        folder = Folder(status) if status in resting else ready_folder(job, config)
        try:
            self.mover.commit(job, path, folder)
        except LostClaim:
            return  # another daemon, or its woken owner, moved it first
        log.info("job=%s put back in %s/: %s", job.id, folder, why)

    def _held_elsewhere(self, job_id: str, copy: Path) -> bool:
        """The id stands in a later state: a state folder, or a live node's running/ folder, ours included
        (a retry linked into a ready folder just before its daemon died may have been claimed again already,
        by us or by another daemon, before its stale copy is found here; docs/design.md, P18).

        The job may be moving while we look (our own committer commits it, another daemon claims it):
        find_job's order of looks catches it. The copy here is deleted on this answer, so a candidate
        counts only if it is another file, or this one linked there for real, and its folder lists it:
        on a network filesystem a name moved away or deleted may still be looked up, opened and read for
        a second (GlusterFS's caches; docs/design.md, H6). Only a name that looks present is listed for."""
        def other(path: Path) -> bool:
            return os.path.lexists(path) and not renamed_from(path, copy) and listed(path)

        return self.paths.find_job(job_id, skip_node=copy.parent, exists=other) is not None

    def _adopt(self, config: Config, folder: Path, name: str, now: float) -> list[Orphan]:
        path = folder / name
        if (staged := unstaged_name(name)) is not None:
            return self._staged_slot(config, path, staged)
        plain = unseized_name(name) or name  # a claim its daemon had begun to move out: still its job
        if plain != name and os.path.lexists(folder / plain):
            path.unlink(missing_ok=True)  # a --now rewrite cut short: the claim's own name holds the newer copy
            return []
        job_id = id_from_name(plain)
        if job_id is not None and self._held_elsewhere(job_id, path):
            log.info("job=%s: dropping the stale copy %s (a later state exists)", job_id, path)
            path.unlink(missing_ok=True)
            return []
        if job_id is not None and is_marked(self.paths, path, job_id):  # a slot's job that never reached ready
            self._slot_back(config, path, plain)
            return []
        if folder.name.startswith(OPERATOR_KIND):  # `spoold retry/cancel` runs: their files were never running
            self._put_back(config, path)
            return []
        try:
            started = os.lstat(path).st_ctime
        except FileNotFoundError:
            return []
        taken = self.intake.take(config, folder, name, now, job_id=job_id)
        if not isinstance(taken, Claim):
            return []
        settled = settle_orphan(taken.job, config, node=folder.name, started=started, now=now)
        if settled.log_status == "retrying":
            settled = Settled(settled.folder, "")  # the recovered line ends this run (SPEC §8)
        return [Orphan(taken.job, taken.path, settled, folder.name)]
