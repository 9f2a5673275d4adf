"""A job that needs the app context: current_app.config, as a view would use it."""

import os
from pathlib import Path

from flask import current_app


class SendWelcome:
    def handle(self, name: str) -> dict[str, object]:
        outbox = Path(current_app.config["OUTBOX"])
        outbox.mkdir(exist_ok=True)
        message = f"{current_app.config['GREETING']}, {name}!"
        (outbox / f"{name}.txt").write_text(message, encoding="utf-8")
        return {"message": message, "app": current_app.name, "pid": os.getpid()}
