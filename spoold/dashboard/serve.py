"""`spoold dashboard`: check where it may listen, then serve the app with uvicorn until Ctrl-C."""

from __future__ import annotations

import os

import uvicorn

from spoold.config import Config
from spoold.dashboard.access import Access, is_loopback
from spoold.dashboard.app import create_app
from spoold.dashboard.context import Dashboard
from spoold.dashboard.diskcache import DiskCache, cache_folder
from spoold.errors import ConfigError

TOKEN_ENV = "SPOOLD_DASHBOARD_TOKEN"
READ_TOKEN_ENV = "SPOOLD_DASHBOARD_READ_TOKEN"


def access_for(config: Config, host: str) -> Access:
    """The tokens (the environment wins over [dashboard]); off loopback, no admin token means no start."""
    token = os.environ.get(TOKEN_ENV) or config.dashboard.token
    read_token = os.environ.get(READ_TOKEN_ENV) or config.dashboard.read_token
    if not is_loopback(host) and not token:
        raise ConfigError(config.path, "dashboard.host",
                          f"{host} is not a loopback address: set dashboard.token (or ${TOKEN_ENV}) to serve there")
    return Access(token=token, read_token=read_token)


def allowed_hosts(host: str) -> list[str] | None:
    """On loopback, only our own names: a page of another site cannot reach us through DNS rebinding."""
    return [host, "localhost", "127.0.0.1", "::1", "[::1]"] if is_loopback(host) else None


def serve(config: Config, *, host: str | None, port: int | None) -> int:
    host = host or config.dashboard.host
    port = config.dashboard.port if port is None else port
    dashboard = Dashboard(config, access_for(config, host), disk=DiskCache(cache_folder(config.spool_dir)))
    app = create_app(dashboard, allowed_hosts=allowed_hosts(host))
    mode = "open (loopback, no token)" if dashboard.access.open else "tokens required"
    print(f"spoold dashboard on http://{host}:{port}/ for {config.spool_dir}: {mode}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False, proxy_headers=False)
    return 0
