"""The warm template for job children: `python -m spoold.execution.forkserver ROOT NAMESPACE ISOLATION MAX_JOBS`.

The daemon starts it as a fresh interpreter (execution/forkclient.py), so it inherits none of the
daemon's threads, locks or open spool files. It imports spoold's child code and the job namespace
once; each job is then a fork (about a millisecond) instead of a new interpreter (tens of
milliseconds). `isolation = "process"` forks a child per job (spares.py); `"worker"` keeps long-lived
workers (workerpool.py). The protocol with the daemon is protocol.py; end of stdin ends the server
and kills every child's group.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys

from spoold.execution.child_setup import prepare_server
from spoold.execution.protocol import READY, send
from spoold.execution.serverloop import Server


def make_server(isolation: str, max_jobs: int) -> Server:
    """Only the kind in use is imported: every module the server loads is mapped into each child it forks."""
    if isolation == "worker":
        from spoold.execution.workerpool import WorkerServer

        return WorkerServer(max_jobs=max_jobs)
    from spoold.execution.spares import SpareServer

    return SpareServer()


def main() -> None:
    root, namespace = sys.argv[1], sys.argv[2]
    isolation = sys.argv[3] if len(sys.argv) > 3 else "process"
    max_jobs = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    sys.path.insert(0, root)
    prepare_server()
    with contextlib.suppress(Exception):  # a broken namespace fails each job with its own error instead
        importlib.import_module(namespace)
    server = make_server(isolation, max_jobs)
    gc.freeze()  # what is loaded now stays out of the collector's way: fewer pages copied in each child
    send(READY)
    server.serve()


if __name__ == "__main__":
    main()
