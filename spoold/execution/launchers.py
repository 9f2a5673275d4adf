"""Which launcher starts a daemon's job children: the fork server where the platform can fork, else spawn."""

from __future__ import annotations

import logging
import os

from spoold.config import Config
from spoold.execution.forkclient import ForkServerLauncher
from spoold.execution.process import Launcher
from spoold.execution.spawn import SpawnLauncher

log = logging.getLogger(__name__)


def make_launcher(config: Config) -> Launcher:
    """`start_method`: auto = the fork server where the platform can fork, else spawn.

    `isolation = "worker"` runs inside the fork server, so it takes the fork server whatever the start
    method, and falls back to a process per job (spawn) where the platform cannot fork.
    """
    can_fork = hasattr(os, "fork")
    if not can_fork or (config.start_method == "spawn" and config.isolation == "process"):
        if config.isolation == "worker":
            log.warning('isolation = "worker" needs fork: running a process per job instead')
        return SpawnLauncher(config)
    return ForkServerLauncher(config)
