"""The dashboard in a real browser: headless Chromium (Debian's `chromium`, which .ci/run
installs) loads the example gateway's dashboard after some traffic, and what its script
rendered is checked: the charts' SVG lines with their points, the route and Service rows, an
endpoint's health transition, the steps of a route, the rejected object. It also takes the
screenshot in docs/images/dashboard.png (written there with KROUTE_UPDATE_SCREENSHOT=1).

Without chromium this fails (it does not skip): CI installs it.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sys
from pathlib import Path

import anyio
import pytest

from tests.builders import ingress, ingressroute
from tests.pods import Client, endpoint_slice, service, start_pods

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "gateway"))
import gateway  # the example gateway

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]  # fmt: skip
#: Virtual time the page gets to run its script (its fetches are waited for).
BUDGET = "--virtual-time-budget=5000"
WWW_ROUTE = "IngressRoute default/www spec.routes[0]"


def manifests(port: int) -> list[dict[str, object]]:
    """www (two pods that answer, one address that refuses: ejected at its first failure),
    through an IngressRoute with a headers Middleware; an Ingress to a Service with no
    endpoint (503s); an Ingress kroute rejects."""
    headers = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
               "metadata": {"name": "tag", "namespace": "default"},
               "spec": {"headers": {"customRequestHeaders": {"X-Via": "kroute"}}}}  # fmt: skip
    www = {"match": "Host(`www.test`)", "kind": "Rule", "middlewares": [{"name": "tag"}],
           "services": [{"name": "www", "port": 80}]}  # fmt: skip
    addresses = [("127.0.0.61", "ready"), ("127.0.0.62", "ready"), ("127.0.0.63", "ready")]
    return [
        ingressroute("www", [www]),
        headers,
        service("www", **{"kroute.dev/outlier-consecutive-gateway-failures": "1"}),
        endpoint_slice("www", port, addresses),
        ingress("empty", [("empty.test", [("/", "Prefix", "nothing")])]),
        service("nothing"),
        ingress("broken", [("broken.test", [("/", "Nonsense", "www")])]),
    ]


async def chromium(*args: str, profile: Path) -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    done = await anyio.run_process(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", BUDGET, *args], check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


def tbody(dom: str, name: str) -> str:
    found = re.search(rf'<tbody id="{name}">(.*?)</tbody>', dom, re.S)
    assert found is not None, f"no table {name}"
    return found.group(1)


def rows(body: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


def points(row: str, chart: str) -> list[tuple[float, float]]:
    """The points of a chart's lines (and of its dots: values alone) in a table row."""
    svg = re.search(rf'<svg class="chart {chart}".*?</svg>', row, re.S)
    assert svg is not None, f"no {chart} chart in {row[:300]}"
    lines = re.findall(r'points="([^"]*)"', svg.group(0))
    dots = re.findall(r'<circle cx="([^"]*)" cy="([^"]*)"', svg.group(0))
    found = [point.split(",") for line in lines for point in line.split()] + dots
    return [(float(x), float(y)) for x, y in found]


async def test_the_dashboard_renders_traffic_health_steps_and_rejections(tmp_path: Path) -> None:
    async with anyio.create_task_group() as group:
        _, pod_port = await start_pods(group, "www", ["127.0.0.61", "127.0.0.62"])
        (tmp_path / "manifests").mkdir()
        (tmp_path / "manifests" / "objects.json").write_text(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests(pod_port)})
        )
        args = gateway.parse_args(["--manifests", str(tmp_path / "manifests"),
                                   "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])  # fmt: skip
        stop = anyio.Event()
        router, port, admin_port, *_ = await group.start(gateway.serve, args, stop)
        with anyio.fail_after(30):
            while not router.ready:
                await anyio.sleep(0.05)
        client = Client(port)
        for _ in range(12):
            assert (await client.request("www.test", "/"))[0] == 200
        for _ in range(3):
            assert (await client.request("empty.test", "/"))[0] == 503
        await client.aclose()

        url = f"http://127.0.0.1:{admin_port}/"
        dom = await chromium("--dump-dom", url, profile=tmp_path / "profile")
        shot = tmp_path / "dashboard.png"
        await chromium("--window-size=1280,1250", f"--screenshot={shot}", url,
                       profile=tmp_path / "profile-2")  # fmt: skip
        stop.set()
        group.cancel_scope.cancel()  # (the pods)

    assert 'id="state" class="up">ready<' in dom
    traffic = {re.sub(r"<.*?>", "", row.split("</td>")[0]): row
               for row in rows(tbody(dom, "route-traffic"))}  # fmt: skip
    assert set(traffic) >= {WWW_ROUTE, "Ingress default/empty spec.rules[0].http.paths[0]"}
    www = points(traffic[WWW_ROUTE], "rate")
    assert len(www) == 90  # one point per 10 s bucket: 15 minutes
    # The traffic is drawn above the zero line (y grows down) in one of the last two buckets
    # (which one depends on when a 10 s bucket began).
    assert min(y for _, y in www[-2:]) < www[0][1]
    assert "12 requests, 0 5xx" in traffic[WWW_ROUTE]
    empty = traffic["Ingress default/empty spec.rules[0].http.paths[0]"]
    assert min(y for _, y in points(empty, "errors")) < points(empty, "errors")[0][1]
    assert "3 requests, 3 5xx" in empty
    assert points(traffic[WWW_ROUTE], "latency")  # a bucket with requests has a p95
    services = "".join(rows(tbody(dom, "service-traffic")))
    assert "default/www:80" in services
    assert "default/nothing:80" in services
    endpoints = {re.search(r"<td>(127\.0\.0\.\d+:\d+)</td>", row).group(1): row  # type: ignore[union-attr]
                 for row in rows(tbody(dom, "services")) if "127.0.0." in row}  # fmt: skip
    dead = endpoints[f"127.0.0.63:{pod_port}"]
    assert re.search(r'<li class="down">\d+ s ago: ejected for 30s after 1 consecutive '
                     r"connect failure</li>", dead), dead  # fmt: skip
    assert "<li" not in endpoints[f"127.0.0.61:{pod_port}"]
    routes = html.unescape(tbody(dom, "routes"))
    step = "RequestHeaderModifier (spec.routes[0].middlewares[0]: Middleware default/tag)"
    assert f"<td>{WWW_ROUTE}</td><td>host www.test</td><td>{step}</td>" in routes
    assert "Ingress default/broken" in tbody(dom, "errors")

    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(png[16:20], "big") == 1280  # the width in the IHDR chunk
    if os.environ.get("KROUTE_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs" / "images").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "images" / "dashboard.png")
