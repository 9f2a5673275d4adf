"""The house rules that the layers contract of pyproject.toml (lint-imports) does not state."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent


def _circles(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    """Each direct import a -> b for which b also leads back to a, by any chain."""
    return sorted((a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                  if b != "spoold" and b in graph.modules and graph.chain_exists(importer=b, imported=a))


def test_no_module_of_spoold_imports_one_that_imports_it_back_even_inside_a_function() -> None:
    graph = grimp.build_graph("spoold", exclude_type_checking_imports=False)
    assert _circles(graph) == []


def test_the_execution_package_init_imports_nothing() -> None:
    tree = ast.parse((REPO / "spoold" / "execution" / "__init__.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def test_a_job_child_loads_none_of_the_daemon_the_spool_or_their_libraries() -> None:
    code = "import sys, spoold.execution.child, spoold.execution.forkserver; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                cwd=REPO).stdout.split())
    heavy = {"threading", "logging", "watchdog", "filelock", "tomllib", "tomli_w", "spoold.config", "spoold.spool",
             "spoold.daemon", "spoold.commands", "spoold.logs"}
    assert heavy & loaded == set()


def test_submitting_loads_neither_watchdog_nor_the_daemon() -> None:
    code = "import sys, spoold; spoold.run_background_job; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                cwd=REPO).stdout.split())
    assert {"watchdog", "spoold.daemon", "spoold.execution"} & loaded == set()
