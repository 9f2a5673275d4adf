"""Moving a job between state folders without ever replacing a file or losing one (SPEC §2; docs/design.md, P2, P3).

Every new version of a document is staged in tmp/, fsynced, moved in with no-replace, and only then is
the old copy removed. A crash in between leaves a duplicate that recovery resolves, never a loss.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spoold.errors import LostClaim, NameTaken
from spoold.job import Job, dump_job
from spoold.paths import JOB_SUFFIX, READY, Folder, SpoolPaths, id_from_name, new_job_id
from spoold.spool.fsio import fsync_dir, move_no_replace, publish, publish_many, write_tmp

log = logging.getLogger(__name__)
TAKEN_CHECK = (*READY, Folder.SCHEDULED, Folder.DONE, Folder.FAILED, Folder.REJECTED)


@dataclass
class Mover:
    """The file moves of one node (daemon or `--now` run), durable unless `durable` is off.

    `stale` holds claimed copies whose job was committed elsewhere but that could not be removed:
    they are removed later, never committed again.
    """

    paths: SpoolPaths
    durable: bool = True
    stale: list[Path] = field(default_factory=list)

    def remove_stale(self) -> None:
        for path in list(self.stale):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                continue
            self.stale.remove(path)

    def id_taken(self, job_id: str, *, besides: Path | None = None) -> bool:
        """True if another file in a state folder already has this id (docs/design.md, F15)."""
        root, name = os.fspath(self.paths.root), job_id + JOB_SUFFIX
        skip = os.fspath(besides) if besides is not None else None
        for folder in TAKEN_CHECK:  # plain strings: this runs at every claim
            path = os.path.join(root, folder, name)
            if path != skip and os.path.lexists(path):
                return True
        return False

    def write(self, job: Job, folder: str) -> Path:
        """Publish a new version of `job` into `folder`; a taken name gets a fresh id (source_name kept)."""
        target = self.paths.job_file(folder, job.id)
        try:
            publish(self.paths.tmp, dump_job(job), target, durable=self.durable)
        except NameTaken:
            job.doc.setdefault("source_name", job.id + JOB_SUFFIX)
            job.id = new_job_id()
            target = self.paths.job_file(folder, job.id)
            publish(self.paths.tmp, dump_job(job), target, durable=self.durable)
        return target

    def rewrite_claim(self, job: Job, claimed: Path) -> None:
        """A new version of our own claimed copy, in place (a `--now` run between two attempts): staged in
        tmp/, fsynced, renamed over it. Only our node writes in its folder, under its lock, so the rename
        replaces no one else's file; a crash leaves the old version or the new one, whole."""
        if not os.path.lexists(claimed):
            raise LostClaim(f"job={job.id} claim {claimed} is gone; not writing it back")
        staged = write_tmp(self.paths.tmp, dump_job(job), durable=self.durable)
        os.replace(staged, claimed)
        if self.durable:
            fsync_dir(claimed.parent)

    def commit(self, job: Job, claimed: Path, folder: str) -> Path:
        """Write `job` to `folder`, then drop our claimed copy; LostClaim if the claim vanished first."""
        if not os.path.lexists(claimed):
            raise LostClaim(f"job={job.id} claim {claimed} is gone; not writing it back")
        target = self.write(job, folder)
        self._drop_claim(job, claimed, folder)
        return target

    def _drop_claim(self, job: Job, claimed: Path, folder: str) -> None:
        try:
            os.unlink(claimed)
        except OSError as e:  # committed all the same: a copy left behind is removed later, never redone
            if isinstance(e, FileNotFoundError) and not os.path.lexists(claimed):
                log.warning("job=%s claim %s vanished during commit", job.id, claimed)
            else:
                log.error("job=%s is in %s/ but %s cannot be removed yet: %s", job.id, folder, claimed, e)
                self.stale.append(claimed)

    def commit_many(self, items: Sequence[tuple[Job, Path, str]]) -> list[Path | Exception]:
        """commit() for jobs that finished together (group commit, fsio.publish_many): the claimed
        copies are removed only once every new version is durable in its folder. Per job: its
        target, or the OSError / LostClaim that left it uncommitted."""
        results: list[Path | Exception] = []
        present: list[int] = []
        for index, (job, claimed, _) in enumerate(items):
            results.append(LostClaim(f"job={job.id} claim {claimed} is gone; not writing it back"))
            if os.path.lexists(claimed):
                present.append(index)
        targets = {index: self.paths.job_file(items[index][2], items[index][0].id) for index in present}
        errors = publish_many(self.paths.tmp, [(dump_job(items[index][0]), targets[index]) for index in present],
                              durable=self.durable)
        for index, error in zip(present, errors, strict=True):
            job, claimed, folder = items[index]
            if isinstance(error, NameTaken):  # the one-job path gives it a fresh id
                try:
                    results[index] = self.commit(job, claimed, folder)
                except (OSError, LostClaim) as e:
                    results[index] = e
            elif error is not None:
                results[index] = error
            else:
                self._drop_claim(job, claimed, folder)
                results[index] = targets[index]
        return results

    def write_back(self, claimed: Path, original: Path) -> None:
        """Undo a claim, bytes unchanged; if the name was taken meanwhile, use a fresh one beside it."""
        try:
            moved = move_no_replace(claimed, original, durable=self.durable)
        except NameTaken:
            moved = move_no_replace(claimed, original.with_name(new_job_id() + JOB_SUFFIX), durable=self.durable)
        if not moved:
            self.stale.append(claimed)

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
