"""Handing a chain on (SPEC §5): the next step becomes a job of its own, at most once.

The step's id is derived from the chain's first job and the step number, so a daemon that crashed
after handing a step on and runs the parent again finds the step already there and does not add it twice.
"""

from __future__ import annotations

from typing import Any

from spoold.config import Config
from spoold.job import Job, JobStatus
from spoold.outcomes import iso
from spoold.spool.moves import Mover


def step_id(root: str, number: int) -> str:
    return f"{root[:100]}-step{number}"


def next_step_job(parent: Job, priority_of: str, now: float) -> Job:
    """The job for the first step of `parent.chain`, carrying the rest of the chain along."""
    step, rest = parent.chain[0], parent.chain[1:]
    root = str(parent.doc.get("chain_root", parent.id))
    number = int(parent.doc.get("chain_step", 0)) + 1
    doc: dict[str, Any] = {"class": step["class"], "method": step.get("method", "handle"),
                           "params": step.get("params", []), "priority": step.get("priority", priority_of),
                           "status": JobStatus.READY.value, "attempts": 0, "created_at": iso(now),
                           "parent": parent.id, "chain_root": root, "chain_step": number}
    for key in ("retry_attempts", "timeout_seconds"):
        if key in step:
            doc[key] = step[key]
    if step.get("pass_result", True):
        doc["previous_result"] = parent.doc.get("result")
    if rest:
        doc["chain"] = rest
    return Job(step_id(root, number), doc)


def hand_on_chain(mover: Mover, config: Config, parent: Job, now: float) -> None:
    """Submit the next step unless it exists already; record its id in `next` and drop `chain`."""
    step = parent.chain[0]
    child = next_step_job(parent, config.priority_of(step["class"]), now)
    if mover.paths.find_job(child.id) is None:
        mover.write(child, child.doc["priority"])
    parent.doc["next"] = child.id
    parent.doc.pop("chain", None)
