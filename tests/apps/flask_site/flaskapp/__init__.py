"""A small Flask app: an app factory, settings in app.config, and a view that submits a job."""

from pathlib import Path
from typing import Any

from flask import Flask

from spoold import run_background_job

ROOT = Path(__file__).resolve().parent.parent


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(GREETING="Welcome", OUTBOX=str(ROOT / "outbox"))

    @app.post("/signup/<name>")
    def signup(name: str) -> dict[str, Any]:
        job_id = run_background_job("SendWelcome", "handle", [name], config=ROOT / "bgjobs.toml")
        return {"id": job_id}

    return app
