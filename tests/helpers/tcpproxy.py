"""A small TCP proxy for fault injection in tests (catalogue: "an asyncio TCP proxy in
front of sshd (delay, blackhole, RST, cut after N bytes)"; this one uses threads so it
runs beside synchronous code without an event loop).

    with TCPProxy(target_port=2222) as proxy:
        settings = SSHSettings(host="127.0.0.1", port=proxy.port, ...)
        ...
        proxy.cut_after(10_000)       # forward 10 kB more (both directions), then RST all
        proxy.cut_all()               # RST every open connection now
        proxy.blackhole()             # keep connections open but drop all data
        proxy.set_delay(0.2)          # add latency to every chunk
        proxy.refuse()                # close new connections at once

Listens on 127.0.0.1 only and forwards only to the given target (loopback by default).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Literal

Direction = Literal["up", "down", "both"]


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.closed = False
        self.lock = threading.Lock()

    def close(self, rst: bool) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.server):
            try:
                if rst:
                    # linger 0: close() sends RST instead of FIN, like a dropped NAT entry
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RD)  # wakes the pump blocked in recv()
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class TCPProxy:
    """Forwards 127.0.0.1:<port> to *target_host*:*target_port*, with faults on demand."""

    def __init__(
        self,
        target_port: int = 2222,
        target_host: str = "127.0.0.1",
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target = (target_host, target_port)
        self._listen_addr = (listen_host, listen_port)
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.port = 0
        #: connections accepted so far
        self.connections = 0
        #: bytes forwarded client -> server ("up") and server -> client ("down")
        self.bytes_up = 0
        self.bytes_down = 0
        self._delay = 0.0
        self._blackhole = False
        self._refuse = False
        self._budget: int | None = None
        self._budget_dir: Direction = "both"
        #: set when an armed :meth:`cut_after` fired
        self.cut_event = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> TCPProxy:
        """Start listening (on a random free port unless one was given)."""
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(self._listen_addr)
        ls.listen(128)
        self._listener = ls
        self.port = ls.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="tcpproxy-accept", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every connection."""
        self._stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        self.cut_all(rst=False)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)

    def __enter__(self) -> TCPProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) clients should connect to."""
        return (self._listen_addr[0], self.port)

    @property
    def active(self) -> int:
        """Connections currently open."""
        with self._lock:
            return sum(1 for p in self._pairs if not p.closed)

    # -- faults -------------------------------------------------------------------------
    def cut_all(self, rst: bool = True) -> int:
        """Close every open connection now (RST by default, FIN with ``rst=False``)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        n = 0
        for p in pairs:
            if not p.closed:
                n += 1
            p.close(rst)
        return n

    def cut_after(self, nbytes: int, direction: Direction = "both") -> None:
        """Forward exactly *nbytes* more bytes (in *direction*), then cut all connections."""
        with self._lock:
            self._budget = nbytes
            self._budget_dir = direction
            self.cut_event.clear()
        if nbytes <= 0:
            self._fire()

    def disarm(self) -> None:
        """Cancel a pending :meth:`cut_after`."""
        with self._lock:
            self._budget = None

    def set_delay(self, seconds: float) -> None:
        """Delay every forwarded chunk by *seconds* (0 to stop)."""
        self._delay = seconds

    def blackhole(self, on: bool = True) -> None:
        """Silently drop all data while keeping connections open."""
        self._blackhole = on

    def refuse(self, on: bool = True) -> None:
        """Close new connections right after accepting them."""
        self._refuse = on

    # -- internals ----------------------------------------------------------------------
    def _fire(self) -> None:
        with self._lock:
            self._budget = None
        self.cut_event.set()
        self.cut_all(rst=True)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self._refuse:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, server)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, server, client, "down"), daemon=True).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket, direction: Direction) -> None:
        while not pair.closed:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if self._blackhole:
                continue
            if self._delay:
                time.sleep(self._delay)
            fire = False
            with self._lock:
                if self._budget is not None and self._budget_dir in (direction, "both"):
                    allowed = min(len(data), self._budget)
                    data = data[:allowed]
                    self._budget -= allowed
                    fire = self._budget == 0
            try:
                if data:
                    dst.sendall(data)
            except OSError:
                break
            if direction == "up":
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            if fire:
                self._fire()
                return
        pair.close(rst=True)
