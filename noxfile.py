"""Developer sessions: `nox -s lint typecheck tests` is the README's test command and CI's."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = True


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: the example gateway on the shipped manifests, with demo backends.

    Serves until Ctrl-C; `nox -s demo -- --once` exits after the tour of requests.
    """
    session.install("-e", ".[metrics,speed]")
    session.run("python", "examples/gateway/demo.py", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pytest, hypothesis, anyio on asyncio and trio)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff for style and bugs, import-linter for the layering in docs/architecture.md."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, its tests, examples and benchmarks."""
    session.install("-e", ".[typecheck,test,bench]")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; each reports ratios against a baseline measured in the same run."""
    # The watch benchmark uses the API emulator; the transport one compares with httpx.
    session.install("-e", ".[test,bench]")
    session.run("python", "benchmarks/bench_rules.py", *session.posargs)
    session.run("python", "benchmarks/bench_explain.py")
    session.run("python", "benchmarks/bench_pools.py")
    session.run("python", "benchmarks/bench_watch.py")
    # The real kube-apiserver from ../shared/kube (started and stopped by the benchmark).
    session.run("python", "benchmarks/bench_kube.py")
    session.run("python", "benchmarks/bench_status.py")
    session.run("python", "benchmarks/bench_transport.py")
    # Instruction counts need valgrind; without it, bench_hotpath reports CPU time only.
    session.run("python", "benchmarks/bench_hotpath.py", "--callgrind")
    session.run("python", "benchmarks/bench_gateway.py")
    session.run("python", "benchmarks/bench_tls.py")
    # What the TLS-ALPN-01 responder costs ordinary TLS clients (needs wrk).
    session.run("python", "benchmarks/bench_alpn.py")
