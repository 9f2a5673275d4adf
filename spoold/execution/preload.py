"""What a process that runs jobs does once, before its first job: the bootstrap, and importing the jobs.

`bootstrap = "package.module:function"` (SPEC §10) is how `django.setup()` or a Flask app context costs
once instead of once per job. It runs in every process that runs jobs: the fork server in process
isolation (its children inherit what it set up), each long-lived worker (so no two workers share what
it opened, such as a database connection), each spawned child. `preload` also imports every allowed
class, so a module that does not import is reported by name when the daemon starts (docs/design.md, M13),
and forked children find their class already loaded.

`python -m spoold.execution.preload REPORT ROOT NAMESPACE BOOTSTRAP CLASS...` writes the same report as
JSON to the file REPORT (stdout is the job code's own): the spawn start method's check at start, made
in a process of its own.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from spoold.allowlist import resolve_class
from spoold.errors import JobNotFound


class PreloadReport(TypedDict):
    """What preloading found: the bootstrap's error (None: it ran, or there is none), and each allowed class
    that does not import, with why."""

    bootstrap: dict[str, Any] | None
    imports: dict[str, str]


NOTHING_FOUND = PreloadReport(bootstrap=None, imports={})

# The bootstrap's outcome in this process, per entry point: None once it ran, else the failure it raised.
# A forked child inherits it, so what its server already ran is not run again.
_bootstrapped: dict[str, dict[str, Any] | None] = {}


def _failure(exc: BaseException, entry: str) -> dict[str, Any]:
    """A job outcome's `error` for a bootstrap that raised: every job of this process fails with it."""
    return {"type": "BootstrapError", "message": f"bootstrap {entry} raised {type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc))}


def bootstrap(entry: str) -> dict[str, Any] | None:
    """Call `module:function` once in this process; None if it ran (now or before), else its error."""
    if not entry:
        return None
    if entry not in _bootstrapped:
        try:
            module_name, _, function_name = entry.partition(":")
            function = getattr(importlib.import_module(module_name), function_name)
            function()
        except BaseException as e:  # whatever it raises is reported, by the daemon at start and in each job
            _bootstrapped[entry] = _failure(e, entry)
        else:
            _bootstrapped[entry] = None
    return _bootstrapped[entry]


def import_problem(namespace: str, class_name: str) -> str | None:
    """Why CLASS of the namespace does not import, as one line; None if it does."""
    try:
        resolve_class(namespace, class_name)
    except JobNotFound as e:
        return str(e)
    except BaseException as e:  # a SyntaxError, an __init__ that raises, a missing dependency...
        return f"{type(e).__name__}: {e}"
    return None


@dataclass(frozen=True)
class Preload:
    """What to run before the first job: the bootstrap entry point ("" for none), and the allowed classes."""

    entry: str
    namespace: str
    classes: tuple[str, ...]

    def run(self) -> PreloadReport:
        """Bootstrap, then import each class: `{"bootstrap": error or None, "imports": {class: why}}`.

        Classes are imported only after a bootstrap that worked: a Django model needs django.setup() first.
        """
        failed = bootstrap(self.entry)
        if failed is not None:
            return PreloadReport(bootstrap=failed, imports={})
        problems = {name: why for name in self.classes if (why := import_problem(self.namespace, name)) is not None}
        return PreloadReport(bootstrap=None, imports=problems)


def main() -> None:
    report_path, root, namespace, entry, *classes = sys.argv[1:]
    sys.path.insert(0, root)
    report = Preload(entry, namespace, tuple(classes)).run()
    Path(report_path).write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
