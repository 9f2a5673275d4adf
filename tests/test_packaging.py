"""Packaging (issue 11): `python -m build` gives an sdist and a wheel, and each one, installed in a fresh
virtualenv outside the repository, runs a user's own job from an empty folder with nothing else at hand.

The build copies the working tree (tracked and untracked files, not the ignored ones) to a temporary folder
first, so it never writes build/ or *.egg-info into the checkout; `python -m build` then makes the wheel from
the sdist, so a file the build needs but the sdist lacks fails here. pip may fetch setuptools (the isolated
build) and watchdog, filelock and tomli-w (spoold's dependencies) from the package index.
"""

from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO

import spoold

PACKAGE_DATA = {"spoold/py.typed",
                *(f"spoold/dashboard/{p.parent.name}/{p.name}" for p in (REPO / "spoold" / "dashboard").glob("*/*")
                  if p.parent.name in ("templates", "static") and p.suffix in (".html", ".css", ".js"))}
EXTRAS = {"dashboard", "metrics", "cron"}
JOB = '''\
"""A job of the user's own: found by its module's name, services/greet_user.py."""


class GreetUser:
    def handle(self, name: str) -> str:
        return f"hello {name}"
'''


def run(argv: list[str], cwd: Path, *, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def copy_source(dst: Path) -> None:
    """The files `git` sees in the checkout (tracked, or new and not ignored), as a fresh clone would hold them."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail(f"{REPO} is not a git checkout with git on PATH: the build copies the files git lists")
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO).stdout
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():  # a tracked file deleted in the working tree is listed too
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def build(tmp: Path) -> tuple[Path, Path]:
    source, dist = tmp / "source", tmp / "dist"
    copy_source(source)
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], tmp, timeout=300)
    [sdist] = dist.glob("spoold-*.tar.gz")
    [wheel] = dist.glob("spoold-*-py3-none-any.whl")
    return sdist, wheel


def install(artefact: Path, venv: Path) -> Path:
    """A fresh virtualenv with only spoold (and its dependencies) in it; pip is the test's own, run for it."""
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv.parent)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(artefact)], venv.parent,
        timeout=300)
    return venv / "bin"


def use_as_a_user(bin_dir: Path, home: Path) -> str:
    """From an empty folder: init, allow, submit, start --drain; returns the done job's result."""
    work = home / "app"
    work.mkdir(parents=True)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}

    def spoold_cli(*args: str) -> str:
        return run([str(bin_dir / "spoold"), *args], work, env=env, timeout=60).stdout

    where = run([str(bin_dir / "python"), "-c", "import spoold; print(spoold.__file__)"], work, env=env).stdout
    assert Path(where.strip()).is_relative_to(bin_dir.parent), f"spoold imported from {where}, not the venv"
    assert spoold_cli("--version") == f"spoold {spoold.__version__}\n"
    spoold_cli("init")
    (work / "services").mkdir(exist_ok=True)
    (work / "services" / "__init__.py").touch()
    (work / "services" / "greet_user.py").write_text(JOB)
    spoold_cli("allow", "GreetUser", "handle")
    job_id, path = spoold_cli("submit", "GreetUser", "handle", "world").splitlines()[:2]
    assert Path(path).is_file()
    spoold_cli("start", "--drain")
    doc = json.loads((work / "spool" / "done" / f"{job_id}.json").read_text(encoding="utf-8"))
    assert doc["status"] == "done", doc
    result: str = doc["result"]
    return result


@pytest.mark.timeout(240)  # about 15 s here with pip's cache warm; a cold cache downloads setuptools three times
def test_the_sdist_and_the_wheel_install_and_run_a_users_job(tmp_path: Path) -> None:
    sdist, wheel = build(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    assert PACKAGE_DATA - names == set(), "package data missing from the wheel"
    assert metadata["Version"] == spoold.__version__
    assert EXTRAS - set(metadata.get_all("Provides-Extra") or []) == set(), metadata.get_all("Provides-Extra")
    with tarfile.open(sdist) as archive:
        in_sdist = {re.sub(r"^spoold-[^/]+/", "", n) for n in archive.getnames()}
    assert {"pyproject.toml", "README.md", "CHANGELOG.md", "contrib/systemd/spoold.service"} <= in_sdist
    assert PACKAGE_DATA - in_sdist == set(), "package data missing from the sdist"
    assert not any(name.startswith("tests/") for name in in_sdist), "tests/ needs the repository: kept out"
    # One virtualenv per artefact, both at once (the installs wait on pip and the index more than on a core).
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda pair: use_as_a_user(install(pair[0], tmp_path / pair[1]),
                                                           tmp_path / f"home-{pair[1]}"),
                                [(wheel, "venv-wheel"), (sdist, "venv-sdist")]))
    assert results == ["hello world", "hello world"]


def test_spoold_version_is_the_package_version(tmp_path: Path) -> None:
    done = run([sys.executable, "-m", "spoold", "--version"], tmp_path)
    assert (done.stdout, done.stderr) == (f"spoold {spoold.__version__}\n", "")
    assert re.fullmatch(r"\d+\.\d+\.\d+", spoold.__version__)
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{spoold.__version__}] - " in changelog and "## [Unreleased]" in changelog
