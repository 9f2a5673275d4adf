"""`spoold init` and `spoold allow`: write a commented bgjobs.toml, and add to its allowlist in place.

tomli-w cannot write comments, so `init` assembles the text around its output, and `allow` edits the
text instead of re-dumping it, so a person's comments and order survive. Both parse what they made
with tomllib and config.parse_config before writing, and write a temp file that replaces the old one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import re
import secrets
import stat
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from spoold.config import SCALARS, Config, parse_config
from spoold.errors import ConfigError

log = logging.getLogger(__name__)

# Config has no defaults for the paths (they are resolved against the file); parse_config uses these.
PATH_DEFAULTS = {"spool_dir": "spool", "log_dir": "storage/logs"}

# One line per key of config.SCALARS, written above it; a test checks that none is missing.
COMMENTS: dict[str, str] = {
    "spool_dir": "The spool: one folder per job state (high/, medium/, low/, scheduled/, done/, ...).",
    "log_dir": "Where background_jobs.log and background_jobs_errors.log are written.",
    "namespace": "The package where short class names are looked up.",
    "workers": "Jobs running at once.",
    "retry_attempts": "Retries after the first failure.",
    "retry_delay_seconds": "Seconds to wait before a retry.",
    "retry_backoff": '"fixed" or "exponential" (with jitter).',
    "max_execution_time": "Seconds a job may run; the child is killed past it.",
    "max_job_bytes": "The largest job file a submitter may write, in bytes.",
    "settle_seconds": "An invalid file must be unchanged this long before it is rejected.",
    "shutdown_grace_seconds": "On SIGTERM, running jobs get this long to finish.",
    "rescan_seconds": "Seconds between full rescans of the spool; file events only wake the daemon sooner.",
    "priority_aging_seconds": "A ready job waiting longer than this runs as if one level higher (per period); "
                              "0: strict high > medium > low.",
    "keep_done_days": "Days a job stays in done/ before the daemon deletes it; 0 keeps it forever.",
    "keep_failed_days": "Days a job stays in failed/ (and a file in rejected/) before deletion; 0 keeps it forever.",
    "durability": '"fsync": every state change survives a power loss; "fast": no fsync (a crash of the machine '
                  "may lose recent moves).",
    "file_events": "Watch the ready folders for file events; false relies on rescans only (network filesystems).",
    "observer": '"native": file events; "polling": list the ready folders and scheduled/ every 0.2 s (events '
                'never cross hosts); "auto": polling when the spool is on a network or FUSE filesystem.',
    "memory_limit_mb": "Address-space limit of each job's child in MiB (where the platform has setrlimit); 0: none.",
    "start_method": '"forkserver": each job is a fork of a warm server that imported the namespace (fast); '
                    '"spawn": a fresh interpreter per job (portable); "auto": forkserver where it can fork.',
    "isolation": '"process": a new process per job; "worker": long-lived workers run many jobs each '
                 "(faster, less isolated; POSIX only).",
    "max_jobs_per_worker": 'With isolation = "worker", a worker is replaced after this many jobs.',
    "bootstrap": '"package.module:function" called once in every process that runs jobs, before its first job '
                 '(django.setup(), a Flask app context); "": none.',
    "log_format": '"text": key=value lines; "json": one JSON object per line (the same keys, plus ts).',
    "metrics_port": "Serve Prometheus metrics at http://metrics_host:PORT/metrics "
                    "(pip install 'spoold[metrics]'); 0: off.",
    "metrics_host": "The address the metrics endpoint listens on.",
    "heartbeat_seconds": "Seconds between renewals of this daemon's lease (running/DAEMON/.heartbeat).",
    "lease_seconds": "A daemon of another host whose heartbeat was not seen to change for this long is dead, and "
                     "its jobs are taken over; one that cannot renew stops its jobs before then (several hosts).",
}

# Each table: the comment above its header, and the commented-out examples written while it is empty.
TABLE_DOCS: dict[str, tuple[str, tuple[str, ...]]] = {
    "allowed_jobs": ('Only these classes and methods ever run (never a method starting with "_"); '
                     "`spoold allow` adds one.",
                     ('LessonCreatedService = ["handle"]',)),
    "job_priority": ('The folder a class goes to when the submitter names no priority: "high", "medium" '
                     '(the default) or "low".',
                     ('LessonCreatedService = "high"',)),
    "retry_on": ("Retry rules per exception type (class name, first match by MRO); "
                 "a key left out uses the setting above.",
                 ('ConnectionError = { retry_attempts = 5, retry_delay_seconds = 1, '
                  'retry_backoff = "exponential" }',
                  "ValueError = { retry_attempts = 0 }  # never retried")),
    "dashboard": ("`spoold dashboard` (pip install 'spoold[dashboard]'): on a loopback host with no token it is "
                  "open; any other host needs token. $SPOOLD_DASHBOARD_TOKEN and $SPOOLD_DASHBOARD_READ_TOKEN "
                  "override the tokens.",
                  ('host = "127.0.0.1"', "port = 8350", 'token = "a long random string"  # admin: may retry and cancel',
                   'read_token = "another one"        # may only look')),
    "schedule": ("Periodic jobs: each slot is submitted once per spool, as the job cron-NAME-YYYYMMDDTHHMMSSZ (its "
                 'due time in UTC). every = "15m" (s, m, h, d) falls on multiples of the interval since 1970-01-01 '
                 "UTC; cron is read in timezone (default UTC) and needs pip install 'spoold[cron]'. The class "
                 "must be in [allowed_jobs].",
                 ('nightly_report = { class = "LessonCreatedService", cron = "0 3 * * *", timezone = "Europe/Paris" }',
                  'refresh = { class = "LessonCreatedService", method = "handle", params = [], every = "15m", '
                  'priority = "low" }')),
    "concurrency": ("At most N jobs of a class run at once across every daemon on the spool; the others wait "
                    "in their ready folder without spending attempts. The class must be in [allowed_jobs].",
                    ("LessonCreatedService = 2",)),
}
TITLE = "# bgjobs.toml: the configuration of spoold. Paths are relative to this file."

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\')'
_KEY = re.compile(rf"[ \t]*({_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*)[ \t]*=[ \t]*")


def default_values() -> dict[str, Any]:
    """Each key of config.SCALARS with the value Config takes when the key is left out, in SCALARS order."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config) if f.default is not dataclasses.MISSING}
    defaults.update(PATH_DEFAULTS)
    missing = [key for key in SCALARS if key not in defaults]
    if missing:
        raise LookupError(f"no default for {', '.join(missing)}: give it one in Config or PATH_DEFAULTS")
    return {key: defaults[key] for key in SCALARS}


