"""The operator commands of SPEC §6: `spoold status`, `list`, `show`, `retry`, `cancel`, `purge`, `stop`.

Kept apart from cli.py so the submit path stays small; the spool modules are imported inside each
command, so `spoold submit` never loads them. Human output goes through render.py, `--json` is stable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from spoold.config import Config, find_config, load_config
from spoold.errors import EXIT_JOB_FAILED, EXIT_OK, EXIT_SPOOL, EXIT_USAGE
from spoold.paths import JOB_FOLDERS as FOLDERS
from spoold.paths import READY
from spoold.spool.retention import PURGEABLE

if TYPE_CHECKING:
    from spoold.spool.ops import Acted

EXIT_NOT_ACTED = EXIT_JOB_FAILED  # retry/cancel/show: an id could not be acted on
EXIT_NO_DAEMON = 1  # status --check: no daemon is alive (SPEC §10)
EXIT_BACKED_UP = 4  # status --check: the oldest ready job has waited longer than --max-age (SPEC §6, §10)
DEFAULT_LIMIT = 50
DEFAULT_CANCEL_TIMEOUT = 10.0
DEFAULT_STOP_TIMEOUT = 30.0


def _config(args: argparse.Namespace) -> Config:
    return load_config(find_config(args.config))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _fail(code: int, message: str) -> int:
    print(f"spoold: {message}", file=sys.stderr)
    return code


def check_status(status: dict[str, Any], max_age: float | None) -> tuple[int, str]:
    """`status --check`: (exit code, one line) for a monitoring probe. No live daemon (1) wins over a
    backlog (4): a queue that nobody serves is the thing to fix first."""
    from spoold.commands.render import age

    daemons = len(status["daemons"])
    alive = f"{daemons} daemon{'' if daemons == 1 else 's'} alive"
    oldest: float | None = status["oldest_ready_age_seconds"]
    ready = sum(status["counts"][str(priority)] for priority in READY)
    waiting = "no ready job" if oldest is None else (
        f"{ready} ready job{'' if ready == 1 else 's'}, the oldest waiting {age(oldest)}")
    if not daemons:
        return EXIT_NO_DAEMON, f"no daemon alive on {status['spool']}; {waiting}"
    if max_age is not None and oldest is not None and oldest > max_age:
        return EXIT_BACKED_UP, f"backed up: {waiting}, over --max-age {max_age:g}s; {alive}"
    return EXIT_OK, f"ok: {alive}; {waiting}"


def cmd_status(args: argparse.Namespace) -> int:
    from spoold.commands.render import render_status
    from spoold.paths import SpoolPaths
    from spoold.spool.views import spool_status

    if args.max_age is not None and not args.check:
        return _fail(EXIT_USAGE, "status: --max-age needs --check")
    config = _config(args)
    status = spool_status(SpoolPaths(config.spool_dir), time.time(), config)
    code, message = check_status(status, args.max_age) if args.check else (EXIT_OK, "")
    if args.json:
        if args.check:  # SPEC §6: more keys may be added
            status["check"] = {"exit": code, "message": message}
        _print_json(status)
    else:
        print(message if args.check else render_status(status))
    return code


def cmd_list(args: argparse.Namespace) -> int:
    from spoold.commands.render import render_list
    from spoold.paths import SpoolPaths
    from spoold.spool.views import list_jobs

    rows = list_jobs(SpoolPaths(_config(args).spool_dir), args.folder, limit=args.limit, class_name=args.class_name)
    if args.json:
        _print_json(rows)
    else:
        print(render_list(args.folder, rows))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from spoold.commands.render import render_show
    from spoold.paths import SpoolPaths
    from spoold.spool.views import show_job

    paths = SpoolPaths(_config(args).spool_dir)
    shown = show_job(paths, args.id)
    if shown is None:
        return _fail(EXIT_NOT_ACTED, f"{args.id}: no such job in {paths.root}")
    if args.json:
        _print_json(shown.as_json())
    else:
        sys.stdout.flush()
        write_all(render_show(shown, terminal=sys.stdout.isatty()))
    return EXIT_OK


def write_all(data: bytes) -> None:
    """Bytes to stdout, whole. A buffered write may return short when the reader goes away mid-way (a
    pipe into `head`): write the rest, so the closed pipe is seen (BrokenPipeError) instead of ignored."""
    view = memoryview(data)
    while view:
        view = view[sys.stdout.buffer.write(view):]
    sys.stdout.buffer.flush()


def report(results: Sequence[Acted]) -> int:
    """One line per id (done on stdout, not done on stderr); exit 3 if the spool failed, else 1 if any id did."""
    for acted in results:
        if acted.ok:
            print(f"{acted.job_id}: {acted.message}")
        else:
            print(f"spoold: {acted.job_id}: {acted.message}", file=sys.stderr)
    if any(a.spool_error for a in results):
        return EXIT_SPOOL
    return EXIT_OK if all(a.ok for a in results) else EXIT_NOT_ACTED


def cmd_retry(args: argparse.Namespace) -> int:
    from spoold.spool.ops import Operator

    if not args.ids and not args.all_failed:
        return _fail(EXIT_USAGE, "retry: give job ids or --all-failed")
    with Operator(_config(args)) as operator:
        results = [operator.retry(job_id) for job_id in args.ids]
        if args.all_failed:
            results += operator.retry_all_failed()
    if args.all_failed and not results:
        print("no failed jobs")
    return report(results)


def cmd_cancel(args: argparse.Namespace) -> int:
    from spoold.spool.ops import Operator

    with Operator(_config(args)) as operator:
        return report([operator.cancel(job_id, timeout=args.timeout) for job_id in args.ids])


def cmd_purge(args: argparse.Namespace) -> int:
    from spoold.spool.ops import Operator
    from spoold.spool.retention import parse_duration

    try:
        seconds = parse_duration(args.older_than)
    except ValueError as e:
        return _fail(EXIT_USAGE, f"--older-than: {e}")
    with Operator(_config(args)) as operator:  # each removed job is logged `status=purged by=cli:USER`
        removed = operator.purge(args.folder, seconds, now=time.time())
    print(f"removed {removed} job{'' if removed == 1 else 's'} from {args.folder}/ older than {args.older_than}")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    from spoold.paths import SpoolPaths
    from spoold.spool.ops import stop_daemons, wait_stopped

    stopped = stop_daemons(SpoolPaths(_config(args).spool_dir))
    for daemon in stopped.signalled:
        print(f"sent SIGTERM to daemon {daemon.id} (pid {daemon.pid})")
    for daemon, problem in stopped.failed:
        print(f"spoold: daemon {daemon.id}: {problem}", file=sys.stderr)
    for daemon in stopped.elsewhere:
        print(f"left daemon {daemon.id} alone: it runs on host {daemon.info.get('host')}")
    if not stopped.signalled and not stopped.failed:
        print("no live daemon on this host")
    code = EXIT_NOT_ACTED if stopped.failed else EXIT_OK
    if args.wait and stopped.signalled:
        still = wait_stopped(stopped.signalled, args.timeout)
        for daemon in still:
            print(f"spoold: daemon {daemon.id} still running after {args.timeout:g}s", file=sys.stderr)
        if still:
            return EXIT_NOT_ACTED
        print(f"stopped {len(stopped.signalled)} daemon{'' if len(stopped.signalled) == 1 else 's'}")
    return code


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _not_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def add_operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                          config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the operator subcommands to the `spoold` parser; each gets `--config F` (SPEC §6)."""
    status = sub.add_parser("status", help="live daemons, jobs per folder, the oldest ready job's age")
    status.add_argument("--json", action="store_true", help="one stable JSON object")
    status.add_argument("--check", action="store_true",
                        help="for a probe: exit 0 if a daemon is alive, 1 if none is, 4 if backed up (--max-age)")
    status.add_argument("--max-age", type=_not_negative, metavar="S",
                        help="with --check: exit 4 when the oldest ready job has waited longer than S seconds")
    list_ = sub.add_parser("list", help="the jobs of one folder, newest first")
    list_.add_argument("folder", metavar="FOLDER", choices=FOLDERS, help=", ".join(FOLDERS))
    list_.add_argument("--limit", type=_count, default=DEFAULT_LIMIT, metavar="N",
                       help=f"at most N jobs (default {DEFAULT_LIMIT}; 0: all)")
    list_.add_argument("--class", dest="class_name", metavar="C", help="only jobs of class C")
    list_.add_argument("--json", action="store_true", help="a JSON array of objects")
    show = sub.add_parser("show", help="a job's state and document, wherever it is")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help='{"folder", "path", "document", ...}')
    retry = sub.add_parser("retry", help="failed/ or scheduled/ -> ready, with a fresh retry budget")
    retry.add_argument("ids", metavar="ID", nargs="*")
    retry.add_argument("--all-failed", action="store_true", help="every job in failed/")
    cancel = sub.add_parser("cancel", help="ready or scheduled -> failed/ (Cancelled); a running job is stopped")
    cancel.add_argument("ids", metavar="ID", nargs="+")
    cancel.add_argument("--timeout", type=_positive, default=DEFAULT_CANCEL_TIMEOUT, metavar="S",
                        help=f"how long to wait for a running job's daemon (default {DEFAULT_CANCEL_TIMEOUT:g}s)")
    purge = sub.add_parser("purge", help="delete finished jobs older than a duration")
    purge.add_argument("folder", metavar="FOLDER", choices=PURGEABLE, help=", ".join(PURGEABLE))
    purge.add_argument("--older-than", required=True, metavar="DURATION", help="7d, 12h, 30m, 90s, 2w")
    stop = sub.add_parser("stop", help="SIGTERM to the live daemons of this host")
    stop.add_argument("--wait", action="store_true", help="wait until they have exited")
    stop.add_argument("--timeout", type=_positive, default=DEFAULT_STOP_TIMEOUT, metavar="S",
                      help=f"with --wait: give up after S seconds (default {DEFAULT_STOP_TIMEOUT:g})")
    for parser in (status, list_, show, retry, cancel, purge, stop):
        config_option(parser)


OPERATOR_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": cmd_status, "list": cmd_list, "show": cmd_show, "retry": cmd_retry, "cancel": cmd_cancel,
    "purge": cmd_purge, "stop": cmd_stop,
}
