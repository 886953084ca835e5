"""A TCP proxy between a client and a server that can stop forwarding, to show network faults
without root: no firewall rule, no lost packet, just bytes that are accepted and swallowed.

``FlakyProxy(host, port)`` listens on 127.0.0.1 (a free port, :attr:`port`) and forwards every
connection it accepts to ``host:port``, until told otherwise:

* :meth:`blackhole`: a network partition as a client sees it. Every connection, open or new,
  stops forwarding both ways: what either side sends is read and dropped, nothing is answered,
  nothing is closed. (A new connection is accepted and never connected onward.)
* :meth:`drop_replies`: the answer lost on the way back. The connections open now still carry
  what the client sends to the server, but the server's answers are dropped; new connections
  forward normally (a client that reconnects gets through).
* :meth:`heal`: every connection that still has its server side forwards again.

Swallowing is stronger than a firewall's drop for the client: its bytes are acknowledged by the
proxy's kernel, so no TCP timeout (keepalives, tcp_user_timeout) ever fires; only a deadline
kept by the client itself ends the wait.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket | None
    swallow_up: bool = False  # client -> server dropped
    swallow_down: bool = False  # server -> client dropped
    threads: list[threading.Thread] = field(default_factory=list)


class FlakyProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._new_blackholed = False
        self.accepted = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="flakyproxy", daemon=True)
        self._thread.start()

    # -- modes ---------------------------------------------------------------------------------
    def blackhole(self) -> None:
        with self._lock:
            self._new_blackholed = True
            for pair in self._pairs:
                pair.swallow_up = pair.swallow_down = True

    def drop_replies(self) -> None:
        with self._lock:
            self._new_blackholed = False
            for pair in self._pairs:
                pair.swallow_down = True

    def heal(self) -> None:
        with self._lock:
            self._new_blackholed = False
            for pair in self._pairs:
                pair.swallow_up = pair.swallow_down = False

    # -- plumbing ------------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                blackholed = self._new_blackholed
            server = None
            if not blackholed:
                try:
                    server = socket.create_connection(self._target, timeout=10)
                    server.settimeout(None)
                except OSError:
                    client.close()
                    continue
            pair = _Pair(client, server, swallow_up=blackholed, swallow_down=blackholed)
            with self._lock:
                if self._closed:
                    client.close()
                    if server is not None:
                        server.close()
                    return
                self._pairs.append(pair)
            up = threading.Thread(target=self._pump, args=(pair, True), daemon=True)
            pair.threads.append(up)
            up.start()
            if server is not None:
                down = threading.Thread(target=self._pump, args=(pair, False), daemon=True)
                pair.threads.append(down)
                down.start()

    def _pump(self, pair: _Pair, upward: bool) -> None:
        source = pair.client if upward else pair.server
        assert source is not None
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close_pair(pair)
                return
            with self._lock:
                swallow = pair.swallow_up if upward else pair.swallow_down
            target = pair.server if upward else pair.client
            if swallow or target is None:
                continue
            try:
                target.sendall(data)
            except OSError:
                self._close_pair(pair)
                return

    def _close_pair(self, pair: _Pair) -> None:
        for sock in (pair.client, pair.server):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pairs = list(self._pairs)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)
        for pair in pairs:
            self._close_pair(pair)
            for thread in pair.threads:
                thread.join(timeout=5)
            for sock in (pair.client, pair.server):
                if sock is not None:
                    sock.close()

    def __enter__(self) -> FlakyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
