"""The `spoold` command, `python -m spoold` and `run_job.py` (SPEC §6). Only this module sets up logging."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from spoold import __version__
from spoold.commands.opcli import OPERATOR_COMMANDS, add_operator_commands
from spoold.config import CONFIG_NAME, Config, find_config, load_config
from spoold.errors import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_SPOOL,
    EXIT_USAGE,
    ConfigError,
    SpoolWriteError,
    SubmitError,
    UnknownJob,
)
from spoold.paths import Folder, Priority

if TYPE_CHECKING:
    from spoold.daemon.loop import Signals
    from spoold.daemon.metrics import Metrics

log = logging.getLogger(__name__)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="F",
                        help=f"path to {CONFIG_NAME} (else $BGJOBS_CONFIG, else searched upwards)")


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("class_name", metavar="CLASS")
    parser.add_argument("method", metavar="METHOD")
    parser.add_argument("params", metavar="PARAMS", nargs="?", default=None,
                        help='"a,b" (strings) or a JSON array/object')
    parser.add_argument("--priority", choices=[str(p) for p in Priority])
    parser.add_argument("--delay", type=float, metavar="S", help="do not start before S seconds from now")
    parser.add_argument("--unique-key", metavar="K",
                        help="at most one live job with this key: if one is ready, scheduled or running, print its id")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="block until done (exit 0) or failed (exit 1)")
    mode.add_argument("--now", action="store_true", help="run it here, in a child, without a daemon")
    _config_option(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spoold", description="Background jobs as files in a spool folder.")
    parser.add_argument("--version", action="version", version=f"spoold {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = sub.add_parser("start", help="run the daemon in the foreground")
    start.add_argument("--workers", type=int, metavar="N", help="jobs running at once (overrides the config)")
    start.add_argument("--drain", action="store_true", help="exit once nothing is ready or running")
    start.add_argument("--metrics-port", type=int, metavar="N",
                       help="serve Prometheus metrics on port N, 0 for none (overrides metrics_port)")
    _config_option(start)
    add_submit_arguments(sub.add_parser("submit", help="submit a job"))
    init = sub.add_parser("init", help=f"write a commented default {CONFIG_NAME}, the spool's folders and "
                                       "an example job (when the job namespace does not exist)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    _config_option(init)
    allow = sub.add_parser("allow", help="add CLASS and METHODs to [allowed_jobs]")
    allow.add_argument("class_name", metavar="CLASS")
    allow.add_argument("methods", metavar="METHOD", nargs="+")
    _config_option(allow)
    dashboard = sub.add_parser("dashboard", help="serve the web dashboard (pip install 'spoold[dashboard]')")
    dashboard.add_argument("--host", help="address to listen on (default: [dashboard] host, else 127.0.0.1)")
    dashboard.add_argument("--port", type=_port, help="port (default: [dashboard] port, else 8350)")
    _config_option(dashboard)
    add_operator_commands(sub, _config_option)
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return int(text)


def _fail(code: int, message: str) -> int:
    print(f"spoold: {message}", file=sys.stderr)
    return code


def wait_for(config: Config, job_id: str) -> int:
    """Block until the job is in done/ (print its result), failed/ (exit 1) or rejected/ (exit 2)."""
    from spoold.spool.lookup import JobFailed
    from spoold.spool.waiting import wait_in

    try:
        result = wait_in(config, job_id)
    except JobFailed as e:
        code = EXIT_USAGE if e.job.state == Folder.REJECTED else EXIT_JOB_FAILED
        return report({**e.job.doc, "id": e.job.id}, code)
    except UnknownJob as e:  # removed by hand (or purged) before it finished
        return _fail(EXIT_JOB_FAILED, str(e))
    return report({"result": result}, EXIT_OK)


def report(doc: dict[str, object], code: int) -> int:
    if code == EXIT_OK:
        print(json.dumps(doc.get("result"), ensure_ascii=False))
    else:
        error = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(error, dict):
            print(f"job {doc.get('id')} failed: {error.get('type')}: {error.get('message')}", file=sys.stderr)
        else:
            print(f"job {doc.get('id')} was rejected", file=sys.stderr)
    return code


def cmd_submit(args: argparse.Namespace) -> int:
    from spoold.spool.submit import build_job, parse_cli_params, submit

    config = load_config(find_config(args.config))
    params = parse_cli_params(args.params)
    if args.now and args.unique_key is not None:
        raise SubmitError("--unique-key applies to jobs handed to the daemons, not to --now")
    if args.now:
        from datetime import UTC, datetime

        from spoold.commands.nowrun import run_now

        job, _folder = build_job(config, args.class_name, args.method, params, priority=args.priority,
                                 delay=args.delay, chain=None, now=datetime.now(UTC), unique_key=args.unique_key)
        print(job.id, flush=True)
        code, final = run_now(config, job)
        return report(final.doc, code)
    submitted = submit(config, args.class_name, args.method, params, priority=args.priority, delay=args.delay,
                       unique_key=args.unique_key)
    print(submitted.job_id)
    print(submitted.path, flush=True)
    if args.wait:
        return wait_for(config, submitted.job_id)
    return EXIT_OK


def cmd_start(args: argparse.Namespace) -> int:
    from spoold.daemon.loop import REJOIN, Signals, open_daemon

    config: Config = load_config(find_config(args.config))
    if args.workers is not None and args.workers < 1:
        raise ConfigError(None, "--workers", f"expected an integer >= 1, got {args.workers}")
    metrics = _open_metrics(config, args.metrics_port)  # before joining the spool: exit 2 if it cannot serve
    signals = Signals()
    signals.install()
    rejoining = False
    try:
        while True:
            try:
                daemon = open_daemon(config, drain=args.drain, workers=args.workers, signals=signals)
            except OSError as e:
                if not rejoining:
                    raise SpoolWriteError(f"cannot use the spool {config.spool_dir}: {e}") from e
                # A daemon that lost its lease (a hung or cut-off mount) waits for the spool to come back.
                log.error("cannot join the spool %s again (%s); retrying", config.spool_dir, e)
                if _stopped_within(signals, config.heartbeat_seconds):
                    return EXIT_OK
                continue
            if metrics is not None:
                metrics.attach(daemon)
            code = daemon.run()
            if code != REJOIN or signals.stop_requests:
                return EXIT_OK if code == REJOIN else code
            config, rejoining = daemon.config, True  # a reloaded configuration is kept
    finally:
        if metrics is not None:
            metrics.close()


def _stopped_within(signals: Signals, seconds: float) -> bool:
    """Sleep up to `seconds`, less if SIGTERM/SIGINT comes; True if one came."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not signals.stop_requests:
        time.sleep(0.1)
    return bool(signals.stop_requests)


