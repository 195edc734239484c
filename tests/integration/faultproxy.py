"""A TCP proxy between Kafka clients and the broker that loses responses and
cuts connections on purpose, to make clients retry.

It forwards bytes both ways and follows the Kafka framing (int32 size, then
that many bytes) in both directions: from each request it learns the api key
and correlation id (every request header starts with api_key int16,
api_version int16, correlation_id int32; every response header starts with
the correlation id), so it can

  drop_produce_every=N   drop the response to every Nth Produce request
                         (counted over the whole proxy) and then close that
                         connection, both sockets: the broker wrote the batch,
                         the client never hears of it and must retry;
  cut_every=M            close the connection carrying every Mth request
                         (any api, counted over the whole proxy) instead of
                         forwarding that request.

Counting over the whole proxy, not per connection, guarantees progress: a
client that reconnects gets at least N-1 (M-1) requests through before the
next fault. Faults can be switched off (`faults = False`) to pass traffic
through untouched, e.g. to read back what was written.

The broker advertises its own address in Metadata, so a client that is to
stay behind the proxy needs a broker started with
`advertised.listeners=PLAINTEXT://127.0.0.1:<proxy.port>`: bind the proxy
first (the constructor does), start the broker, then `start(broker_port)`.

Threads: one accepting, two per connection (one per direction), all daemons
that poll a stop flag at least every 0.2 s; the proxy closes itself once
`lifetime` seconds have passed, so a forgotten proxy cannot outlive its test
by much. Use it as a context manager.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

API_PRODUCE = 0
POLL = 0.2


class _Pair:
    """One client connection and its broker connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self.drop: set[int] = set()         # correlation ids whose response is to be dropped
        self.api_of: dict[int, int] = {}    # correlation id -> api key, for requests in flight
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def close(self):
        with self.lock:
            if self.closed.is_set():
                return
            self.closed.set()
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class FaultProxy:
    def __init__(self, drop_produce_every: int = 0, cut_every: int = 0, lifetime: float = 300.0,
                 host: str = "127.0.0.1"):
        self.host = host
        self.drop_produce_every = drop_produce_every
        self.cut_every = cut_every
        self.lifetime = lifetime
        self.faults = True
        self.target: tuple[str, int] | None = None
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self._listener.settimeout(POLL)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._threads: list[threading.Thread] = []
        self._deadline = None
        # counters (read them after close(), or accept that they still move)
        self.connections = 0
        self.requests = 0
        self.produce_requests = 0
        self.produce_responses = 0
        self.dropped_responses = 0
        self.cuts = 0
        self.api_counts: dict[int, int] = {}

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    bootstrap = address

    def advertised_listener(self) -> str:
        return f"PLAINTEXT://{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------
    def start(self, target_port: int, target_host: str = "127.0.0.1") -> "FaultProxy":
        self.target = (target_host, target_port)
        self._deadline = time.monotonic() + self.lifetime
        self._spawn(self._accept_loop, "faultproxy-accept")
        return self

    def close(self, timeout: float = 5.0):
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.close()
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def cut_all(self):
        """Close every open connection now."""
        with self._lock:
            pairs = list(self._pairs)
            self.cuts += len([p for p in pairs if not p.closed.is_set()])
        for pair in pairs:
            pair.close()

    def stats(self) -> dict:
        with self._lock:
            return {"connections": self.connections, "requests": self.requests,
                    "produce_requests": self.produce_requests, "produce_responses": self.produce_responses,
                    "dropped_responses": self.dropped_responses, "cuts": self.cuts,
                    "api_counts": dict(self.api_counts)}

    # -- internals -------------------------------------------------------
    def _stopping(self) -> bool:
        return self._stop.is_set() or time.monotonic() >= self._deadline

    def _spawn(self, fn, name, *args):
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _accept_loop(self):
        try:
            while not self._stopping():
                try:
                    client, _ = self._listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()      # broker down: the client sees a refused/closed connection
                    continue
                for s in (client, upstream):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    s.settimeout(POLL)
                pair = _Pair(client, upstream)
                with self._lock:
                    self.connections += 1
                    self._pairs = [p for p in self._pairs if not p.closed.is_set()]
                    self._pairs.append(pair)
                self._spawn(self._pump, "faultproxy-c2b", pair, True)
                self._spawn(self._pump, "faultproxy-b2c", pair, False)
        finally:
            self._stop.set()
            with self._lock:
                pairs = list(self._pairs)
            for pair in pairs:
                pair.close()

    def _pump(self, pair: _Pair, to_broker: bool):
        src, dst = (pair.client, pair.upstream) if to_broker else (pair.upstream, pair.client)
        buf = bytearray()
        try:
            while not self._stopping() and not pair.closed.is_set():
                try:
                    data = src.recv(262144)
                except socket.timeout:
                    continue
                if not data:
                    return
                buf += data
                while len(buf) >= 4:
                    (size,) = struct.unpack_from(">i", buf, 0)
                    if len(buf) < 4 + size:
                        break
                    frame = bytes(buf[:4 + size])
                    del buf[:4 + size]
                    forward = self._on_request(pair, frame) if to_broker else self._on_response(pair, frame)
                    if not forward:
                        return
                    self._send_all(dst, frame, pair)
        except (OSError, struct.error):     # closed, or not Kafka framing: drop the connection
            return
        finally:
            pair.close()

    def _send_all(self, sock: socket.socket, data: bytes, pair: _Pair):
        view = memoryview(data)
        while view:
            if self._stopping() or pair.closed.is_set():
                raise OSError("proxy connection closed")
            try:
                n = sock.send(view)
            except socket.timeout:
                continue
            view = view[n:]

    def _on_request(self, pair: _Pair, frame: bytes) -> bool:
        """Returns whether to forward the request; False closes the connection."""
        api_key, _version, correlation = struct.unpack_from(">hhi", frame, 4)
        with self._lock:
            self.requests += 1
            self.api_counts[api_key] = self.api_counts.get(api_key, 0) + 1
            if self.faults and self.cut_every and self.requests % self.cut_every == 0:
                self.cuts += 1
                return False
            if api_key == API_PRODUCE:
                self.produce_requests += 1
                if self.faults and self.drop_produce_every and self.produce_requests % self.drop_produce_every == 0:
                    pair.drop.add(correlation)
        pair.api_of[correlation] = api_key
        return True

    def _on_response(self, pair: _Pair, frame: bytes) -> bool:
        """Returns whether to forward the response; False closes the connection."""
        (correlation,) = struct.unpack_from(">i", frame, 4)
        api_key = pair.api_of.pop(correlation, None)
        if api_key == API_PRODUCE:
            with self._lock:
                if correlation in pair.drop:
                    self.dropped_responses += 1
                    return False
                self.produce_responses += 1
        return True
