"""What the seize (docs/design.md, H3) adds to a commit: one commit with it, and the same steps without it.

    .venv/bin/python bench/seize_cost.py [--jobs 2000] [--spool DIR | --gluster] [--fast]

A commit is the seize (a rename of the claim to `.ID.json.moving`), the new version staged in tmp/,
fsynced, linked into done/ (and done/ fsynced), then the seized copy unlinked. Without the seize, the
same steps run on the claim itself. Both are timed on fresh claims in one spool, interleaved in rounds,
medians of the rounds; `--fast` is durability "fast" (no fsync), where the rename weighs the most.
`--gluster` makes the spool on a GlusterFS volume of tests/sharedfs.py (a FUSE mount of a local brick),
where every call is a round trip to the file server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from spoold.job import Job
from spoold.paths import Folder, SpoolPaths
from spoold.spool.moves import Mover

DOC = {"class": "Echo", "method": "handle", "params": [], "status": "done", "attempts": 1}


def claims(paths: SpoolPaths, prefix: str, count: int) -> list[Path]:
    node = paths.running / "bench-node"
    made = []
    for n in range(count):
        path = node / f"{prefix}-{n:06d}.json"
        path.write_bytes(b'{"class": "Echo"}')
        made.append(path)
    return made


def with_seize(mover: Mover, claimed: list[Path]) -> float:
    began = time.perf_counter()
    for path in claimed:
        mover.commit(Job(path.stem, dict(DOC)), path, Folder.DONE)
    return (time.perf_counter() - began) / len(claimed) * 1e6


def without_seize(mover: Mover, claimed: list[Path]) -> float:
    began = time.perf_counter()
    for path in claimed:
        job = Job(path.stem, dict(DOC))
        mover.write(job, Folder.DONE)
        os.unlink(path)
    return (time.perf_counter() - began) / len(claimed) * 1e6


@contextlib.contextmanager
def gluster_folder() -> Iterator[Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from sharedfs import Rig

    rig = Rig()
    try:
        rig.start()
        yield rig.volume(hosts=1).hosts[0].mount
    finally:
        rig.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="commits per variant")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spool", type=Path, help="a folder to make the spool in (default: a temp folder)")
    parser.add_argument("--gluster", action="store_true", help="on a GlusterFS volume (needs root and glusterfs)")
    parser.add_argument("--fast", action="store_true", help='durability "fast": no fsync')
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        where = stack.enter_context(gluster_folder()) if args.gluster else args.spool
        measure(args, where)


def measure(args: argparse.Namespace, where: Path | None) -> None:
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        paths = SpoolPaths(Path(tmp) / "spool")
        paths.create()
        (paths.running / "bench-node").mkdir()
        mover = Mover(paths, durable=not args.fast)
        per = max(1, args.jobs // args.rounds)
        seized, plain = [], []
        for r in range(args.rounds):
            seized.append(with_seize(mover, claims(paths, f"s{r}", per)))
            plain.append(without_seize(mover, claims(paths, f"p{r}", per)))
        a, b = statistics.median(seized), statistics.median(plain)
        label = "GlusterFS" if args.gluster else where or tempfile.gettempdir()
        print(f"commit on {label} ({'fast' if args.fast else 'fsync'}, {per * args.rounds} per variant): "
              f"with the seize {a:.1f} µs, without {b:.1f} µs, the seize adds {a - b:.1f} µs ({(a - b) / b:+.1%})")


if __name__ == "__main__":
    main()
