"""The example gateway's logs: control-plane logs (text, or JSON for collectors) and the access
log, from command-line flags (gateway.py adds them with `add_arguments`).

    [--log-format text|json] [--log-level LEVEL]
    [--access-log [PATH|-]] [--access-log-format json|common]
    [--access-log-status CODES ...] [--access-log-retries] [--access-log-min-duration SECONDS]
    [--access-log-headers keep|drop|redact] [--access-log-header NAME=MODE ...]

The access log follows Traefik's (docs/operations.md): `--access-log` alone writes JSON lines
to standard output; a PATH is reopened on SIGUSR1 (logrotate's postrotate). Filters keep a line
when any matches; request headers are dropped unless `--access-log-headers` or a
`--access-log-header` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime

import kroute

MODES = ("keep", "drop", "redact")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    logs = parser.add_argument_group("logs")
    logs.add_argument("--log-format", choices=["text", "json"], default="text",
                      help="control-plane logs: text, or one JSON object per line")  # fmt: skip
    logs.add_argument("--log-level", default="INFO",
                      choices=["DEBUG", "INFO", "WARNING", "ERROR"])  # fmt: skip
    logs.add_argument("--access-log", nargs="?", const="-", metavar="PATH|-",
                      help="access log to PATH (reopened on SIGUSR1), or - for stdout")  # fmt: skip
    logs.add_argument("--access-log-format", choices=["json", "common"], default="json")
    logs.add_argument("--access-log-status", action="append", default=[], metavar="CODES",
                      help="keep these status codes: 200,300-302 (repeatable)")  # fmt: skip
    logs.add_argument("--access-log-retries", action="store_true",
                      help="keep lines of requests that were retried")  # fmt: skip
    logs.add_argument("--access-log-min-duration", type=float, default=0.0, metavar="SECONDS",
                      help="keep lines of requests that took longer")  # fmt: skip
    logs.add_argument("--access-log-headers", choices=MODES, default="drop",
                      help="request headers in JSON lines unless named (drop)")  # fmt: skip
    logs.add_argument("--access-log-header", type=header_mode, action="append", default=[],
                      metavar="NAME=MODE", help="one header's mode (repeatable)")  # fmt: skip


def header_mode(text: str) -> tuple[str, str]:
    name, sep, mode = text.partition("=")
    if not sep or not name or mode not in MODES:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=keep|drop|redact")
    return name, mode


def access_log(args: argparse.Namespace) -> kroute.AccessLog | None:
    """The access log the flags ask for (not started), or None."""
    if args.access_log is None:
        return None
    try:
        filters = kroute.LogFilters(
            kroute.LogFilters.parse_status_codes(args.access_log_status),
            retry_attempts=args.access_log_retries, min_duration=args.access_log_min_duration,
        )  # fmt: skip
    except kroute.ConfigError as exc:
        raise SystemExit(f"--access-log-status: {exc}") from None
    headers = kroute.HeaderModes(args.access_log_headers, dict(args.access_log_header))
    form = kroute.LogFormat(args.access_log_format, filters, headers)
    return kroute.AccessLog(args.access_log, format=form)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging(args: argparse.Namespace) -> None:
    """Control-plane logs (watch re-lists and errors, rejected objects, endpoint health,
    certificate reloads) to standard error, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(args.log_level)
