"""The [schedule] entries of SPEC §12 and their slots: pure arithmetic on UTC epoch seconds, no I/O.

Every daemon on a spool must compute the same slots, so a slot is a function of the entry and the
clock only. cronsim (the `cron` extra) is imported only when a cron entry is checked or evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spoold.job import MAX_DEPTH, PRIORITIES

ENTRY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}
ENTRY_KEYS = ("class", "method", "params", "priority", "cron", "every", "timezone")
CRON_EXTRA = "pip install 'spoold[cron]'"

_EVERY = re.compile(r"([0-9]{1,12})([smhd])")  # 12 digits: far beyond any use, and a float holds it exactly
# One field of Vixie cron: a list of `*`, N or N-M (N a number or a three-letter name), each with an
# optional /STEP. cronsim also reads L, W, # and a sixth (seconds) field; those are not cron here.
_VALUE = r"(?:[0-9]+|[A-Za-z]{3})"
_TERM = rf"(?:\*|{_VALUE}(?:-{_VALUE})?)(?:/[0-9]+)?"
_FIELD = re.compile(rf"{_TERM}(?:,{_TERM})*")
_CRON_FORM = ("five fields (minute hour day-of-month month day-of-week) or one of "
              + ", ".join(ALIASES))


@dataclass(frozen=True)
class Entry:
    """One [schedule] entry: what to submit, and when (exactly one of `cron` and `every`)."""

    name: str
    class_name: str
    method: str = "handle"
    params: list[Any] | dict[str, Any] = field(default_factory=list)
    priority: str | None = None
    cron: str | None = None
    every: float | None = None  # seconds
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule entry {self.name!r}: expected exactly one of cron and every")


class EntryError(ValueError):
    """Raised when a [schedule] entry is bad; `key` is the entry's key at fault ("" for the entry itself)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key, self.problem = key, problem


def parse_every(text: Any) -> float:
    """"15m" -> 900.0: a whole number and one unit, so the slots stay on a grid of whole seconds."""
    match = _EVERY.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f'expected a whole number and one unit s, m, h or d (at least 1s), such as "15m", '
                         f"got {text!r}")
    return float(int(match.group(1)) * UNITS[match.group(2)])


def check_cron(text: Any) -> str:
    """The five fields cronsim is given for a cron text; ValueError for text that is not Vixie cron."""
    if not isinstance(text, str):
        raise ValueError(f"expected {_CRON_FORM}, got {text!r}")
    fields = ALIASES.get(text.strip(), text).split()
    if len(fields) != 5 or not all(_FIELD.fullmatch(f) for f in fields):
        raise ValueError(f"expected {_CRON_FORM}, got {text!r}")
    expression = " ".join(fields)
    cronsim = _cronsim()
    try:
        cronsim.CronSim(expression, datetime(2000, 1, 1))
    except cronsim.CronSimError as e:
        raise ValueError(f"expected {_CRON_FORM}, got {text!r} ({str(e).lower()})") from e
    return expression


def check_timezone(name: Any) -> str:
    """An IANA zone name that zoneinfo can load here, checked at startup rather than at the first slot."""
    if not isinstance(name, str) or not name:
        raise ValueError(f'expected an IANA time zone name such as "Europe/Paris", got {name!r}')
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f'expected an IANA time zone name such as "Europe/Paris", got {name!r}') from e
    return name


