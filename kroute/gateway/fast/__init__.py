"""FastGateway: the gateway on asyncio Protocols (uvloop when installed), for throughput.

Why: the anyio front (HttpServer + GatewayHandler + PooledTransport) spends most of a request
in stream and cancel-scope machinery: about 350 µs of CPU per proxied request here, 0.05x
nginx. Protocol callbacks with llhttp on both sides do the same work in a fraction of that
(docs/benchmarks.md). This package is that fast path, behind the same Router: routing, pools,
passive health, retries and the shared proxy semantics are the same code; only the I/O differs.

Same behaviour as the anyio front, tested by the same suites:
- requests parsed by llhttp in strict mode (ambiguous framing, obs-fold, bare LF: 400; no Host
  in HTTP/1.1, or more than one: 400, RFC 9112 section 3.2), limits
  from `ServerLimits` (414, 431), head timeout (408, slowloris), idle keep-alive timeout;
- hop-by-hop headers removed both ways, X-Forwarded-* and Forwarded set (`forwarding_headers`);
- bodies streamed both ways with flow control (a slow reader pauses the other side);
- retries on another endpoint before the response head, as the Router's `RetryPolicy` allows
  (the one the other fronts ask: safety, attempts, budget); a pooled connection the endpoint
  closed meanwhile is replaced by a fresh one for an idempotent request without a body;
- every attempt reported to the pool's passive health; errors answer 404/500/502/503/504;
- malformed responses (bad status line, Content-Length with Transfer-Encoding) are 502;
- `Upgrade` (WebSocket): after a 101 the two connections are piped byte for byte;
- `shutdown(grace)`: stop accepting, let requests in flight finish, close idle connections.

Limits: asyncio only (trio users run HttpServer); plain HTTP to endpoints (TLS to endpoints
needs PooledTransport); the Router's `transport` is not used (mirror copies go through one of
their own); of `Timeouts`, `connect` and `read` apply, `write` does not (a body the endpoint does
not read pauses the client by flow control, and the read timeout, counted from the request
head, ends the exchange with 504).

The parts, each a module that imports only those below it (an import-linter `layers`
contract), reaching the ones above through the small protocols of `ports`:
- `gateway`: FastGateway, serving and shutdown, the state the connections share;
- `client`: the client connections (`Client`), requests parsed and answered in order;
- `exchange`: one request's way there (`Exchange`): routing, steps, attempts, failures;
- `relay`: its way back (`Relay`, Exchange's base): the response relayed, the end;
- `endpoint`: the connections to endpoints (`Upstream`);
- `ports`: what each side needs of the other (`ClientSide`, `ExchangeSide`, `EndpointSide`,
  `Gateway`), and the parsed request (`Message`).
"""

from kroute.gateway.fast.gateway import FastGateway

__all__ = ["FastGateway"]
