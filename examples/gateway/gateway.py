"""The seed's gateway, built only from kroute's public API.

    python examples/gateway/gateway.py (--manifests DIR | --kubeconfig FILE | --in-cluster)
        [--listen HOST:PORT] [--admin HOST:PORT] [--ingress-class NAME]
        [--tls-listen HOST:PORT [--default-certificate NAMESPACE/NAME] [--hsts VALUE]]
        [--entrypoint NAME=HOST:PORT[,tls][,advertised=PORT] ...] [--advertise NAME=PORT ...]
        [--publish-address ADDR ...] [--publish-service NAMESPACE/NAME] [--controller-name NAME]
        [--leader-elect [--leader-elect-namespace NS] [--identity ID] [--leader-elect-* SECONDS]]
        [--certresolver NAME=DIRECTORY_URL,email=ADDRESS[,challenge=...][,...] ...]
        [--acme-namespace NS] [--acme-storage DIR]                    (docs/acme.md)
        [--log-format text|json] [--access-log [PATH|-]] [...]   (logs.py: every log flag)
        [--tracing otlp [--tracing-sample-ratio RATIO]]             (traces.py)

Watches every routing family (from manifest files, or from a cluster through a kubeconfig or
the pod's service account): Ingresses and IngressClasses; the Gateway API's GatewayClasses,
Gateways, HTTPRoutes and ReferenceGrants; Traefik's IngressRoutes and Middlewares; Namespaces
(their labels, for Gateway listeners' namespace selectors), Services and EndpointSlices. On a
cluster, a kind whose CRD is not installed is skipped with one log line and picked up within
30 s of its CRD being installed. Routes HTTP on --listen and serves the admin app (readiness,
JSON state, metrics, dashboard) on --admin, loopback by default. With --tls-listen it also
terminates TLS there, with the certificates of the TLS Secrets the Ingresses and Gateway
listeners name (so it watches Secrets too), chosen by SNI and reloaded as they change.
Each place it serves is a named entry point (docs/entrypoints.md): --listen is `web`,
--tls-listen is `websecure`, and each --entrypoint adds one; a route is served only on the entry
points it is attached to (a Gateway listener binds to the entry point listening on its port, or
advertising it: --advertise web=80 when a Service maps port 80 to --listen's). On a cluster it
writes the status of what it serves (docs/status.md): Ingress addresses from --publish-address
and --publish-service, Gateway API conditions; with --leader-elect only the replica holding the
Lease writes, and every replica routes. With --certresolver it obtains certificates from an
ACME CA (Let's Encrypt) for the routes that name the resolver, answers HTTP-01 challenges (or
TLS-ALPN-01 ones on its TLS entry points), and stores them in Secrets of --acme-namespace
(offline: --acme-storage DIR, else memory) that every replica serves; with --leader-elect only
the leader orders.
SIGTERM or Ctrl-C stops accepting and lets requests in flight finish.
Control-plane logs go to standard error; --access-log writes Traefik's access log lines
(logs.py); --tracing otlp sends OpenTelemetry spans to a collector (traces.py).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import signal
import sys
import threading
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.abc
import logs
import traces
from sniffio import current_async_library

import kroute

#: What the gateway watches: every kind routing reads but Secrets, which only TLS reads;
#: exactly the kinds examples/deploy's ClusterRole grants.
KINDS = tuple(kind for kind in kroute.kinds.ROUTING_KINDS if kind != kroute.kinds.SECRET)
#: Seconds between looks at a kind whose CRD is not installed (one cheap 404 each): a CRD
#: installed after the gateway started routes within half a minute, not the default 5 minutes.
MISSING_RECHECK = 30.0
#: The pod's namespace, as Kubernetes mounts it with the service account's token.
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def namespaced_name(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--manifests", metavar="DIR", help="YAML/JSON manifests, re-read on change")
    where.add_argument("--kubeconfig", metavar="FILE", help="a cluster through this kubeconfig")
    where.add_argument("--in-cluster", action="store_true", help="the pod's service account")
    parser.add_argument("--listen", type=address, default=("127.0.0.1", 8080))
    parser.add_argument("--admin", type=address, default=("127.0.0.1", 8580))
    parser.add_argument("--ingress-class", default="kroute")
    parser.add_argument("--tls-listen", type=address, metavar="HOST:PORT",
                        help="HTTPS here too, with certificates from TLS Secrets")  # fmt: skip
    parser.add_argument("--default-certificate", type=namespaced_name, metavar="NAMESPACE/NAME",
                        help="TLS Secret for unknown names and clients without SNI")  # fmt: skip
    parser.add_argument("--hsts", metavar="VALUE",
                        help="Strict-Transport-Security on HTTPS (max-age=31536000)")  # fmt: skip
    parser.add_argument("--entrypoint", type=entry_point, action="append", default=[],
                        metavar="NAME=HOST:PORT[,tls][,advertised=PORT]",
                        help="one more named entry point (repeatable)")  # fmt: skip
    parser.add_argument("--advertise", type=advertised, action="append", default=[],
                        metavar="NAME=PORT", help="the port Gateway listeners use for an entry "
                        "point that listens on another (repeatable)")  # fmt: skip
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to drain on stop")
    parser.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="freeze the initial objects out of the GC once ready")  # fmt: skip
    parser.add_argument("--front", choices=["auto", "fast", "anyio"], default="auto",
                        help="FastGateway (default on asyncio) or HttpServer")  # fmt: skip
    add_status_arguments(parser)
    add_acme_arguments(parser)
    logs.add_arguments(parser)
    traces.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.manifests and (args.publish_address or args.publish_service or args.leader_elect):
        parser.error("status is written to a cluster: with --manifests, `python -m kroute status "
                     "-f DIR` prints it instead")  # fmt: skip
    web = kroute.EntryPoint("web", args.listen[1], host=args.listen[0])
    secure = []
    if args.tls_listen:
        host, port = args.tls_listen
        secure = [kroute.EntryPoint("websecure", port, tls=True, host=host)]
    args.entry_points = [web, *secure, *args.entrypoint]
    names = [e.name for e in args.entry_points]
    if len(set(names)) < len(names):
        parser.error(f"entry point names must be unique (web is --listen, websecure "
                     f"--tls-listen): {', '.join(names)}")  # fmt: skip
    ports = dict(args.advertise)
    if ports.keys() - set(names):
        parser.error(f"--advertise names no entry point: {', '.join(ports.keys() - set(names))}")
    args.entry_points = [advertising(e, ports.get(e.name)) for e in args.entry_points]
    for resolver in args.certresolver:
        problem = resolver_problem(resolver, args.entry_points)
        if problem is not None:
            parser.error(f"--certresolver {resolver.name}: {problem}")
    if args.acme_storage and not args.manifests:
        parser.error("--acme-storage is for --manifests: on a cluster certificates are Secrets "
                     "(--acme-namespace)")  # fmt: skip
    return args


def add_acme_arguments(parser: argparse.ArgumentParser) -> None:
    acme = parser.add_argument_group("ACME certificates (docs/acme.md)")
    acme.add_argument("--certresolver", type=certificate_resolver, action="append", default=[],
                      metavar="NAME=DIRECTORY_URL,email=ADDRESS[,challenge=http-01][,...]",
                      help="an ACME certificate resolver routes can name (repeatable)")  # fmt: skip
    acme.add_argument("--acme-namespace", metavar="NS", help="where certificates, the account "
                      "key and challenges are kept as Secrets (default: the pod's)")  # fmt: skip
    acme.add_argument("--acme-storage", metavar="DIR", help="with --manifests: keep them in "
                      "this directory (default: in memory)")  # fmt: skip


def certificate_resolver(text: str) -> kroute.Resolver:
    try:
        return kroute.Resolver.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolver_problem(resolver: kroute.Resolver, points: Sequence[kroute.EntryPoint]) -> str | None:
    """What is wrong with `resolver` on these entry points (None: nothing)."""
    if not any(e.tls for e in points):
        return "certificates are served on an HTTPS entry point: add --tls-listen"
    found = [e for e in points if e.name == resolver.entry_point]
    if not found:
        return f"entrypoint={resolver.entry_point} names no entry point"
    if resolver.challenge == "tls-alpn-01" and not found[0].tls:
        return f"TLS-ALPN-01 is answered over TLS: entry point {found[0].name} is plain HTTP"
    if resolver.challenge == "http-01" and found[0].tls:
        return f"HTTP-01 is answered over plain HTTP: entry point {found[0].name} is TLS"
    return None


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    status = parser.add_argument_group("status write-back (on a cluster; docs/status.md)")
    status.add_argument("--publish-address", type=published, action="append", default=[],
                        metavar="ADDR", help="an address clients reach the gateway at: an IP "
                        "or a host name (repeatable)")  # fmt: skip
    status.add_argument("--publish-service", type=namespaced_name, metavar="NAMESPACE/NAME",
                        help="publish this Service's load-balancer addresses (or external "
                        "IPs), followed as they change")  # fmt: skip
    status.add_argument("--controller-name", default=kroute.StatusSettings().controller_name,
                        help="the GatewayClass controllerName answered for")  # fmt: skip
    status.add_argument("--status-rate", type=float, default=20.0,
                        help="status writes per second at most")  # fmt: skip
    status.add_argument("--status-burst", type=int, default=50, help="... in bursts of")
    election = parser.add_argument_group("leader election (docs/leader.md)")
    election.add_argument("--leader-elect", action="store_true",
                          help="only the Lease kroute-status's holder writes status")  # fmt: skip
    election.add_argument("--leader-elect-namespace", metavar="NS",
                          help="the Lease's (default: the pod's, else default)")  # fmt: skip
    election.add_argument("--identity", help="this replica's name in the Lease (default: host "
                          "name and process id)")  # fmt: skip
    election.add_argument("--leader-elect-lease-duration", type=float, default=15.0)
    election.add_argument("--leader-elect-renew-deadline", type=float, default=10.0)
    election.add_argument("--leader-elect-retry-period", type=float, default=2.0)


def published(text: str) -> kroute.PublishedAddresses:
    try:
        return kroute.PublishedAddresses.parse([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pod_namespace(in_cluster: bool) -> str:
    """The pod's own namespace (its service account's namespace file) in a cluster, else
    `default`, as client-go's leader election examples do."""
    if in_cluster:
        with contextlib.suppress(OSError):
            return Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip() or "default"
    return "default"


