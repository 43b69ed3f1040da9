"""`python -m kroute explain`: where would these requests go, given these manifests?
`python -m kroute status`: what status would kroute write to them?

    python -m kroute explain -f PATH [-f PATH ...] [--requests FILE]
        [--ingress-class NAME] [--gateway-class NAME] [--format json|text]
        [--entrypoint NAME | --entrypoint NAME=[HOST:]PORT[,tls][,advertised=PORT]]
    python -m kroute status -f PATH [-f PATH ...] [--publish-address ADDR ...]
        [--controller-name NAME] [--ingress-class NAME] [--gateway-class NAME]
        [--entrypoint NAME ...]

Requests are JSON lines (from FILE, or standard input):
    {"method": "GET", "host": "a.example.com:8080", "path": "/x?y=1",
     "headers": {"Name": "v" or ["v1", "v2"]}, "client_ip": "10.0.0.1"}
Only `host` is required. With `--format json` each request gets one line, in order:
    {"matched": true, "route": "...", "backends": [{"namespace", "name", "port", "weight"}]}
    {"matched": false, "status": 404}
and a request line that cannot be read gets `{"error": "..."}`. Exit status: 0 when every request
was answered, 2 when a manifest or a request line could not be read (named on stderr). Objects
rejected as invalid are reported on stderr and do not stop the run. With --entrypoint, only the
routes that entry point serves are considered (docs/entrypoints.md): `web` (port 80) and
`websecure` (443, TLS) are known by name, any other is given with its port.

`status` prints one JSON list of {apiVersion, kind, namespace, name, status, changed}, one
entry per object kroute writes status to (docs/status.md); exit status 0, or 2 when a manifest
or an address cannot be read.

This module must not import the `kubernetes` package (about a second to import).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

from kroute.errors import InvalidRequest, ManifestError
from kroute.manifests import load_paths
from kroute.rules.compile import DEFAULT_CLASS, compile_objects
from kroute.rules.entrypoints import DEFAULT_ENTRY_POINTS, EntryPoint
from kroute.rules.explain import explain
from kroute.rules.request import RequestHead
from kroute.rules.table import RouteTable
from kroute.status import CONTROLLER_NAME, PublishedAddresses, StatusSettings, plan_status

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kroute", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("explain", help="route requests offline against manifests")
    _common(ex)
    ex.add_argument(
        "--requests", metavar="FILE", help="JSON lines of requests (default: standard input)"
    )
    ex.add_argument("--format", choices=("json", "text"), default="json")
    ex.add_argument(
        "--entrypoint",
        type=_entry_point,
        metavar="NAME[=[HOST:]PORT[,tls]]",
        help="explain for this entry point only (web, websecure, or NAME=PORT)",
    )
    st = commands.add_parser("status", help="the status kroute would write, offline")
    _common(st)
    st.add_argument(
        "--publish-address",
        dest="addresses",
        action="append",
        default=[],
        metavar="ADDR",
        help="an address clients reach kroute at: an IP or a DNS name (repeatable)",
    )
    st.add_argument(
        "--controller-name",
        default=CONTROLLER_NAME,
        metavar="NAME",
        help=f"GatewayClass controllerName kroute answers for (default {CONTROLLER_NAME})",
    )
    st.add_argument(
        "--entrypoint",
        dest="entrypoints",
        action="append",
        type=_entry_point,
        metavar="NAME[=[HOST:]PORT[,tls]]",
        help="an entry point kroute listens on "
        "(repeatable): a listener no entry point serves is not Accepted",
    )
    return parser  # fmt: skip


def _common(command: argparse.ArgumentParser) -> None:
    """The manifests and the classes served, which every command takes."""
    command.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        required=True,
        metavar="PATH",
        help="manifest file or directory (repeatable)",
    )
    command.add_argument(
        "--ingress-class",
        default=DEFAULT_CLASS,
        metavar="NAME",
        help=f"IngressClass to serve (default {DEFAULT_CLASS})",
    )
    command.add_argument("--gateway-class", default=DEFAULT_CLASS, metavar="NAME",
                         help=f"GatewayClass to serve (default {DEFAULT_CLASS})")  # fmt: skip


def _entry_point(text: str) -> EntryPoint:
    known = {e.name: e for e in DEFAULT_ENTRY_POINTS}
    if text in known:
        return known[text]
    try:
        return EntryPoint.parse(text if ":" in text else text.replace("=", "=:", 1))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def request_from_json(line: str) -> RequestHead:
    """One request line -> RequestHead; InvalidRequest says what is wrong with it."""
    try:
        data: Any = json.loads(line)
    except ValueError as exc:
        raise InvalidRequest(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("a request must be a JSON object")
    host = data.get("host")
    if not isinstance(host, str):
        raise InvalidRequest("'host' is required and must be a string")
    method, path = data.get("method", "GET"), data.get("path", "/")
    if not isinstance(method, str) or not method:
        raise InvalidRequest("'method' must be a non-empty string")
    if not isinstance(path, str):
        raise InvalidRequest("'path' must be a string")
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))
        for v in headers.values()
    ):
        raise InvalidRequest("'headers' must map names to a string or a list of strings")
    client_ip = data.get("client_ip")
    if client_ip is not None and not isinstance(client_ip, str):
        raise InvalidRequest("'client_ip' must be a string")
    return RequestHead.build(method, host, path, headers=headers, client_ip=client_ip)


def answer(
    table: RouteTable, lines: Iterable[str], source: str, fmt: str, out: IO[str], err: IO[str]
) -> int:
    """Answer each request line on `out` in format `fmt`; the exit status. This is the part of
    the command whose cost is per request (benchmarks/bench_explain.py times it)."""
    status = EXIT_OK
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            request = request_from_json(line)
        except InvalidRequest as exc:
            message = f"{source}:{number}: {exc}"
            print(f"error: {message}", file=err)
            print(
                json.dumps({"error": message}) if fmt == "json" else f"error: {message}", file=out
            )
            status = EXIT_BAD_INPUT
            continue
        explanation = explain(table, request)
        if fmt == "json":
            print(json.dumps(explanation.to_json()), file=out)
        else:
            print(explanation.text() + "\n", file=out)
    return status


def run_explain(args: argparse.Namespace, stdin: IO[str], out: IO[str], err: IO[str]) -> int:
    try:
        objects = load_paths(args.paths)
    except ManifestError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_BAD_INPUT
    point = args.entrypoint
    result = compile_objects(
        objects, ingress_class=args.ingress_class, gateway_class=args.gateway_class,
        entry_points=None if point is None else [point],
    )  # fmt: skip
    table = result.table if point is None else result.table_for(point)
    for error in result.errors:
        print(f"invalid: {error}", file=err)
    for note in result.notes:
        print(f"note: {note}", file=err)
    if args.requests is None:
        return answer(table, stdin, "<stdin>", args.format, out, err)
    try:
        with open(args.requests, encoding="utf-8") as handle:
            return answer(table, handle, args.requests, args.format, out, err)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: {args.requests}: cannot read: {exc}", file=err)
        return EXIT_BAD_INPUT


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Entry point of `python -m kroute` and the `kroute` script; streams default to sys's."""
    args = _parser().parse_args(argv)
    if args.command == "status":
        return run_status(args, stdout or sys.stdout, stderr or sys.stderr)
    return run_explain(args, stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)


