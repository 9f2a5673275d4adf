"""The bootstrap of the test project: spoold's Django set-up, plus a line per run so the test can count runs."""

import os
from pathlib import Path

from spoold.integrations.django import setup as django_setup


def setup() -> None:
    with (Path(__file__).resolve().parent.parent / "setups.log").open("a", encoding="utf-8") as log:
        log.write(f"{os.getpid()}\n")
    django_setup()