def advertising(point: kroute.EntryPoint, port: int | None) -> kroute.EntryPoint:
    """`point` advertising `port` (None: as it was)."""
    if port is None:
        return point
    return kroute.EntryPoint(point.name, point.port, point.tls, point.host, port)


def advertised(text: str) -> tuple[str, int]:
    name, sep, port = text.partition("=")
    if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PORT")
    return name, int(port)


def entry_point(text: str) -> kroute.EntryPoint:
    try:
        return kroute.EntryPoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def make_cluster(args: argparse.Namespace) -> kroute.Cluster | None:
    """The cluster the gateway watches (None: manifest files)."""
    if args.manifests:
        return None
    return (kroute.Cluster.in_cluster() if args.in_cluster
            else kroute.Cluster.from_kubeconfig(args.kubeconfig))  # fmt: skip


def make_source(args: argparse.Namespace, cluster: kroute.Cluster | None) -> kroute.Source:
    tls = any(e.tls for e in args.entry_points)
    kinds = (*KINDS, kroute.kinds.SECRET) if tls else KINDS  # TLS reads Secrets
    if cluster is None:
        return kroute.ManifestSource([args.manifests], kinds)
    return kroute.KubernetesSource(cluster, kinds, missing_recheck=MISSING_RECHECK)


def make_election(args: argparse.Namespace, api: kroute.ApiClient) -> kroute.LeaderElection | None:
    """With --leader-elect: the election whose leader writes status and orders certificates."""
    if not args.leader_elect:
        return None
    return kroute.LeaderElection(
        api, namespace=args.leader_elect_namespace or pod_namespace(args.in_cluster),
        identity=args.identity, lease_duration=args.leader_elect_lease_duration,
        renew_deadline=args.leader_elect_renew_deadline,
        retry_period=args.leader_elect_retry_period,
    )  # fmt: skip


