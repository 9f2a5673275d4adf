"""Where the example services keep their files, and the two ways they write them.

Logs go to ``$SPOOLD_LOG_DIR`` (the daemon sets it to the configured ``log_dir``); user dashboards go to a
``dashboards`` folder beside it, so cleaning the logs never wipes user state.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOG_DIR_ENV = "SPOOLD_LOG_DIR"
DEFAULT_LOG_DIR = Path("storage", "logs")
DASHBOARDS_FOLDER = "dashboards"

Clock = Callable[[], datetime]
JsonDict = dict[str, Any]


def utc_now() -> datetime:
    """The services' default clock; tests pass their own to get exact timestamps."""
    return datetime.now(UTC)


def log_dir() -> Path:
    """``$SPOOLD_LOG_DIR``, else ``storage/logs``; relative values are taken from the working directory,
    which for a job is the folder holding bgjobs.toml."""
    return Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR).absolute()


def dashboards_dir() -> Path:
    """``<log_dir>/../dashboards``: next to the logs, not inside them."""
    return log_dir().parent / DASHBOARDS_FOLDER


def append_line(name: str, text: str) -> Path:
    """Append ``text`` and a newline to ``<log_dir>/<name>`` and return the file's path.

    One ``os.write`` on an ``O_APPEND`` descriptor, so lines from jobs running at once never interleave.
    """
    if "\n" in text:
        raise ValueError(f"{name}: a log line must not contain a newline, got {text!r}")
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)
    log.debug("appended to %s: %s", path, text)
    return path


def write_json_atomic(path: Path, data: JsonDict) -> None:
    """Replace ``path`` with ``data`` as JSON: a temp file in the same folder, fsync, then ``os.replace``.

    Readers see the old file or the new one, never half of one; a value that is not JSON leaves the old file.
    """
    text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the dashboard is not a secret
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
