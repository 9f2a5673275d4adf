"""bgjobs.toml (SPEC §4): finding it, reading it, and checking every key before anything starts."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from spoold.errors import ConfigError
from spoold.job import NAME_PATTERN, PRIORITIES
from spoold.paths import Priority
from spoold.periodic import Entry, EntryError, parse_entry

CONFIG_NAME = "bgjobs.toml"
ENV_VAR = "BGJOBS_CONFIG"
BACKOFFS = ("fixed", "exponential")
MODULE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
Backoff = Literal["fixed", "exponential"]


@dataclass(frozen=True)
class RetryRule:
    """One [retry_on] entry; a field left out falls back to the global setting."""

    retry_attempts: int | None = None
    retry_delay_seconds: float | None = None
    retry_backoff: Backoff | None = None


@dataclass(frozen=True)
class DashboardSettings:
    """The [dashboard] table (SPEC §9); SPOOLD_DASHBOARD_TOKEN and SPOOLD_DASHBOARD_READ_TOKEN override
    the tokens when `spoold dashboard` starts."""

    host: str = "127.0.0.1"
    port: int = 8350
    token: str | None = None
    read_token: str | None = None


@dataclass(frozen=True)
class Config:
    """A checked bgjobs.toml; paths are absolute, resolved against the file's folder."""

    path: Path
    spool_dir: Path
    log_dir: Path
    namespace: str = "services"
    workers: int = 2
    retry_attempts: int = 3
    retry_delay_seconds: float = 5.0
    retry_backoff: Backoff = "fixed"
    max_execution_time: float = 300.0
    max_job_bytes: int = 1048576
    settle_seconds: float = 2.0
    shutdown_grace_seconds: float = 10.0
    rescan_seconds: float = 5.0
    priority_aging_seconds: float = 0.0
    keep_done_days: float = 7.0
    keep_failed_days: float = 30.0
    durability: Literal["fsync", "fast"] = "fsync"
    file_events: bool = True
    observer: Literal["auto", "native", "polling"] = "auto"
    memory_limit_mb: int = 0
    start_method: Literal["auto", "forkserver", "spawn"] = "auto"
    isolation: Literal["process", "worker"] = "process"
    max_jobs_per_worker: int = 1000
    bootstrap: str = ""
    log_format: Literal["text", "json"] = "text"
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    heartbeat_seconds: float = 5.0
    lease_seconds: float = 30.0
    allowed_jobs: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    job_priority: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    retry_on: Mapping[str, RetryRule] = field(default_factory=lambda: MappingProxyType({}))
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    schedule: Mapping[str, Entry] = field(default_factory=lambda: MappingProxyType({}))
    concurrency: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def root(self) -> Path:
        """The folder holding bgjobs.toml: paths are relative to it, and it leads the job's sys.path."""
        return self.path.parent

    def priority_of(self, class_name: str) -> str:
        return self.job_priority.get(class_name, Priority.MEDIUM)


# Converters: each takes the raw TOML value and returns the typed one, or raises ValueError("expected ...").

