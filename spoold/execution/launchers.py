"""Which launcher starts a daemon's job children: the fork server where the platform can fork, else spawn."""

from __future__ import annotations

import logging
import os

from spoold.config import Config
from spoold.errors import ConfigError
from spoold.execution.forkclient import ForkServerLauncher
from spoold.execution.process import Launcher
from spoold.execution.spawn import SpawnLauncher
from spoold.execution.workerclient import WorkerPoolLauncher

log = logging.getLogger(__name__)


def make_launcher(config: Config, *, inline: bool = False) -> Launcher:
    """`start_method`: auto = the fork server where the platform can fork, else spawn.

    `isolation = "worker"` runs inside the fork server, so it takes the fork server whatever the start
    method, and falls back to a process per job (spawn) where the platform cannot fork. `inline`: the
    caller's loop reads the fork server's messages (Launcher.fileno, pump), not a thread.
    """
    can_fork = hasattr(os, "fork")
    if not can_fork or (config.start_method == "spawn" and config.isolation == "process"):
        if config.isolation == "worker":
            log.warning('isolation = "worker" needs fork: running a process per job instead')
        return SpawnLauncher(config)
    if config.isolation == "worker":
        return WorkerPoolLauncher(config)  # always inline: the daemon's loop reads its workers' pipes
    return ForkServerLauncher(config, inline=inline)


def start_launcher(config: Config, *, inline: bool = False) -> Launcher:
    """The launcher, warmed up and checked: a bootstrap that raises is a ConfigError (`spoold start` exits 2
    before claiming anything); an allowed class that does not import is logged by name, and its jobs fail
    with that error, while the other classes run."""
    launcher = make_launcher(config, inline=inline)
    report = launcher.warm_up()
    failed = report["bootstrap"]
    if failed is not None:
        launcher.close()
        log.error("%s", failed.get("traceback", "").rstrip())
        raise ConfigError(config.path, "bootstrap", failed["message"])
    for class_name, why in sorted(report["imports"].items()):
        log.error("allowed job %s cannot be imported from %r: %s", class_name, config.namespace, why)
    return launcher
