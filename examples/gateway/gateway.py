"""The seed's gateway, built only from kroute's public API.

    python examples/gateway/gateway.py (--manifests DIR | --kubeconfig FILE | --in-cluster)
        [--listen HOST:PORT] [--admin HOST:PORT] [--ingress-class NAME]

Watches Ingresses, IngressClasses, Services and EndpointSlices (from manifest files, or from
a cluster through a kubeconfig or the pod's service account), routes HTTP on --listen and
serves the admin app (readiness, JSON state, metrics, dashboard) on --admin, loopback by
default. SIGTERM or Ctrl-C stops accepting and lets requests in flight finish.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import signal
import sys
from collections.abc import Sequence

import anyio
import anyio.abc
import sniffio

import kroute

#: What the gateway watches: exactly the kinds examples/deploy's ClusterRole grants.
KINDS = (kroute.kinds.INGRESS, kroute.kinds.INGRESS_CLASS, kroute.kinds.SERVICE,
         kroute.kinds.ENDPOINT_SLICE)  # fmt: skip


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--manifests", metavar="DIR", help="YAML/JSON manifests, re-read on change")
    where.add_argument("--kubeconfig", metavar="FILE", help="a cluster through this kubeconfig")
    where.add_argument("--in-cluster", action="store_true", help="the pod's service account")
    parser.add_argument("--listen", type=address, default=("127.0.0.1", 8080))
    parser.add_argument("--admin", type=address, default=("127.0.0.1", 8580))
    parser.add_argument("--ingress-class", default="kroute")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to drain on stop")
    parser.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="freeze the initial objects out of the GC once ready")  # fmt: skip
    parser.add_argument("--front", choices=["auto", "fast", "anyio"], default="auto",
                        help="FastGateway (default on asyncio) or HttpServer")  # fmt: skip
    return parser.parse_args(argv)


def make_source(args: argparse.Namespace) -> kroute.Source:
    if args.manifests:
        return kroute.ManifestSource([args.manifests], KINDS)
    if args.in_cluster:
        return kroute.KubernetesSource(kroute.Cluster.in_cluster(), KINDS)
    return kroute.KubernetesSource(kroute.Cluster.from_kubeconfig(args.kubeconfig), KINDS)


async def serve(
    args: argparse.Namespace,
    stop: anyio.Event | None = None,
    *,
    task_status: anyio.abc.TaskStatus[tuple[kroute.Router, int, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway until `stop` is set (then drain) or cancelled.

    Reports (router, gateway port, admin port) through `task_status` once listening.
    """
    router = kroute.Router([make_source(args)], transport=kroute.PooledTransport(),
                           ingress_class=args.ingress_class)  # fmt: skip
    metrics = kroute.Metrics(router) if importlib.util.find_spec("prometheus_client") else None
    gateway: kroute.FastGateway | kroute.HttpServer
    admin = kroute.HttpServer(kroute.AdminHandler(router, metrics=metrics))
    async with anyio.create_task_group() as group:
        group.start_soon(router.run)
        if args.gc_freeze:
            group.start_soon(freeze_when_ready, router)
        on_asyncio = sniffio.current_async_library() == "asyncio"
        if args.front == "fast" or (args.front == "auto" and on_asyncio):
            gateway = kroute.FastGateway(router)
            port = await group.start(gateway.serve, *args.listen)
        else:
            gateway = kroute.HttpServer(kroute.GatewayHandler(router))
            port = await listen(group, gateway, args.listen)
        task_status.started((router, port, await listen(group, admin, args.admin)))
        try:
            await (stop or anyio.Event()).wait()
            await gateway.shutdown(args.grace)  # stop accepting, let requests in flight finish
            await admin.shutdown(0)
            group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await router.transport.aclose()  # type: ignore[union-attr]


async def freeze_when_ready(router: kroute.Router) -> None:
    """Once the initial objects are loaded, move them out of the garbage collector's way: they
    live as long as the process, and full collections walking 10,000 objects' dicts were the
    100-200 ms outliers in change-to-routing (docs/benchmarks.md)."""
    while not router.ready:
        await anyio.sleep(0.1)
    gc.freeze()


async def listen(
    group: anyio.abc.TaskGroup, server: kroute.HttpServer, where: tuple[str, int]
) -> int:
    listener = await anyio.create_tcp_listener(local_host=where[0], local_port=where[1])
    await group.start(server.serve, listener)
    return int(listener.extra(anyio.abc.SocketAttribute.local_port))


async def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        _router, port, admin_port = await group.start(serve, args, stop)
        print(f"kroute gateway on {args.listen[0]}:{port}, admin on {args.admin[0]}:{admin_port}",
              file=sys.stderr, flush=True)  # fmt: skip
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                stop.set()
                break


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        uvloop = importlib.util.find_spec("uvloop") is not None
        anyio.run(main, backend_options={"use_uvloop": uvloop})