def make_acme_store(
    args: argparse.Namespace, cluster: kroute.Cluster | None, api: kroute.ApiClient | None
) -> tuple[kroute.AcmeStore, kroute.Source | None]:
    """Where certificates are kept, and on a cluster the source that watches them there."""
    if cluster is None or api is None:
        if args.acme_storage:
            return kroute.DirectoryStore(args.acme_storage), None
        return kroute.MemoryStore(), None
    namespace = args.acme_namespace or pod_namespace(args.in_cluster)
    source = kroute.KubernetesSource(cluster, (kroute.kinds.SECRET,), namespace=namespace,
                                     label_selector=kroute.ACME_SELECTOR)  # fmt: skip
    return kroute.SecretStore([source], api, namespace), source


def make_writer(
    args: argparse.Namespace,
    router: kroute.Router,
    api: kroute.ApiClient,
    election: kroute.LeaderElection | None,
) -> kroute.StatusWriter:
    """The status writer of what `router` serves (only while leading, with --leader-elect)."""
    return kroute.StatusWriter(
        router, api, controller_name=args.controller_name,
        addresses=sum(args.publish_address, kroute.PublishedAddresses()),
        publish_service=args.publish_service, election=election,
        rate=args.status_rate, burst=args.status_burst,
    )  # fmt: skip