def render_default_config(*, allowed_jobs: Mapping[str, Sequence[str]] | None = None,
                          job_priority: Mapping[str, str] | None = None) -> str:
    """The commented bgjobs.toml of `spoold init`; it loads to exactly Config's defaults plus the tables."""
    lines = [TITLE, ""]
    for key, value in default_values().items():
        if key in COMMENTS:
            lines.append(f"# {COMMENTS[key]}")
        lines += [tomli_w.dumps({key: value}).rstrip("\n"), ""]
    tables: dict[str, dict[str, Any]] = {
        "allowed_jobs": {name: _names(methods) for name, methods in (allowed_jobs or {}).items()},
        "job_priority": dict(job_priority or {}),
        "retry_on": {},
        "dashboard": {},
        "schedule": {},
        "concurrency": {},
    }
    for name, entries in tables.items():
        comment, examples = TABLE_DOCS[name]
        lines += [f"# {comment}", f"[{name}]"]
        if entries:
            lines.append(tomli_w.dumps(entries).rstrip("\n"))
        else:
            lines += [f"# {example}" for example in examples]
        lines.append("")
    return "\n".join(lines)


def write_default_config(path: Path, *, force: bool = False,
                         allowed_jobs: Mapping[str, Sequence[str]] | None = None,
                         job_priority: Mapping[str, str] | None = None) -> None:
    """`spoold init`: never overwrites a file unless forced, and never leaves half a file behind."""
    path = path.absolute()
    if not force and (path.exists() or path.is_symlink()):
        raise ConfigError(path, "", "already exists (use --force to overwrite)")
    text = render_default_config(allowed_jobs=allowed_jobs, job_priority=job_priority)
    parse_config(path, tomllib.loads(text))  # a bad class name or priority given to us fails here
    _write_atomically(path, text.encode("utf-8"))
    log.debug("wrote %s", path)