def check_params(value: Any) -> list[Any] | dict[str, Any]:
    """params as the job document will hold them: JSON values only (TOML also has dates and times)."""
    if not isinstance(value, list | dict):
        raise ValueError(f"expected an array or a table, got {value!r}")
    stack: list[tuple[Any, str, int]] = [(value, "params", 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, datetime | date | time):
            raise ValueError(f"{where} is a TOML date or time, which JSON cannot hold (write it as a string)")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{where} is {item!r}, which JSON cannot hold")
        if isinstance(item, list | dict) and depth > MAX_DEPTH:
            raise ValueError(f"{where}: nesting deeper than {MAX_DEPTH} levels")
        if isinstance(item, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, dict):
            stack.extend((child, f"{where}.{key}", depth + 1) for key, child in item.items())
    return value


def _check_priority(value: Any) -> str:
    if value not in PRIORITIES:
        raise ValueError(f"expected one of {', '.join(map(repr, PRIORITIES))}, got {value!r}")
    return str(value)


# The converters of an entry's keys; "class" and "method" are checked against [allowed_jobs] instead.
_CONVERTERS = {"params": check_params, "priority": _check_priority, "cron": check_cron, "every": parse_every,
               "timezone": check_timezone}


def parse_entry(name: str, value: Any, allowed_jobs: Mapping[str, Sequence[str]]) -> Entry:
    """A [schedule] entry from its TOML table; EntryError names the key at fault."""
    _check_shape(name, value)
    class_name, method = value.get("class"), value.get("method", "handle")
    if "class" not in value:
        raise EntryError("class", 'missing: expected class = "C", a class listed in [allowed_jobs]')
    if not isinstance(class_name, str) or class_name not in allowed_jobs:
        raise EntryError("class", f"expected a class listed in [allowed_jobs], got {class_name!r}")
    if method not in allowed_jobs[class_name]:
        raise EntryError("method", f"expected a method allowed for {class_name} "
                         f"({', '.join(allowed_jobs[class_name])}), got {method!r}")
    for key, convert in _CONVERTERS.items():
        if key in value:
            try:
                convert(value[key])
            except ModuleNotFoundError as e:
                if e.name != "cronsim":
                    raise
                raise EntryError(key, f"cron entries need the cron extra: {CRON_EXTRA}") from e
            except ValueError as e:
                raise EntryError(key, str(e)) from e
    every = value.get("every")
    return Entry(name, class_name, method, value.get("params", []), value.get("priority"), cron=value.get("cron"),
                 every=None if every is None else parse_every(every), timezone=value.get("timezone", "UTC"))


def _check_shape(name: str, value: Any) -> None:
    """The entry's name, that it is a table of known keys, and that it has exactly one of cron and every."""
    if ENTRY_NAME.fullmatch(name) is None:
        raise EntryError("", f"{name!r} is not an entry name (1 to 64 of A-Z, a-z, 0-9, _ and -)")
    if not isinstance(value, dict):
        raise EntryError("", f'expected a table such as {{ class = "C", every = "15m" }}, got {value!r}')
    unknown = sorted(set(value) - set(ENTRY_KEYS))
    if unknown:
        raise EntryError(unknown[0], f"unknown key (allowed: {', '.join(ENTRY_KEYS)})")
    if ("cron" in value) == ("every" in value):
        given = "both" if "cron" in value else "neither"
        raise EntryError("", f"expected exactly one of cron and every, got {given}")
    if "timezone" in value and "every" in value:
        raise EntryError("timezone", "applies to cron only (every's slots fall on the UTC epoch grid)")


def latest_due(entry: Entry, now: float) -> float | None:
    """The latest slot at or before `now` (UTC epoch seconds); None if a cron entry has none in 50 years."""
    seconds = math.floor(now)  # slots fall on whole seconds
    if entry.every is not None:
        return float(seconds // int(entry.every) * int(entry.every))
    return next(_cron_slots(entry, seconds, reverse=True), None)


def next_due(entry: Entry, now: float) -> float:
    """The first slot strictly after `now`; LookupError if a cron entry has none in 50 years."""
    seconds = math.floor(now)
    if entry.every is not None:
        return float((seconds // int(entry.every) + 1) * int(entry.every))
    found = next(_cron_slots(entry, seconds, reverse=False), None)
    if found is None:
        raise LookupError(f"schedule entry {entry.name!r}: no slot in the next 50 years")
    return found


def slot_id(name: str, due: float) -> str:
    """The job id of a slot (SPEC §12), the same on every daemon: cron-NAME-YYYYMMDDTHHMMSSZ."""
    return f"cron-{name}-{datetime.fromtimestamp(math.floor(due), UTC):%Y%m%dT%H%M%SZ}"


def describe(entry: Entry) -> str:
    """A short text for status and the dashboard: `every 15m`, `cron "0 3 * * *" (Europe/Paris)`."""
    if entry.every is not None:
        seconds = int(entry.every)
        unit = next(u for u in ("d", "h", "m", "s") if seconds % UNITS[u] == 0)
        return f"every {seconds // UNITS[unit]}{unit}"
    return f'cron "{entry.cron}" ({entry.timezone})'


def _cronsim() -> Any:
    # Imported here so that `every`-only configs, and everything that merely loads a config, need no extra.
    import cronsim

    return cronsim


def _cron_slots(entry: Entry, now: int, *, reverse: bool) -> Iterator[float]:
    """The slots of a cron entry from `now` on (after it, or at and before it), as UTC epoch seconds.

    cronsim is run on naive wall-clock times and each one is mapped to an instant here, so that the
    SPEC's rules hold for every expression: a local time that does not exist is skipped, one that
    repeats runs once, at its first occurrence. cronsim's own handling differs (Debian cron's): given
    an aware start, it moves a fixed-time job from a skipped time to the first minute after the gap
    (02:30 -> 03:00), and runs a job whose hour is `*` in both passes of a repeated hour.
    """
    zone = ZoneInfo(entry.timezone)
    local = datetime.fromtimestamp(now, zone)
    wall = local.replace(tzinfo=None)
    if reverse:
        # In the second pass of a repeated hour, later wall times of that hour (first pass) are still
        # before now: start as far ahead as the clock went back, and let the filter below skip.
        ahead = (local.replace(fold=0).utcoffset() or timedelta()) - (local.utcoffset() or timedelta())
        wall += ahead + timedelta(seconds=1)  # cronsim's reverse starts strictly before its start
    expression = check_cron(entry.cron)
    for candidate in _cronsim().CronSim(expression, wall, reverse=reverse):
        instant = _first_instant(candidate, zone)
        if instant is not None and (instant <= now if reverse else instant > now):
            yield instant


def _first_instant(wall: datetime, zone: ZoneInfo) -> float | None:
    """The UTC epoch seconds of a naive local time's first occurrence; None if the clock skips it."""
    aware = wall.replace(tzinfo=zone, fold=0)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return aware.timestamp()