def run_status(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Print what kroute would write (kroute.status.plan_status) as one JSON list."""
    try:
        objects = load_paths(args.paths)
        addresses = PublishedAddresses.parse(args.addresses)
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_BAD_INPUT
    # A kind the manifests do not carry at all cannot show that a reference to one is missing.
    given = {m.obj.get("kind") for m in objects if m.obj.get("apiVersion") == "v1"}
    complete = frozenset({"Service", "Secret"} & given)
    for kind in sorted({"Service", "Secret"} - given):
        print(f"note: no {kind} in the manifests: references to {kind}s are not checked", file=err)
    settings = StatusSettings(controller_name=args.controller_name, addresses=addresses,
                              ingress_class=args.ingress_class, gateway_class=args.gateway_class,
                              entry_points=args.entrypoints, complete_kinds=complete)  # fmt: skip
    result = compile_objects(objects, ingress_class=args.ingress_class,
                             gateway_class=args.gateway_class,
                             entry_points=args.entrypoints)  # fmt: skip
    for error in result.errors:
        print(f"invalid: {error}", file=err)
    now = datetime.datetime.now(datetime.UTC)
    updates = plan_status(objects, settings, now=now, compiled=result)
    print(json.dumps([u.to_json() for u in updates], indent=2), file=out)
    return EXIT_OK