def allow(path: Path, class_name: str, methods: Sequence[str]) -> tuple[str, ...]:
    """`spoold allow`: add CLASS with METHODS to [allowed_jobs] by editing the text, and return its methods.

    Names follow the rules of config; a file that would not load afterwards, or whose text cannot be
    edited safely, is left untouched and ConfigError says why.
    """
    path = path.absolute()
    wanted = _names(methods)
    parse_config(path, {"allowed_jobs": {class_name: wanted}})  # the same rules and messages as loading
    text, raw = _read(path)
    parse_config(path, raw)  # refuse to edit a file that is already bad
    table: dict[str, Any] = raw.get("allowed_jobs", {})
    old: list[str] = table.get(class_name, [])
    additions = [method for method in dict.fromkeys(wanted) if method not in old]
    if not additions:
        return tuple(old)
    new_text = _edit(path, text, "allowed_jobs" in raw, class_name, old, additions)
    expected = {**raw, "allowed_jobs": {**table, class_name: [*old, *additions]}}
    try:
        new_raw = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as e:
        raise _cannot_edit(path, class_name, f"the result would not be valid TOML: {e}") from e
    if new_raw != expected:
        raise _cannot_edit(path, class_name, "the result would change more than that entry")
    parse_config(path, new_raw)
    _write_atomically(path, new_text.encode("utf-8"))
    log.debug("%s: allowed_jobs.%s = %s", path, class_name, [*old, *additions])
    return (*old, *additions)


def _names(methods: Sequence[str]) -> list[str]:
    # A lone string is one method name, not a sequence of one-letter names.
    return [methods] if isinstance(methods, str) else list(methods)


def _cannot_edit(path: Path, class_name: str, why: str) -> ConfigError:
    return ConfigError(path, "allowed_jobs", f"cannot edit the file in place ({why}); "
                       f"add {class_name} under [allowed_jobs] by hand")


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    # Bytes, not read_text(): newline translation would turn CRLF files into LF ones on write.
    try:
        text = path.read_bytes().decode("utf-8")
        return text, tomllib.loads(text)
    except FileNotFoundError as e:
        raise ConfigError(path, "", "file not found (create one with `spoold init`)") from e
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror}") from e
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from e


def _edit(path: Path, text: str, has_table: bool, class_name: str, old: list[str],
          additions: list[str]) -> str:
    nl = "\r\n" if "\r\n" in text else "\n"
    spans = _scan(text)
    if spans is None:
        raise _cannot_edit(path, class_name, "a line could not be understood")
    header = next((s for s in spans if s.is_header and _names_table(s.key, "allowed_jobs")), None)
    if header is None:
        if has_table:
            raise _cannot_edit(path, class_name, "allowed_jobs is not written as an [allowed_jobs] table")
        block = f"# {TABLE_DOCS['allowed_jobs'][0]}{nl}[allowed_jobs]{nl}{_dump({class_name: additions}, nl)}"
        return (text + (nl if text.endswith("\n") else nl * 2) + block) if text else block
    section = list(itertools.takewhile(lambda s: not s.is_header, spans[spans.index(header) + 1:]))
    entry = next((s for s in section if _key_is(s.key, class_name)), None)
    if old and entry is not None:
        return _extend_array(text, entry.value, additions, nl)
    # A new entry goes after the last one, or after the header and the comments right below it.
    at = section[-1].end if section else _skip_comment_lines(text, header.end)
    prefix = nl if at and not text[:at].endswith("\n") else ""
    return text[:at] + prefix + _dump({class_name: additions}, nl) + text[at:]


def _extend_array(text: str, value: tuple[int, int], additions: list[str], nl: str) -> str:
    """Append to an array where it stands, so its layout and any comments inside it stay."""
    start, stop = value
    close = stop - 1  # the "]"
    after = _last_token_end(text, start + 1, close)
    comma = "" if text[after - 1] in ",[" else ","
    items = [tomli_w.dumps({"v": method})[len("v = "):].rstrip("\n") for method in additions]
    line_start = text.rfind("\n", 0, close) + 1
    if "\n" in text[start:close] and not text[line_start:close].strip():
        indent = _item_indent(text, after - 1)
        lines = "".join(f"{indent}{item},{nl}" for item in items)
        return text[:after] + comma + text[after:line_start] + lines + text[line_start:]
    glue = "" if text[after - 1] == "[" else " "
    return text[:after] + comma + glue + ", ".join(items) + text[after:]


def _dump(table: dict[str, Any], nl: str) -> str:
    return tomli_w.dumps(table).replace("\n", nl)


