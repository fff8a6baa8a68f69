"""uvicorn's HTTP/1.1 protocol with a deadline for request headers. uvicorn times out idle
keep-alive connections but not a client that trickles a request's headers a byte at a time
(slowloris): each connection, and each keep-alive wait for the next request, gets
HEADER_TIMEOUT_S to deliver complete headers, else it is closed. Bodies have their own limits in
`app.read_body`."""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 15.0


class HeaderDeadlineProtocol(H11Protocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._headers_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._expire)

    def _expire(self) -> None:
        # a request whose headers arrived has a cycle that is still running or has answered
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        had = self.cycle
        super().handle_events()
        if self.cycle is not had and self.cycle is not None:  # a new request's headers are in
            self._headers_deadline.cancel()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._headers_deadline.cancel()
        self._arm()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc) -> None:
        self._headers_deadline.cancel()
        super().connection_lost(exc)
