"""The warm template for job children: `python -m spoold.execution.forkserver ROOT NAMESPACE ISOLATION MAX_JOBS
CHANNEL BOOTSTRAP CLASS...` (CHANNEL: the fd of the Unix socket that hands workers to the daemon, or -).

The daemon starts it as a fresh interpreter (execution/forkclient.py), so it inherits none of the
daemon's threads, locks or open spool files. It imports spoold's child code, runs the bootstrap and
imports the allowed classes once (preload.py; in worker isolation each worker does that instead); each
job is then a fork (about a millisecond) instead of a new interpreter (tens of milliseconds).
`isolation = "process"` forks a child per job (spares.py); `"worker"` keeps long-lived workers
(workerpool.py). The protocol with the daemon is protocol.py; end of stdin ends the server
and kills every child's group.
"""

from __future__ import annotations

import gc
import sys

from spoold.execution.child_setup import prepare_server
from spoold.execution.preload import Preload
from spoold.execution.protocol import ready, send
from spoold.execution.serverloop import Server


def make_server(isolation: str, max_jobs: int, preload: Preload, channel: int) -> Server:
    """Only the kind in use is imported: every module the server loads is mapped into each child it forks."""
    if isolation == "worker":
        from spoold.execution.workerpool import WorkerServer

        return WorkerServer(max_jobs=max_jobs, preload=preload, channel=channel)
    from spoold.execution.spares import SpareServer

    return SpareServer(preload=preload)


def main() -> None:
    root, namespace, isolation, max_jobs, channel, entry, *classes = sys.argv[1:]
    sys.path.insert(0, root)
    prepare_server()
    server = make_server(isolation, int(max_jobs), Preload(entry, namespace, tuple(classes)),
                         int(channel) if channel != "-" else -1)
    report = server.prepare()  # before the freeze: what the bootstrap and the job modules loaded is frozen too
    gc.freeze()  # what is loaded now stays out of the collector's way: fewer pages copied in each child
    send(ready(report))
    server.serve()


if __name__ == "__main__":
    main()