async def write_status(writer: kroute.StatusWriter) -> None:
    """Take part in the election, if any, and write status while leading."""
    async with anyio.create_task_group() as group:
        if writer.election is not None:
            group.start_soon(writer.election.run)
        group.start_soon(writer.run)


class Started(NamedTuple):
    router: kroute.Router
    port: int
    admin_port: int
    tls_port: int | None
    #: On a cluster: what writes the status of what it serves.
    writer: kroute.StatusWriter | None = None
    #: With --certresolver: the ACME certificates.
    acme: kroute.AcmeCertificates | None = None


async def serve(
    args: argparse.Namespace,
    stop: anyio.Event | None = None,
    *,
    ports: dict[str, int] | None = None,
    task_status: anyio.abc.TaskStatus[Started] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway until `stop` is set (then drain) or cancelled; reports `Started`, and
    fills `ports` with the port each entry point listens on, by name."""
    cluster = make_cluster(args)
    source = make_source(args, cluster)
    api = kroute.ApiClient(cluster) if cluster is not None else None
    election = make_election(args, api) if api is not None else None
    store, acme_source = make_acme_store(args, cluster, api) if args.certresolver else (None, None)
    router = kroute.Router([source, *([acme_source] if acme_source else [])],
                           transport=kroute.PooledTransport(), ingress_class=args.ingress_class,
                           entry_points=args.entry_points)  # fmt: skip
    contexts = kroute.TlsContexts()
    acme = None
    if store is not None:  # (its TLS-ALPN-01 challenges answered by the TLS fronts)
        acme = kroute.AcmeCertificates(router, args.certresolver, store, election=election,
                                       alpn=contexts.challenges)  # fmt: skip
    tls = None
    if any(e.tls for e in args.entry_points):
        tls = kroute.TlsCertificates([source], contexts, ingress_class=args.ingress_class,
                                     default_secret=args.default_certificate,
                                     providers=[acme] if acme else [])  # fmt: skip
    writer = make_writer(args, router, api, election) if api is not None else None
    metrics = kroute.Metrics(router, tls=tls) if find_spec("prometheus_client") else None
    if metrics is not None and acme is not None:
        acme.register(metrics.registry)
    admin = kroute.AdminHandler(router, metrics=metrics, tls=tls, acme=acme)
    access = logs.access_log(args)
    traced = traces.tracing(args)
    with contextlib.ExitStack() as stack:
        if traced is not None:
            router.tracing, provider = traced
            stack.callback(provider.shutdown)
        if access is not None:
            stack.enter_context(access)
            router.observers.append(access)
            if metrics is not None:
                access.register(metrics.registry)
            if access.path is not None and threading.current_thread() is threading.main_thread():
                access.reopen_on_signal(signal.SIGUSR1)  # logrotate
        await run(args, router, tls, admin, (api, writer, acme), stop, ports, task_status)


async def run(
    args: argparse.Namespace,
    router: kroute.Router,
    tls: kroute.TlsCertificates | None,
    handler: kroute.AdminHandler,
    status: tuple[
        kroute.ApiClient | None, kroute.StatusWriter | None, kroute.AcmeCertificates | None
    ],
    stop: anyio.Event | None,
    ports: dict[str, int] | None,
    task_status: anyio.abc.TaskStatus[Started],
) -> None:
    api, writer, acme = status  # (on a cluster: the API client, what writes status through it)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(router.run)
            if handler.traffic is not None:
                group.start_soon(handler.traffic.run)  # the dashboard's charts, every 10 s
            admin = kroute.HttpServer(handler)
            if writer is not None:
                group.start_soon(write_status, writer)
            if acme is not None:
                group.start_soon(acme.run)
            if args.gc_freeze:
                group.start_soon(freeze_when_ready, router)
            fronts = [await start_front(group, router, args, point, tls)
                      for point in args.entry_points]  # fmt: skip
            admin_port = await listen(group, admin, args.admin)
            bound = {e.name: port for e, (_, port) in zip(args.entry_points, fronts, strict=True)}
            if ports is not None:
                ports.update(bound)
            task_status.started(Started(router, bound["web"], admin_port, bound.get("websecure"),
                                        writer, acme))  # fmt: skip
            await (stop or anyio.Event()).wait()
            for front, _ in fronts:  # stop accepting, let requests in flight finish
                await front.shutdown(args.grace)
            await admin.shutdown(0)
            group.cancel_scope.cancel()
    finally:
        # Once every task has ended: leader election releases its Lease through `api` as it
        # stops, so the client is closed after that, never under it (a connection opened on
        # a closed pool would be left open).
        with anyio.CancelScope(shield=True):
            await router.transport.aclose()  # type: ignore[union-attr]
            if api is not None:
                await api.aclose()


async def start_front(
    group: anyio.abc.TaskGroup,
    router: kroute.Router,
    args: argparse.Namespace,
    point: kroute.EntryPoint,
    certificates: kroute.TlsCertificates | None,
) -> tuple[kroute.FastGateway | kroute.HttpServer, int]:
    """The front of one entry point: FastGateway on asyncio, HttpServer on trio (or as
    --front says); HTTPS when the entry point terminates TLS."""
    tls = certificates.contexts if point.tls and certificates is not None else None
    scheme = "http" if tls is None else "https"
    where = (point.host or "0.0.0.0", point.port)
    if args.front == "fast" or (args.front == "auto" and current_async_library() == "asyncio"):
        fast = kroute.FastGateway(router, scheme=scheme, hsts=args.hsts, entry_point=point.name)
        serve = fast.serve
        if tls is not None:  # HTTPS, and TLS-ALPN-01 answered (no cost while none is pending)
            serve = functools.partial(fast.serve, tls=tls.server, challenges=tls.challenges)
        return fast, await group.start(serve, *where)
    handler = kroute.GatewayHandler(router, hsts=args.hsts, entry_point=point.name)
    http = kroute.HttpServer(handler, scheme=scheme)
    return http, await listen(group, http, where, tls)


async def freeze_when_ready(router: kroute.Router) -> None:
    """Once the initial objects are loaded, move them out of the garbage collector's way: they
    live as long as the process, and full collections walking 10,000 objects' dicts were the
    100-200 ms outliers in change-to-routing (docs/benchmarks.md)."""
    while not router.ready:
        await anyio.sleep(0.1)
    gc.freeze()


async def listen(
    group: anyio.abc.TaskGroup,
    server: kroute.HttpServer,
    where: tuple[str, int],
    tls: kroute.TlsContexts | None = None,
) -> int:
    tcp = await anyio.create_tcp_listener(local_host=where[0], local_port=where[1])
    listener: anyio.abc.Listener[Any] = tcp
    if tls is not None:
        listener = kroute.HandshakeListener(
            tcp, tls.server, standard_compatible=False, handshake_timeout=10,
            challenges=tls.challenges,
        )  # fmt: skip
    await group.start(server.serve, listener)
    return int(tcp.extra(anyio.abc.SocketAttribute.local_port))


async def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logs.setup_logging(args)
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        ports: dict[str, int] = {}
        started = await group.start(functools.partial(serve, ports=ports), args, stop)
        https = f", https on {args.tls_listen[0]}:{started.tls_port}" if started.tls_port else ""
        https += "".join(f", {e.name} on {e.host}:{ports[e.name]}"
                         for e in args.entry_points[1 + bool(args.tls_listen):])  # fmt: skip
        print(f"kroute gateway on {args.listen[0]}:{started.port}{https}, admin on "
              f"{args.admin[0]}:{started.admin_port}", file=sys.stderr, flush=True)  # fmt: skip
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                stop.set()
                break


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        uvloop = find_spec("uvloop") is not None
        anyio.run(main, backend_options={"use_uvloop": uvloop})
