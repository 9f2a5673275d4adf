"""What the dashboard keeps on disk between its runs, so that its first answers after a restart (or after
the page cache was dropped) need not list 100,000 names or parse a week of log again: each folder's
sorted ids, keyed by the folder's (mtime, size, inode), and the per-minute rollup of the event log, keyed
by the log's identity and the offset it reached. An entry whose key does not match is never used (the
folder is listed, the log read, as without a cache), and a cache that cannot be written is skipped.

It lives in the user's cache folder ($XDG_CACHE_HOME or ~/.cache, spoold/dashboard/HASH-OF-THE-SPOOL), never
in the spool, so a dashboard that may only read the spool still has one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SAVE_EVERY_SECONDS = 60.0  # a large folder changes with every job: its names are written at most this often


def cache_folder(spool: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "spoold" / "dashboard" / hashlib.sha256(str(spool).encode()).hexdigest()[:16]


class DiskCache:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.saved_at: dict[str, float] = {}

    def load(self, name: str) -> Any:
        """The value saved under `name`, or None (none saved, unreadable, or no cache)."""
        if self.folder is None:
            return None
        try:
            return json.loads((self.folder / f"{name}.json").read_bytes())
        except (OSError, ValueError):
            return None

    def save(self, name: str, value: Any, *, now: float | None = None, force: bool = False) -> None:
        """Write `value` (at most once per SAVE_EVERY_SECONDS for a name, unless forced); whole or not at all."""
        now = time.monotonic() if now is None else now
        if self.folder is None or (not force and now - self.saved_at.get(name, -SAVE_EVERY_SECONDS) <
                                   SAVE_EVERY_SECONDS):
            return
        self.saved_at[name] = now
        target = self.folder / f"{name}.json"
        part = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            part.write_text(json.dumps(value, separators=(",", ":")), encoding="utf-8")
            os.replace(part, target)
        except OSError as e:
            log.debug("dashboard cache %s not written: %s", target, e)
            with contextlib.suppress(OSError):
                part.unlink()