def _open_metrics(config: Config, port: int | None) -> Metrics | None:
    """The endpoint of SPEC §10 when a port is set (--metrics-port wins over the file), else None."""
    key = "metrics_port"
    if port is not None:
        if not 0 <= port <= 65535:
            raise ConfigError(None, "--metrics-port", f"expected a port number from 1 to 65535, or 0 for off, "
                                                      f"got {port}")
        config, key = replace(config, metrics_port=port), "--metrics-port"
    if not config.metrics_port:
        return None
    from spoold.daemon.metrics import open_metrics

    return open_metrics(config, key=key)


def cmd_init(args: argparse.Namespace) -> int:
    from spoold.commands.starter import init_project

    for line in init_project(Path(args.config or CONFIG_NAME), force=args.force):
        print(line)
    return EXIT_OK


def cmd_allow(args: argparse.Namespace) -> int:
    from spoold.commands.initfile import allow

    path = find_config(args.config)
    methods = allow(path, args.class_name, args.methods)
    print(f"{args.class_name} = {list(methods)} in {path}")
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    config = load_config(find_config(args.config))
    try:
        from spoold.dashboard.serve import serve
    except ImportError as e:  # the optional extra is not installed
        return _fail(EXIT_USAGE, f"the dashboard needs its extra ({e.name} is missing): "
                                 "pip install 'spoold[dashboard]'")
    return serve(config, host=args.host, port=args.port)


COMMANDS = {"start": cmd_start, "dashboard": cmd_dashboard, "submit": cmd_submit, "init": cmd_init,
            "allow": cmd_allow, **OPERATOR_COMMANDS}


# A reader that closed stdout early (`spoold list done | head`) ends the command quietly with the status of
# one killed by SIGPIPE, as `git log | head` and `cat | head` do: the shell ignores it inside a pipeline.
EXIT_PIPE_CLOSED = 128 + 13
SERVERS = ("start", "dashboard")  # long-running: a BrokenPipeError there is a bug to see, not a reader gone


def _stdout_closed() -> int:
    """Send what is left of stdout (and the final flush at exit) to the null device: no traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE_CLOSED


def dispatch(args: argparse.Namespace) -> int:
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader gone shows here, not as "Exception ignored" at exit
        return code
    except BrokenPipeError:
        if args.command in SERVERS:
            raise
        return _stdout_closed()
    except (ConfigError, SubmitError) as e:
        return _fail(EXIT_USAGE, str(e))
    except SpoolWriteError as e:
        return _fail(EXIT_SPOOL, str(e))
    except KeyboardInterrupt:
        return _fail(EXIT_OK, "interrupted")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # watchdog logs an ERROR when its emitter thread is stopped mid-read; rescans make events optional anyway.
    logging.getLogger("watchdog").setLevel(logging.CRITICAL)
    args = build_parser().parse_args(argv)
    if args.command != "start":
        logging.getLogger().setLevel(logging.WARNING)
    return dispatch(args)


def run_job_main(argv: Sequence[str] | None = None) -> int:
    """`python run_job.py CLASS METHOD ["p1,p2"] [options]`: the same as `spoold submit`."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="run_job.py", description="Submit a background job.")
    add_submit_arguments(parser)
    args = parser.parse_args(argv)
    args.command = "submit"
    return dispatch(args)
