"""A TCP proxy on loopback in front of the S3 server: adds a fixed latency to every request and counts bytes.

The object store benchmark (:mod:`benchmarks.object_store`) points its clients at the proxy through
``AWS_ENDPOINT_URL``. Every request waits ``delay_s`` before it is passed on, which is what a server
further away costs per round trip; bytes are counted in both directions, so "bytes fetched from the
server" is what really crossed the wire (HTTP headers included), whichever client asked.

A request starts where the client sends data on a connection that was idle, or that has had an answer
since the client last sent: a GET's headers, or the first piece of a PUT's body. Each such start is
delayed once and counted as one request. The delay is per connection, so requests in flight on
several connections wait side by side, as they would on a real network. Threads, standard library only.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class Traffic:
    """What crossed the proxy: bytes each way, requests started and connections opened."""

    down_bytes: int  # server to client: what was fetched
    up_bytes: int  # client to server
    requests: int
    connections: int


class LatencyProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``upstream``; ``delay_s`` may change between runs."""

    def __init__(self, upstream: tuple[str, int], delay_s: float = 0.0) -> None:
        self.upstream, self.delay_s = upstream, delay_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._counts = [0, 0, 0, 0]  # down, up, requests, connections
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="latency-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LatencyProxy:
        self._thread.start()
        return self

    def traffic(self) -> Traffic:
        with self._lock:
            return Traffic(*self._counts)

    def reset(self) -> None:
        """Counts from zero, for the next measured run."""
        with self._lock:
            self._counts = [0, 0, 0, 0]

    def stop(self) -> None:
        """Stop listening and cut every open connection."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(), which close() alone does not
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                _close(sock)
        self._thread.join(5)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _add(self, index: int, amount: int) -> None:
        with self._lock:
            self._counts[index] += amount

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _close(client)
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open.update((client, server))
                self._counts[3] += 1
            link = _Link(client, server)
            threading.Thread(target=self._upstream, args=(link,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(link,), daemon=True).start()

    def _upstream(self, link: _Link) -> None:
        """Client to server: each new request waits ``delay_s`` first."""
        try:
            while data := link.client.recv(BUFFER_BYTES):
                if link.answered:
                    link.answered = False
                    self._add(2, 1)
                    if self.delay_s > 0:
                        time.sleep(self.delay_s)
                self._add(1, len(data))  # counted before it is passed on: a client that has it finds it counted
                link.server.sendall(data)
        except OSError:
            pass
        self._finish(link, link.server)

    def _downstream(self, link: _Link) -> None:
        """Server to client, counted; any answer means the client's next data is a new request."""
        buffer = bytearray(BUFFER_BYTES)
        view = memoryview(buffer)
        try:
            while count := link.server.recv_into(buffer):
                link.answered = True
                self._add(0, count)
                link.client.sendall(view[:count])
        except OSError:
            pass
        self._finish(link, link.client)

    def _finish(self, link: _Link, target: socket.socket) -> None:
        """One direction ended: tell ``target``, and close both sockets once neither direction is left."""
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            link.pumps -= 1
            done = link.pumps == 0
            if done:
                self._open.difference_update((link.client, link.server))
        if done:
            _close(link.client)
            _close(link.server)


class _Link:
    """One client connection and its own connection to the server."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.answered = True  # the client's next data starts a request
        self.pumps = 2  # directions still forwarding


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
