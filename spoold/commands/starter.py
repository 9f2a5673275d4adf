"""What `spoold init` makes besides bgjobs.toml, so that a first job runs at once (issue 11, point 6).

The spool's folders, so a producer in any language can drop its first file into `spool/medium/`; and,
when the job namespace does not exist beside bgjobs.toml, a package holding one allowed example job.
Nothing that exists is ever overwritten: a namespace that exists (as a package or a module) is left as
it is, and each file is created with O_EXCL.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spoold.allowlist import snake_case
from spoold.commands.initfile import default_values, write_default_config
from spoold.config import load_config
from spoold.errors import ConfigError, SpoolWriteError
from spoold.paths import STATE_FOLDERS, SpoolPaths

log = logging.getLogger(__name__)

EXAMPLE_CLASS = "ExampleJob"
EXAMPLE_METHOD = "handle"

PACKAGE_INIT = '''\
"""Job classes of this app: the job namespace of bgjobs.toml (`namespace`).

A short class name is looked up as an attribute of this package, else in its snake_case module
(`ExampleJob` in `example_job.py`). Only the classes and methods listed in [allowed_jobs] ever run.
"""
'''

EXAMPLE_MODULE = '''\
"""An example job, written by `spoold init`. Copy it for your own jobs, and allow each new class
with `spoold allow NewJob handle`.

Run it:  spoold submit ExampleJob handle "hello,world"
or drop a file such as {"class": "ExampleJob", "params": ["hello"]} into spool/medium/ as NAME.json.
"""

from __future__ import annotations

from typing import Any


class ExampleJob:
    """Instantiated with no arguments; `handle` is called with the job's params."""

    def handle(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return what it was given: the return value (JSON) becomes the job's `result`."""
        print(f"ExampleJob got {args} {kwargs}")  # stdout and stderr end in the job's "output"
        return {"args": list(args), "kwargs": kwargs}
'''


def namespace_path(root: Path, namespace: str) -> Path:
    """The package folder of a namespace beside bgjobs.toml: `services` -> ROOT/services."""
    return root.joinpath(*namespace.split("."))


def namespace_exists(package: Path) -> bool:
    """A folder (package or not), a link, or a module `NAME.py`: any of them is the user's, left alone."""
    return package.exists() or package.is_symlink() or package.with_name(package.name + ".py").exists()


def example_module(package: Path) -> Path:
    return package / (snake_case(EXAMPLE_CLASS) + ".py")


def example_is_there(root: Path, namespace: str) -> bool:
    """True when init will write the example, or an earlier init did (so `init --force` keeps it allowed)."""
    package = namespace_path(root, namespace)
    if not namespace_exists(package):
        return True
    try:
        return f"class {EXAMPLE_CLASS}:" in example_module(package).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def _create(path: Path, text: str) -> bool:
    """Write a new file; False (and nothing written) if the name exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True


def write_example(root: Path, namespace: str) -> list[Path]:
    """The namespace package with the example job, only if the namespace does not exist; the files made."""
    package = namespace_path(root, namespace)
    if namespace_exists(package):
        return []
    try:
        package.mkdir(parents=True)
        made = [path for path, text in ((package / "__init__.py", PACKAGE_INIT),
                                        (example_module(package), EXAMPLE_MODULE)) if _create(path, text)]
    except OSError as e:
        raise ConfigError(None, "namespace", f"cannot create the package {package}: {e.strerror or e}") from e
    log.debug("wrote %s", ", ".join(map(str, made)))
    return made


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def init_project(path: Path, *, force: bool = False) -> list[str]:
    """`spoold init`: bgjobs.toml (never over a file unless forced), the spool's folders, and the example
    job when its namespace is missing. Returns what it did, as lines for the person who ran it."""
    path = path.absolute()
    root = path.parent
    namespace = str(default_values()["namespace"])
    allowed = {EXAMPLE_CLASS: [EXAMPLE_METHOD]} if example_is_there(root, namespace) else {}
    write_default_config(path, force=force, allowed_jobs=allowed)
    config = load_config(path)
    lines = [f"wrote {path}"]
    try:
        SpoolPaths(config.spool_dir).create()
    except OSError as e:
        raise SpoolWriteError(f"cannot create the spool {config.spool_dir}: {e.strerror or e}") from e
    folders = " ".join(f"{name}/" for name in STATE_FOLDERS)
    lines.append(f"made the spool {_shown(config.spool_dir, root)}/ ({folders})")
    package = namespace_path(root, config.namespace)
    made = write_example(root, config.namespace)
    if made:
        lines.append(f"wrote {', '.join(_shown(p, root) for p in made)}: "
                     f"{EXAMPLE_CLASS}.{EXAMPLE_METHOD}, listed in [allowed_jobs]")
    elif allowed:
        lines.append(f"kept {_shown(example_module(package), root)} as it is: "
                     f"{EXAMPLE_CLASS}.{EXAMPLE_METHOD}, listed in [allowed_jobs]")
    else:
        lines.append(f"left the namespace {config.namespace!r} ({_shown(package, root)}) as it is; "
                     "allow its classes with `spoold allow CLASS METHOD`")
    if allowed:
        medium = _shown(config.spool_dir / "medium", root)
        lines += [f'next:  spoold submit {EXAMPLE_CLASS} handle "hello", then spoold start',
                  f'       (or write {{"class": "{EXAMPLE_CLASS}", "params": ["hello"]}} as {medium}/NAME.json)']
    return lines
