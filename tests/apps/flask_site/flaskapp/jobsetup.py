"""bootstrap = "flaskapp.jobsetup:setup": the app made once per process, its context pushed for every job."""

import os

from flaskapp import ROOT, create_app


def setup() -> None:
    with (ROOT / "setups.log").open("a", encoding="utf-8") as log:
        log.write(f"{os.getpid()}\n")
    create_app().app_context().push()
