"""HandshakeListener: the TLS listener of HttpServer (anyio, asyncio and trio), with the
TLS-ALPN-01 responder (RFC 8737; `kroute.tls.alpn`).

While a challenge is pending, each connection's ClientHello is read before the handshake
(`kroute.tls.alpn.hello`), the context picked from it (`AlpnChallenges.answer`), and the bytes read
handed to the ssl module ahead of the rest of the stream (`Prefixed`). Reading rather than
peeking: anyio's asyncio streams read the socket as soon as data arrives, so a peek would race
them. With nothing pending a connection costs one truth test more than anyio's TLSListener.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSListener, TLSStream

from kroute.streams import Prefixed
from kroute.tls.alpn.challenges import AlpnChallenges, Refused
from kroute.tls.alpn.hello import NO_APPLICATION_PROTOCOL, Incomplete, Parsed, parse_client_hello

_log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class HandshakeListener(TLSListener):
    """anyio's TLSListener, for HttpServer, answering the TLS-ALPN-01 `challenges` given (e.g.
    `TlsContexts.challenges`), with failed handshakes logged at debug level: scanners and
    clients that give up are routine at a gateway, and each would be an error with a traceback
    otherwise."""

    challenges: AlpnChallenges | None = None

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: anyio.abc.AnyByteStream) -> None:
        await anyio.aclose_forcefully(stream)
        if isinstance(exc, anyio.get_cancelled_exc_class()) or not isinstance(exc, Exception):
            raise exc
        _log.debug("TLS handshake failed: %r", exc)

    async def serve(
        self, handler: Callable[[TLSStream], Any], task_group: anyio.abc.TaskGroup | None = None
    ) -> None:
        challenges = self.challenges
        if challenges is None:
            await super().serve(handler, task_group)
            return

        async def handshake(stream: anyio.abc.ByteStream) -> None:
            context = self.ssl_context
            transport = stream
            try:
                with anyio.fail_after(self.handshake_timeout):
                    if challenges:  # a challenge is pending: the ClientHello decides
                        hello, data = await read_hello(stream)
                        answer = challenges.answer(hello)
                        if isinstance(answer, Refused):  # acme-tls/1, nothing pending for it
                            await stream.send(NO_APPLICATION_PROTOCOL)
                            await stream.aclose()
                            return
                        if answer is not None:
                            context = answer
                        transport = Prefixed(stream, data)
                    tls = await TLSStream.wrap(
                        transport, ssl_context=context,
                        standard_compatible=self.standard_compatible,
                    )  # fmt: skip
            except BaseException as exc:
                await self.handle_handshake_error(exc, stream)
                return
            if context is not self.ssl_context:  # validated: no application data (RFC 8737 s3)
                await anyio.aclose_forcefully(tls)
                return
            await handler(tls)

        await self.listener.serve(handshake, task_group)


async def read_hello(stream: anyio.abc.ByteReceiveStream) -> tuple[Parsed, bytes]:
    """The ClientHello at the start of `stream` (anyio.EndOfStream if it ends first), and the
    bytes read for it, to be replayed."""
    data = b""
    needed = 1
    while True:
        while len(data) < needed:
            data += await stream.receive()
        parsed = parse_client_hello(data)
        if not isinstance(parsed, Incomplete):
            return parsed, data
        needed = parsed.needed  # parsed again only once that much is there
