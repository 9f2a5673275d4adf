"""Moving a job between state folders without ever replacing a file or losing one (SPEC §2; docs/design.md, P2, P3).

Every new version of a document is staged in tmp/, fsynced, moved in with no-replace, and only then is
the old copy removed. A crash in between leaves a duplicate that recovery resolves, never a loss.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spoold.errors import Fenced, LostClaim, NameTaken
from spoold.job import Job, dump_job
from spoold.paths import JOB_SUFFIX, READY, Folder, SpoolPaths, id_from_name, new_job_id, seized_name
from spoold.spool.blanks import Blanks
from spoold.spool.fsio import fsync_dir, move_no_replace, name_exists, publish, publish_many, renamed_from, write_tmp
from spoold.spool.reaper import Drop, Reaper, remove_committed_copy

log = logging.getLogger(__name__)
TAKEN_CHECK = (*READY, Folder.SCHEDULED, Folder.DONE, Folder.FAILED, Folder.REJECTED)


@dataclass
class ClaimLog:
    """Claims (renames into a node folder) that may not be durable yet, shared by a node's Movers.

    A claim is not fsynced: that would cost a folder fsync per job. But its job's next state must not
    become durable before it: a power cut could then bring the ready copy back beside the result, and
    the job would run again. So a commit first fsyncs the node folder, once for every claim made since
    the last time (docs/design.md, P5, P7); on ext4 the result's own fsync has mostly done it already.
    """

    claimed: int = 0
    synced: int = 0

    def note(self) -> None:
        self.claimed += 1

    def sync(self, folder: Path) -> None:
        upto = self.claimed
        if upto > self.synced:
            fsync_dir(folder)
            self.synced = max(self.synced, upto)


@dataclass
class Mover:
    """The file moves of one node (daemon or `--now` run), durable unless `durable` is off.

    `stale` holds claimed copies whose job was committed elsewhere but that could not be removed:
    they are removed later, never committed again. `may_act` is the node's lease (lease.Heartbeat.ok):
    once it says no, no claim is moved any more. `claims`: this node's claims not yet fsynced, made
    durable before any commit (ClaimLog). `reaper`: if set, a commit's last unlink is left to its thread.
    `blanks`: if set, a commit without fsyncs stages its new version in one of these files made ahead
    (spool/blanks.py). With fsyncs, commits are the committer thread's, whose creates hold up nothing,
    and ran slower with blanks (docs/design.md, P7).
    """

    paths: SpoolPaths
    durable: bool = True
    stale: list[Path] = field(default_factory=list)
    may_act: Callable[[], bool] = field(default=lambda: True)
    claims: ClaimLog = field(default_factory=ClaimLog)
    reaper: Reaper | None = None
    blanks: Blanks | None = None

    def seize(self, claimed: Path) -> Path:
        """The decisive step of every move out of our claim: one rename to a hidden name in our folder.

        Another host that counts us dead takes our claims by renaming them too, so of the two exactly
        one wins, and the loser sees ENOENT; an unlink's success could not decide it (docs/design.md, H3).
        Fenced if our lease may have ended, LostClaim if the claim is gone.
        """
        if not self.may_act():
            raise Fenced(f"{claimed.name}: our lease may have ended; not writing it back")
        seized = claimed.with_name(seized_name(claimed.name))
        if self.reaper is not None:
            self.reaper.wait_for(seized)  # an earlier copy of this id, committed, not unlinked yet
        try:
            os.rename(claimed, seized)
        except OSError as e:
            if os.path.lexists(seized):  # over NFS a retransmitted rename may fail after it succeeded
                return seized
            if isinstance(e, FileNotFoundError) or e.errno == errno.ESTALE:
                raise LostClaim(f"claim {claimed} is gone; not writing it back") from e
            raise
        if not self.may_act():  # the rename hung (a cut-off mount) past our lease: the copy is the others' now
            raise Fenced(f"{claimed.name}: our lease ended while we seized it; not writing it back")
        return seized

    @property
    def has_stale(self) -> bool:
        return bool(self.stale or (self.reaper is not None and self.reaper.failed))

    def remove_stale(self) -> None:
        if self.reaper is not None:
            self.stale += self.reaper.take_failed()
        for path in list(self.stale):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                continue
            self.stale.remove(path)

    def id_taken(self, job_id: str, *, besides: Path | None = None) -> bool:
        """True if another file in a state folder already has this id (docs/design.md, F15). `besides`:
        our own copy, which does not count, not even where a client cache still shows it (H6)."""
        root, name = os.fspath(self.paths.root), job_id + JOB_SUFFIX
        skip = os.fspath(besides) if besides is not None else None
        for folder in TAKEN_CHECK:  # plain strings: this runs at every claim
            path = os.path.join(root, folder, name)
            if path != skip and name_exists(path) and not (skip is not None and renamed_from(path, skip)):
                return True
        return False

    def write(self, job: Job, folder: str, *, claimed_in: Path | None = None) -> Path:
        """Publish a new version of `job` into `folder`; a taken name gets a fresh id (source_name kept).
        `claimed_in`: the node folder the job was claimed into; its claims are made durable first."""
        target = self.paths.job_file(folder, job.id)
        before_link = self._claims_synced(claimed_in)
        try:
            publish(self.paths.tmp, dump_job(job), target, durable=self.durable, before_link=before_link,
                    blanks=self._blanks)
        except NameTaken:
            job.doc.setdefault("source_name", job.id + JOB_SUFFIX)
            job.id = new_job_id()
            target = self.paths.job_file(folder, job.id)
            publish(self.paths.tmp, dump_job(job), target, durable=self.durable, before_link=before_link,
                    blanks=self._blanks)
        return target

    @property
    def _blanks(self) -> Blanks | None:
        return None if self.durable else self.blanks

    def _claims_synced(self, node_folder: Path | None) -> Callable[[], None] | None:
        """What must hold just before a commit's link: our claims durable (ClaimLog), and our lease still
        ours, since staging and fsyncs can hang on a cut-off mount past it (docs/design.md, H4)."""
        if node_folder is None:
            return None

        def before_link() -> None:
            if self.durable:
                self.claims.sync(node_folder)
            if not self.may_act():
                raise Fenced(f"{node_folder.name}: our lease ended while we wrote a commit; not linking it")

        return before_link

    def rewrite_claim(self, job: Job, claimed: Path) -> None:
        """A new version of our own claimed copy, in place (a `--now` run between two attempts): the claim
        seized, the new version staged in tmp/, fsynced and renamed to the claim's name, then the seized
        copy dropped. A crash leaves the old version or the new one, whole (recovery prefers the claim's
        name to a seized copy beside it)."""
        seized = self.seize(claimed)
        staged = write_tmp(self.paths.tmp, dump_job(job), durable=self.durable)
        os.replace(staged, claimed)
        if self.durable:
            fsync_dir(claimed.parent)
        os.unlink(seized)

    def commit(self, job: Job, claimed: Path, folder: str) -> Path:
        """Seize our claimed copy, write `job` to `folder`, then drop the copy; LostClaim if the claim
        vanished first, Fenced if our lease may have ended."""
        seized = self.seize(claimed)
        try:
            target = self.write(job, folder, claimed_in=seized.parent)
        except Fenced:
            raise  # the copy is the others' now: not even its name is given back
        except BaseException:
            self._unseize(seized, claimed)
            raise
        self._drop_claim(job, seized, folder)
        return target

    def _unseize(self, seized: Path, claimed: Path) -> None:
        """The write failed (the spool refused it): give the claim its name back, to be committed again."""
        try:
            os.rename(seized, claimed)
        except OSError as e:
            log.error("cannot give %s its name back (%s); it is recovered as an orphan", seized, e)

    def _drop_claim(self, job: Job, claimed: Path, folder: str) -> None:
        if self.reaper is not None and claimed.parent == self.reaper.folder:
            self.reaper.drop(claimed, job.id, folder)
        elif not remove_committed_copy(Drop(claimed, job.id, folder)):
            self.stale.append(claimed)

    def commit_many(self, items: Sequence[tuple[Job, Path, str]]) -> list[Path | Exception]:
        """commit() for jobs that finished together (group commit, fsio.publish_many): the claimed
        copies are removed only once every new version is durable in its folder. Per job: its
        target, or the OSError / LostClaim that left it uncommitted."""
        results: list[Path | Exception] = []
        seized: dict[int, Path] = {}
        for index, (job, claimed, _) in enumerate(items):
            results.append(LostClaim(f"job={job.id} claim {claimed} is gone; not writing it back"))
            try:
                seized[index] = self.seize(claimed)
            except (OSError, LostClaim) as e:
                results[index] = e
        present = list(seized)
        targets = {index: self.paths.job_file(items[index][2], items[index][0].id) for index in present}
        errors = publish_many(self.paths.tmp, [(dump_job(items[index][0]), targets[index]) for index in present],
                              durable=self.durable, blanks=self._blanks,
                              before_link=self._claims_synced(seized[present[0]].parent if present else None))
        for index, error in zip(present, errors, strict=True):
            job, claimed, folder = items[index]
            if error is not None:
                self._unseize(seized[index], claimed)
            if isinstance(error, NameTaken):  # the one-job path gives it a fresh id
                try:
                    results[index] = self.commit(job, claimed, folder)
                except (OSError, LostClaim) as e:
                    results[index] = e
            elif error is not None:
                results[index] = error
            else:
                self._drop_claim(job, seized[index], folder)
                results[index] = targets[index]
        return results

    def write_back(self, claimed: Path, original: Path) -> None:
        """Undo a claim, bytes unchanged; if the name was taken meanwhile, use a fresh one beside it."""
        seized = self.seize(claimed)
        try:
            try:
                moved = move_no_replace(seized, original, durable=self.durable)
            except NameTaken:
                moved = move_no_replace(seized, original.with_name(new_job_id() + JOB_SUFFIX), durable=self.durable)
        except BaseException:
            self._unseize(seized, claimed)
            raise
        if not moved:
            self.stale.append(seized)

    def reject(self, source: Path, reason: str, *, dropped_as: str | None = None) -> tuple[str, str]:
        """Move a file, bytes unchanged, to rejected/ with ID.reason beside it; returns (id, reason).

        `dropped_as` is the name the file had in its ready folder, if the claim renamed it.
        """
        original = dropped_as or source.name
        job_id = id_from_name(original)
        if job_id is None or self.id_taken(job_id, besides=source):
            job_id = new_job_id()
            reason = f"{reason} (dropped as {original!r})"
        for _ in range(3):
            try:
                if not move_no_replace(source, self.paths.job_file(Folder.REJECTED, job_id), durable=self.durable):
                    self.stale.append(source)
                break
            except NameTaken:
                job_id = new_job_id()
        else:
            raise NameTaken(self.paths.job_file(Folder.REJECTED, job_id))
        reason = reason.replace("\n", " ").replace("\r", " ")
        publish(self.paths.tmp, (reason + "\n").encode("utf-8"), self.paths.reason_file(job_id), durable=self.durable)
        return job_id, reason
