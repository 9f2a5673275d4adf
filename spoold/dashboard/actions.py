"""The dashboard's actions: the operator commands' own code (spoold/spool/ops.py), so a retry or a
cancel from the browser is the same file move as `spoold retry ID`, logged with who did it."""

from __future__ import annotations

from dataclasses import dataclass

from spoold.dashboard.context import Dashboard, Refused
from spoold.dashboard.listing import Filters, matching
from spoold.paths import READY, Folder
from spoold.spool.ops import RETRYABLE as RETRYABLE  # the operator commands' own; pages.py reads it here
from spoold.spool.ops import Operator
from spoold.spool.views import show_job

CANCEL_WAIT_SECONDS = 10.0
BULK_CAP = 10_000
CANCELLABLE = (*READY, Folder.SCHEDULED, Folder.RUNNING)
ACTIONS = ("retry", "cancel")


@dataclass(frozen=True)
class Done:
    id: str
    state: str


def _check(dashboard: Dashboard, job_id: str, action: str) -> None:
    shown = show_job(dashboard.paths, job_id)
    if shown is None:
        raise Refused(404, f"no job {job_id} in the spool")
    allowed = RETRYABLE if action == "retry" else CANCELLABLE
    if shown.folder not in allowed:
        raise Refused(409, f"{job_id} is in {shown.folder}/; {action} needs a job in "
                           f"{', '.join(f + '/' for f in allowed)}")


def act(dashboard: Dashboard, job_id: str, action: str, *, by: str) -> Done:
    """One job: 404 if it is not in the spool (or no such action), 409 if its state does not allow it."""
    if action not in ACTIONS:
        raise Refused(404, f"no action {action[:40]!r}: retry or cancel")
    _check(dashboard, job_id, action)
    try:
        with Operator(dashboard.config, by=by) as operator:
            acted = (operator.retry(job_id) if action == "retry"
                     else operator.cancel(job_id, timeout=CANCEL_WAIT_SECONDS))
    except OSError as e:  # e.g. a dashboard user who may only read the spool
        raise Refused(503, f"cannot write the spool: {e}") from e
    if not acted.ok:
        raise Refused(503 if acted.spool_error else 409, f"{job_id}: {acted.message}")
    shown = show_job(dashboard.paths, acted.job_id)
    return Done(acted.job_id, shown.folder if shown is not None else "unknown")


@dataclass(frozen=True)
class Bulk:
    matched: int
    acted: int
    skipped: list[str]


def bulk(dashboard: Dashboard, action: str, state: str, filters: Filters, *, expect: int | None, by: str) -> Bulk:
    """Every job of `state` matching the filter, not only a page; nothing moves unless `expect` (the count
    the person confirmed) is still the count."""
    if action not in ACTIONS:
        raise Refused(400, f"action: expected retry or cancel, got {action[:40]!r}")
    allowed = RETRYABLE if action == "retry" else CANCELLABLE
    if state not in allowed:
        raise Refused(409, f"{action} needs a state among {', '.join(allowed)}, not {state}")
    ids = matching(dashboard.paths, state, filters, dashboard.cache, cap=BULK_CAP)
    if len(ids) > BULK_CAP:
        raise Refused(400, f"more than {BULK_CAP} jobs match: narrow the filter")
    if expect is not None and expect != len(ids):
        raise Refused(409, f"{len(ids)} jobs match now, not the {expect} confirmed: nothing was done; look again")
    skipped: list[str] = []
    try:
        with Operator(dashboard.config, by=by) as operator:
            for job_id in ids:
                acted = (operator.retry(job_id) if action == "retry"
                         else operator.cancel(job_id, timeout=CANCEL_WAIT_SECONDS))
                if not acted.ok:
                    skipped.append(job_id)
    except OSError as e:
        raise Refused(503, f"cannot write the spool: {e}") from e
    return Bulk(len(ids), len(ids) - len(skipped), skipped)