def _integer(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        return value
    return convert


def _number(minimum: float, *, inclusive: bool) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or value < minimum or (not inclusive and value == minimum):
            sign = ">=" if inclusive else ">"
            raise ValueError(f"expected a number {sign} {minimum:g}, got {value!r}")
        return float(value)
    return convert


def _choice(*allowed: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
        return str(value)
    return convert


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _module(value: Any) -> str:
    if not isinstance(value, str) or MODULE_PATTERN.fullmatch(value) is None:
        raise ValueError(f"expected a module name such as \"services\", got {value!r}")
    return value


def _entry_point(value: Any) -> str:
    """"package.module:function", or "" for none (SPEC §10, bootstrap)."""
    if value == "":
        return ""
    module, _, function = value.partition(":") if isinstance(value, str) else ("", "", "")
    if MODULE_PATTERN.fullmatch(module) is None or NAME_PATTERN.fullmatch(function) is None:
        raise ValueError(f'expected "package.module:function" (or "" for none), got {value!r}')
    return str(value)


def _port_or_off(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError(f"expected a port number from 1 to 65535, or 0 for off, got {value!r}")
    return value


def _class_name(name: str, *, public: bool) -> None:
    if NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(f"{name!r} is not a plain class name (letters, digits, _; no dots)")
    if public and name.startswith("_"):
        raise ValueError(f"{name!r} starts with '_': private names are never allowed")


def _methods(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a non-empty array of method names, got {value!r}")
    for method in value:
        if not isinstance(method, str) or NAME_PATTERN.fullmatch(method) is None:
            raise ValueError(f"expected method names, got {method!r}")
        if method.startswith("_"):
            raise ValueError(f"method {method!r} starts with '_': private methods are never allowed")
    return tuple(value)


RETRY_RULE_KEYS: dict[str, Callable[[Any], Any]] = {
    "retry_attempts": _integer(0),
    "retry_delay_seconds": _number(0, inclusive=True),
    "retry_backoff": _choice(*BACKOFFS),
}

SCALARS: dict[str, Callable[[Any], Any]] = {
    "spool_dir": _string,
    "log_dir": _string,
    "namespace": _module,
    "workers": _integer(1),
    "retry_attempts": _integer(0),
    "retry_delay_seconds": _number(0, inclusive=True),
    "retry_backoff": _choice(*BACKOFFS),
    "max_execution_time": _number(0, inclusive=False),
    "max_job_bytes": _integer(1),
    "settle_seconds": _number(0, inclusive=True),
    "shutdown_grace_seconds": _number(0, inclusive=True),
    "rescan_seconds": _number(0, inclusive=False),
    "priority_aging_seconds": _number(0, inclusive=True),
    "keep_done_days": _number(0, inclusive=True),
    "keep_failed_days": _number(0, inclusive=True),
    "durability": _choice("fsync", "fast"),
    "file_events": _boolean,
    "observer": _choice("auto", "native", "polling"),
    "memory_limit_mb": _integer(0),
    "start_method": _choice("auto", "forkserver", "spawn"),
    "isolation": _choice("process", "worker"),
    "max_jobs_per_worker": _integer(1),
    "bootstrap": _entry_point,
    "log_format": _choice("text", "json"),
    "metrics_port": _port_or_off,
    "metrics_host": _string,
    "heartbeat_seconds": _number(0, inclusive=False),
    "lease_seconds": _number(0, inclusive=False),
}

def _port(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError(f"expected a port number from 1 to 65535, got {value!r}")
    return value


DASHBOARD_KEYS: dict[str, Callable[[Any], Any]] = {
    "host": _string,
    "port": _port,
    "token": _string,
    "read_token": _string,
}
TABLES = ("allowed_jobs", "job_priority", "retry_on", "dashboard", "schedule", "concurrency")


def find_config(explicit: str | os.PathLike[str] | None = None, *, start: Path | None = None) -> Path:
    """--config, else $BGJOBS_CONFIG, else bgjobs.toml in the current folder or its parents."""
    if explicit:
        return Path(explicit).absolute()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).absolute()
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(None, "", f"no {CONFIG_NAME} found in {here} or its parents "
                      f"(give --config, set ${ENV_VAR}, or run `spoold init`)")


def _table(path: Path, raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(path, key, f"expected a table [{key}], got {value!r}")
    return value


def _convert_table(path: Path, key: str, table: dict[str, Any],
                   convert: Callable[[Any], Any]) -> dict[str, Any]:
    result = {}
    for name, value in table.items():
        try:
            _class_name(name, public=key != "retry_on")  # an exception class may be private; a job may not
            result[name] = convert(value)
        except ValueError as e:
            raise ConfigError(path, f"{key}.{name}", str(e)) from e
    return result


class _KeyProblem(ValueError):
    """A bad key inside a small table: which key, and what is wrong with it; str() names both."""

    def __init__(self, key: str, problem: str, *, unknown: bool = False) -> None:
        super().__init__(f"{problem}" if unknown else f"{key}: {problem}")
        self.key, self.problem = key, problem


def _keys(table: dict[str, Any], converters: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    """Each known key of a small table through its converter; _KeyProblem for an unknown or bad one."""
    unknown = sorted(set(table) - set(converters))
    if unknown:
        raise _KeyProblem(unknown[0], f"unknown key {unknown[0]!r} (allowed: {', '.join(converters)})", unknown=True)
    values = {}
    for key, convert in converters.items():
        if key in table:
            try:
                values[key] = convert(table[key])
            except ValueError as e:
                raise _KeyProblem(key, str(e)) from e
    return values


def _retry_rule(value: Any) -> RetryRule:
    if not isinstance(value, dict):
        raise ValueError(f"expected a table such as {{ retry_attempts = 5 }}, got {value!r}")
    return RetryRule(**_keys(value, RETRY_RULE_KEYS))


def _dashboard(path: Path, table: dict[str, Any]) -> DashboardSettings:
    try:
        values = _keys(table, DASHBOARD_KEYS)
    except _KeyProblem as e:
        raise ConfigError(path, f"dashboard.{e.key}", e.problem) from e
    if values.get("token") is not None and values.get("token") == values.get("read_token"):
        raise ConfigError(path, "dashboard.read_token", "must differ from dashboard.token")
    return DashboardSettings(**values)


def _schedule(path: Path, table: dict[str, Any], allowed: Mapping[str, tuple[str, ...]]) -> dict[str, Entry]:
    """NAME = { class = "C", cron = "..." } or every = "15m" (SPEC §12); the key names the entry and its field."""
    entries = {}
    for name, value in table.items():
        try:
            entries[name] = parse_entry(name, value, allowed)
        except EntryError as e:
            raise ConfigError(path, ".".join(filter(None, ("schedule", name, e.key))), e.problem) from e
    return entries


def _concurrency(path: Path, table: dict[str, Any], allowed: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """CLASS = N (SPEC §12); a class that is not allowed never runs, so its limit is a mistake."""
    limits = _convert_table(path, "concurrency", table, _integer(1))
    for name in limits:
        if name not in allowed:
            raise ConfigError(path, f"concurrency.{name}", "expected a class listed in [allowed_jobs]")
    return limits


def parse_config(path: Path, raw: dict[str, Any]) -> Config:
    """Check a decoded bgjobs.toml and build the Config; ConfigError names the file and key."""
    unknown = sorted(set(raw) - set(SCALARS) - set(TABLES))
    if unknown:
        raise ConfigError(path, unknown[0], f"unknown key (known keys: {', '.join([*SCALARS, *TABLES])})")
    values: dict[str, Any] = {}
    for key, convert in SCALARS.items():
        if key in raw:
            try:
                values[key] = convert(raw[key])
            except ValueError as e:
                raise ConfigError(path, key, str(e)) from e
    heartbeat, lease = values.get("heartbeat_seconds", 5.0), values.get("lease_seconds", 30.0)
    if lease < 3 * heartbeat:  # a daemon fences itself 2 heartbeats before its lease ends (docs/design.md, H4)
        raise ConfigError(path, "lease_seconds", f"expected at least 3 x heartbeat_seconds ({3 * heartbeat:g}), "
                          f"got {lease:g}")
    root = path.parent
    values["spool_dir"] = (root / values.get("spool_dir", "spool")).absolute()
    values["log_dir"] = (root / values.get("log_dir", "storage/logs")).absolute()
    allowed = _convert_table(path, "allowed_jobs", _table(path, raw, "allowed_jobs"), _methods)
    priority = _convert_table(path, "job_priority", _table(path, raw, "job_priority"), _choice(*PRIORITIES))
    retry_on = _convert_table(path, "retry_on", _table(path, raw, "retry_on"), _retry_rule)
    schedule = _schedule(path, _table(path, raw, "schedule"), allowed)
    concurrency = _concurrency(path, _table(path, raw, "concurrency"), allowed)
    return Config(path=path, allowed_jobs=MappingProxyType(allowed), job_priority=MappingProxyType(priority),
                  retry_on=MappingProxyType(retry_on), dashboard=_dashboard(path, _table(path, raw, "dashboard")),
                  schedule=MappingProxyType(schedule), concurrency=MappingProxyType(concurrency), **values)


def load_config(path: Path) -> Config:
    """Read and check one bgjobs.toml; every problem is a ConfigError naming the file and the key."""
    path = path.absolute()
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError as e:
        raise ConfigError(path, "", "file not found") from e
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from e
    return parse_config(path, raw)
