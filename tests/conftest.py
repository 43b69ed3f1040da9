"""I/O tests run on asyncio and on trio; gateway tests on each front."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.acmeca import AcmeCA, pebble_ca
from tests.kubeserver import Kube, KubeServer, kube_server

#: Fixtures whose every value runs on its own event loop: (loop, value) pairs.
ON_LOOPS = {
    "front": [("asyncio", "anyio"), ("asyncio", "fast"), ("trio", "anyio")],
    #: every front, the ASGI gateway included (`tests.fronts`)
    "every_front": [
        ("asyncio", "anyio"),
        ("asyncio", "fast"),
        ("trio", "anyio"),
        ("asyncio", "asgi"),
        ("trio", "asgi"),
    ],
    "engine": [("asyncio", "protocols"), ("asyncio", "streams"), ("trio", "streams")],
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`anyio_backend` is asyncio and trio, unless a test names its own. Tests taking `front`
    run on each gateway front: HttpServer + GatewayHandler on asyncio and trio, FastGateway on
    asyncio (the only loop it runs on). Tests taking `engine` run on each engine of
    PooledTransport: asyncio Protocols (asyncio only) and anyio streams (asyncio and trio)."""
    names = metafunc.fixturenames
    own = {
        name
        for mark in metafunc.definition.iter_markers("parametrize")
        for name in ([mark.args[0]] if isinstance(mark.args[0], str) else mark.args[0])
    }
    for fixture, pairs in ON_LOOPS.items():
        if fixture in names:
            ids = [f"{loop}-{value}" for loop, value in pairs]
            metafunc.parametrize(("anyio_backend", fixture), pairs, ids=ids, scope="function")
            return
    if "anyio_backend" in names and "anyio_backend" not in "".join(own):
        metafunc.parametrize("anyio_backend", ["asyncio", "trio"])


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Set by the parametrization above (or by a test's own `parametrize`)."""
    return str(request.param)


@pytest.fixture
def every_front(request: pytest.FixtureRequest) -> str:
    """A gateway front ("anyio", "fast" or "asgi"), set by the parametrization above."""
    return str(request.param)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """PooledTransport's engine, set by the parametrization above."""
    return str(request.param)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    """A real kube-apiserver with etcd (../shared/kube/up.sh) for the whole session; a missing
    ../shared/kube fails the tests that need it."""
    with kube_server(tmp_path_factory.mktemp("kube")) as server:
        yield server


@pytest.fixture
def api(kube: KubeServer) -> Iterator[Kube]:
    """A synchronous client of the real API server that writes the tests' objects."""
    client = kube.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeCA]:
    """Let's Encrypt's test CA Pebble (../shared/acme/up.sh) for the whole session, with real
    validation against 127.0.0.1; a missing ../shared/acme fails the tests that need it."""
    with pebble_ca(tmp_path_factory.mktemp("acme")) as ca:
        yield ca


@pytest.fixture(scope="session")
def acme_ca(pebble: AcmeCA) -> dict[str, str]:
    """The same Pebble as its state file's values (ACME_DIRECTORY_URL, ACME_CA_CERT,
    ACME_TLSALPN01_PORT, ...: ../shared/acme/README.md)."""
    return dict(pebble.state)
