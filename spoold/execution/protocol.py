"""The fork server's protocol with the daemon, and its workers' with the daemon: one JSON object per line.

Daemon -> server (its stdin): `{"id", "spec", "out", "env"}` starts a job, `{"kill": ID}` SIGKILLs that
job's process group if it has not been reaped yet (so a freed pid is never signalled). Server -> daemon
(its stdout): `{"ready": true, "bootstrap", "imports"}` once (preload.py's report), then `{"id", "pid"}`
when a child runs the job and `{"id", "returncode"}` when it has ended (negative: the signal that killed
it). A child forked per job (spares.py) writes its output and its outcome on two pipes of its own,
passed on as `{"id", "returncode", "reply": {"output": TAIL, "report": OUTCOME}}` ("report" absent if it
died before it wrote one).

Worker isolation (workerpool.py) starts no job through the server. `{"worker": true}` asks it for a
worker: it answers on a Unix socket the daemon gave it, `{"worker": N, "pid", "early"}` with three ends
attached (SCM_RIGHTS): the one to write its requests on (a socket pair), its reply pipe's, and the
worker's own end of the requests, from which the daemon takes back a request not read yet. The daemon
then writes each job's `{"id", "spec", "out", "env"}` to the worker and reads `{"report": OUTCOME,
"output": TAIL}` back; the worker's first line, its preload report (`{"preloaded": ...}`), is not a
reply and is skipped. The server reports `{"worker_exited": N,
"returncode"}` once it has reaped worker N (retired after its last job, or killed), and `{"kill_worker":
N}` kills worker N's group while it is not reaped. A worker that died mid-job left its output in its
own file (worker_output), which the daemon reads. End of the server's stdin ends the server.

Stdlib only, and small: the fork server and every job child it forks load this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

OUTPUT_TAIL_BYTES = 4096


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written: a pipe takes a large request in several writes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


READ_SIZE = 65536


def read_available(fd: int) -> tuple[bytes, bool]:
    """What a non-blocking pipe holds now, and whether it has reached its end. A read shorter than asked
    emptied the pipe (a pipe gives all it holds), so no read is made only to hear EAGAIN: the caller's
    poll says when more comes, or the end. OSError (EAGAIN aside) counts as the end."""
    chunks = []
    try:
        while chunk := os.read(fd, READ_SIZE):
            chunks.append(chunk)
            if len(chunk) < READ_SIZE:
                return b"".join(chunks), False
    except BlockingIOError:
        return b"".join(chunks), False
    except OSError:
        pass
    return b"".join(chunks), True


def read_tail(fd: int, limit: int = OUTPUT_TAIL_BYTES) -> str:
    """The last `limit` bytes of the open file `fd`, as text: what a job printed, for its run's record."""
    size = os.fstat(fd).st_size
    if size == 0:
        return ""
    os.lseek(fd, max(0, size - limit), os.SEEK_SET)  # not pread: Windows has none
    return os.read(fd, limit).decode("utf-8", "replace")


def worker_output(out: str, pid: int) -> str:
    """A worker's one output file, beside the per-job `out` path of its requests, truncated for each job."""
    return os.path.join(os.path.dirname(out), f"worker-{pid}.out")


def worker_reply(outcome: dict[str, Any], output: str) -> bytes:
    return encode({"report": outcome, "output": output})


def is_worker_reply(line: bytes) -> bool:
    return line.startswith(b'{"report"')


def ended_with_reply(job_id: str, reply: bytes, returncode: int = 0) -> bytes:
    """The end of a child forked per job, with the reply the server builds from its pipes."""
    return b'{"id": %s, "returncode": %d, "reply": %s}\n' % (json.dumps(job_id).encode(), returncode, reply)


def encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode()


def start_request(job_id: str, spec: dict[str, Any], out: str, env: dict[str, str]) -> dict[str, Any]:
    return {"id": job_id, "spec": spec, "out": out, "env": env}


def kill_request(job_id: str) -> dict[str, Any]:
    return {"kill": job_id}


def worker_request() -> dict[str, Any]:
    """Worker isolation: ask the server for a worker; its pipe ends come back on the Unix socket."""
    return {"worker": True}


def kill_worker_request(number: int) -> dict[str, Any]:
    return {"kill_worker": number}


def worker_exited(number: int, returncode: int) -> dict[str, Any]:
    return {"worker_exited": number, "returncode": returncode}


def started(job_id: str, pid: int) -> dict[str, Any]:
    return {"id": job_id, "pid": pid}


def ended(job_id: str, returncode: int) -> dict[str, Any]:
    return {"id": job_id, "returncode": returncode}


def ready(report: Mapping[str, Any]) -> dict[str, Any]:
    return {"ready": True, **report}


def preloaded(report: Mapping[str, Any]) -> bytes:
    """A worker's first line to the server: its preload report."""
    return encode({"preloaded": report})


def send(message: dict[str, Any]) -> None:
    """From the server to the daemon, on the server's stdout."""
    write_all(1, encode(message))


def split_lines(buffer: bytes, chunk: bytes) -> tuple[list[bytes], bytes]:
    """The complete, non-blank lines of `buffer + chunk`, and the partial line left over."""
    *lines, rest = (buffer + chunk).split(b"\n")
    return [line for line in lines if line.strip()], rest
