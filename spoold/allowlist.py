"""The allowlist of SPEC §4: checked before anything is imported; resolve_class runs in the child only."""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from types import ModuleType

from spoold.errors import JobNotFound, JobRejected
from spoold.job import NAME_PATTERN


def check_allowed(allowed_jobs: Mapping[str, Sequence[str]], class_name: str, method: str) -> None:
    """Raise JobRejected unless CLASS.METHOD is listed; private and dotted names never pass."""
    if NAME_PATTERN.fullmatch(class_name) is None or class_name.startswith("_"):
        raise JobRejected(f"class {class_name!r} is not a plain class name (no dots, no paths, not starting with _)")
    if NAME_PATTERN.fullmatch(method) is None or method.startswith("_"):
        raise JobRejected(f"method {method!r} of {class_name} is never allowed (plain public names only)")
    methods = allowed_jobs.get(class_name)
    if methods is None:
        raise JobRejected(f"class {class_name!r} is not allowed (not in [allowed_jobs])")
    if method not in methods:
        raise JobRejected(f"method {class_name}.{method} is not allowed (allowed: {', '.join(methods)})")


def snake_case(class_name: str) -> str:
    """LessonCreatedService -> lesson_created_service; HTTPClient -> http_client."""
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", class_name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", words).lower()


def _import_if_present(name: str) -> ModuleType | None:
    """Import a module, or None when it does not exist; errors raised *inside* it propagate."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            return None
        raise


def resolve_class(namespace: str, class_name: str) -> type:
    """Find CLASS inside the namespace only: an attribute of the package, else its snake_case module."""
    package = _import_if_present(namespace)
    if package is None:
        raise JobNotFound(f"namespace {namespace!r} cannot be imported")
    found = getattr(package, class_name, None)
    if found is None:
        module_name = f"{namespace}.{snake_case(class_name)}"
        module = _import_if_present(module_name)
        found = getattr(module, class_name, None) if module is not None else None
        if found is None:
            raise JobNotFound(f"class {class_name!r} not found in {namespace!r} "
                              f"(neither {namespace}.{class_name} nor module {module_name})")
    if not isinstance(found, type):
        raise JobNotFound(f"{namespace}.{class_name} is not a class")
    home = str(getattr(found, "__module__", "") or "")
    if home != namespace and not home.startswith(namespace + "."):
        # A name the package merely imports (`from pathlib import Path`) is not a job of the namespace.
        raise JobNotFound(f"{namespace}.{class_name} is {home}.{found.__qualname__}, defined outside {namespace!r}")
    return found
