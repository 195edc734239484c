"""A tiny raw-socket Kafka wire helper for what no ordinary client can do:
send malformed frames, probe an unknown ApiVersions version, hold idle
connections, count accepted connections.

Layouts: https://kafka.apache.org/protocol (all integers big-endian; a frame
is an int32 size followed by that many bytes; request header v1 is
api_key int16, api_version int16, correlation_id int32, client_id string;
header v2 adds an empty tagged-field section).
"""

from __future__ import annotations

import socket
import struct
import time

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18

ERR_NONE = 0
ERR_UNSUPPORTED_VERSION = 35


def string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_string(s: str) -> bytes:
    raw = s.encode()
    return uvarint(len(raw) + 1) + raw


def request_header(api_key: int, api_version: int, correlation_id: int, client_id: str = "felice-it",
                   flexible: bool = False) -> bytes:
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + string(client_id)
    if flexible:
        header += uvarint(0)
    return header


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def array(self, read_item):
        n = self.int32()
        return [read_item() for _ in range(max(n, 0))]


class Connection:
    """One blocking TCP connection."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.correlation = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return bytes(buf)

    def read_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self.recv_exact(4))
        return self.recv_exact(size)

    def request(self, api_key: int, api_version: int, body: bytes, flexible: bool = False) -> Reader:
        """Send one request; return a Reader after the (v0) response header."""
        self.correlation += 1
        cid = self.correlation
        self.send(frame(request_header(api_key, api_version, cid, flexible=flexible) + body))
        r = Reader(self.read_frame())
        got = r.int32()
        assert got == cid, f"correlation id mismatch: sent {cid}, got {got}"
        return r

    # -- ApiVersions ----------------------------------------------------
    def api_versions(self) -> tuple[int, dict[int, tuple[int, int]]]:
        """ApiVersions v0: (error_code, {api_key: (min, max)})."""
        return _read_api_versions_v0(self.request(API_API_VERSIONS, 0, b""))

    def api_versions_probe(self, version: int) -> tuple[int, dict[int, tuple[int, int]]]:
        """ApiVersions at a version the broker does not know, sent as a modern
        client would (flexible header v2, compact strings). Kafka answers in
        the v0 layout with UNSUPPORTED_VERSION and its own ApiVersions range."""
        body = compact_string("felice-it") + compact_string("1.0") + uvarint(0)
        return _read_api_versions_v0(self.request(API_API_VERSIONS, version, body, flexible=True))

    # -- observing the broker's reaction ----------------------------------
    def reaction(self, timeout: float) -> str:
        """What the broker does next on this connection within timeout:
        'closed' (EOF or reset), 'data' (it sent bytes) or 'nothing'."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "nothing"
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return "nothing"
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                return "closed"
            return "data" if chunk else "closed"

    def wait_closed(self, timeout: float) -> bool:
        """True once the broker closed (or reset) the connection, reading and
        discarding anything it sends first; False after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                return True
            if not chunk:
                return True


def _read_api_versions_v0(r: Reader) -> tuple[int, dict[int, tuple[int, int]]]:
    error = r.int16()
    ranges = r.array(lambda: (r.int16(), r.int16(), r.int16()))
    return error, {k: (lo, hi) for k, lo, hi in ranges}


def answers_api_versions(host: str, port: int, timeout: float = 5.0) -> bool:
    """A fresh connection gets an ApiVersions v0 answer without error."""
    try:
        with Connection(host, port, timeout=timeout) as conn:
            error, ranges = conn.api_versions()
            return error == ERR_NONE and API_API_VERSIONS in ranges
    except (OSError, ConnectionError, struct.error):
        return False