@dataclasses.dataclass(frozen=True)
class _Span:
    """A header line, or a `key = value` with its whole lines: text[start:end]."""

    key: str  # as written: '[allowed_jobs]  # comment', 'Foo', '"Foo"'
    is_header: bool
    start: int
    end: int
    value: tuple[int, int] = (0, 0)  # text[value[0]:value[1]] is the value of a key


def _scan(text: str) -> list[_Span] | None:
    """Split the text into headers and key = value entries, skipping blank lines and comments.

    Values are skipped as a whole, so a "[" or "#" inside a string or a multi-line array is never
    taken for a header or a comment. None when a line is none of these.
    """
    spans: list[_Span] = []
    pos = 0
    while pos < len(text):
        eol = _next_line(text, pos)
        line = text[pos:eol].strip()
        if not line or line.startswith("#"):
            pos = eol
        elif line.startswith("["):
            spans.append(_Span(line, True, pos, eol))
            pos = eol
        else:
            match = _KEY.match(text, pos)
            if match is None:
                return None
            stop = _value_end(text, match.end())
            end = _next_line(text, stop)
            spans.append(_Span(match.group(1), False, pos, end, (match.end(), stop)))
            pos = end
    return spans


def _value_end(text: str, i: int) -> int:
    """Index just past the value starting at i: a string, an array or inline table, or a bare scalar."""
    depth = 0
    while i < len(text):
        char = text[i]
        if depth == 0 and char in "#\r\n":
            return len(text[:i].rstrip(" \t"))
        if char == "#":
            i = _next_line(text, i)
            continue
        if char in "\"'":
            i = _string_end(text, i)
            closed = True
        else:
            depth += (char in "[{") - (char in "]}")
            closed = char in "]}"
            i += 1
        if closed and depth == 0:
            return i
    return len(text.rstrip(" \t\r\n"))


def _string_end(text: str, i: int) -> int:
    """Index just past the basic, literal or multi-line string that opens at i."""
    quote = text[i] * 3 if text.startswith(text[i] * 3, i) else text[i]
    j = i + len(quote)
    while j < len(text):
        if text[j] == "\\" and quote[0] == '"':
            j += 2
        elif text.startswith(quote, j):
            end = j + len(quote)
            # A multi-line string may end in up to two more quotes: """a""""" is 'a""'.
            while len(quote) == 3 and end < len(text) and text[end] == quote[0] and end - j < 5:
                end += 1
            return end
        else:
            j += 1
    return len(text)


def _last_token_end(text: str, i: int, stop: int) -> int:
    """Index just past the last thing in text[i:stop] that is not blank or a comment."""
    last = i
    while i < stop:
        char = text[i]
        if char == "#":
            i = _next_line(text, i)
        elif char in "\"'":
            i = last = _string_end(text, i)
        else:
            i += 1
            if not char.isspace():
                last = i
    return last


def _item_indent(text: str, pos: int) -> str:
    # Line up with the last item when it starts its line; else the four spaces tomli-w uses.
    line = text[text.rfind("\n", 0, pos) + 1:pos + 1]
    rest = line.lstrip(" \t")
    return line[:len(line) - len(rest)] if rest[:1] in ("'", '"') else "    "


def _next_line(text: str, pos: int) -> int:
    eol = text.find("\n", pos)
    return len(text) if eol < 0 else eol + 1


def _skip_comment_lines(text: str, pos: int) -> int:
    while pos < len(text) and text[pos:_next_line(text, pos)].lstrip().startswith("#"):
        pos = _next_line(text, pos)
    return pos


def _names_table(header: str, name: str) -> bool:
    # tomllib decides what a header names: [allowed_jobs], [ "allowed_jobs" ], with a comment or not.
    try:
        return tomllib.loads(header) == {name: {}}
    except tomllib.TOMLDecodeError:
        return False


def _key_is(key: str, name: str) -> bool:
    try:
        return tomllib.loads(f"{key} = 0") == {name: 0}
    except tomllib.TOMLDecodeError:
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a temp file beside the target, fsync it, then os.replace: readers see the old file or the new."""
    target = path.resolve()  # through a symlink, so the link stays a link
    try:
        mode: int | None = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = None  # a new file: 0o666 minus the umask, as open() gives it
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise ConfigError(path, "", f"cannot write: {e.strerror or e}") from e
    with contextlib.suppress(OSError):  # make the rename durable; not every filesystem allows this
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
