"""A tiny raw-socket Kafka wire helper for what no ordinary client can do:
send malformed frames, probe an unknown ApiVersions version, hold idle
connections, count accepted connections, send idempotent record batches with
chosen producer ids, epochs and sequences (InitProducerId, Produce,
ListOffsets, DescribeProducers).

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
API_INIT_PRODUCER_ID = 22
API_DESCRIBE_PRODUCERS = 61

ERR_NONE = 0
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_UNSUPPORTED_VERSION = 35
ERR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45
ERR_INVALID_PRODUCER_EPOCH = 47


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


def varint(n: int) -> bytes:
    """Zigzag-encoded signed varint (record fields)."""
    return uvarint((n << 1) ^ (n >> 63))


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
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

    def int64(self) -> int:
        return self._take(">q")

    def array(self, read_item):
        n = self.int32()
        return [read_item() for _ in range(max(n, 0))]

    def string(self) -> str | None:
        n = self.int16()
        if n < 0:
            return None
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode()

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def compact_string(self) -> str | None:
        n = self.uvarint() - 1
        if n < 0:
            return None
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode()

    def compact_array(self, read_item):
        n = self.uvarint() - 1
        return [read_item() for _ in range(max(n, 0))]

    def tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()                      # tag
            self.pos += self.uvarint()          # size, then the field


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

    def request(self, api_key: int, api_version: int, body: bytes, flexible: bool = False,
                response_flexible: bool = False) -> Reader:
        """Send one request (header v2 when flexible, else v1); return a Reader
        after the response header (v1, with tagged fields, when
        response_flexible, else v0). ApiVersions is the one API whose flexible
        requests get a v0 response header."""
        self.correlation += 1
        cid = self.correlation
        self.send(frame(request_header(api_key, api_version, cid, flexible=flexible) + body))
        r = Reader(self.read_frame())
        got = r.int32()
        assert got == cid, f"correlation id mismatch: sent {cid}, got {got}"
        if response_flexible:
            r.tagged_fields()
        return r

    # -- idempotent producing ---------------------------------------------
    def init_producer_id(self, version: int = 0, producer_id: int = -1, producer_epoch: int = -1,
                         timeout_ms: int = 60000) -> tuple[int, int, int]:
        """InitProducerId without a transactional id: (error, producer id, epoch).
        v0-1 are non-flexible; v2+ flexible (header v2, compact strings); v3+
        carry the producer's current id and epoch (KIP-360)."""
        flexible = version >= 2
        if flexible:
            body = compact_string(None) + struct.pack(">i", timeout_ms)
            if version >= 3:
                body += struct.pack(">qh", producer_id, producer_epoch)
            body += uvarint(0)
        else:
            body = string(None) + struct.pack(">i", timeout_ms)
        r = self.request(API_INIT_PRODUCER_ID, version, body, flexible=flexible, response_flexible=flexible)
        r.int32()                               # throttle_time_ms
        error = r.int16()
        pid = r.int64()
        epoch = r.int16()
        return error, pid, epoch

    def produce(self, topic: str, partition: int, batch: bytes, acks: int = -1, timeout_ms: int = 30000,
                version: int = 8) -> tuple[int, int, str | None]:
        """Produce one batch to one partition (v3-v8, non-flexible):
        (error code, base offset, error message)."""
        assert 3 <= version <= 8
        body = (string(None) + struct.pack(">hi", acks, timeout_ms)
                + struct.pack(">i", 1) + string(topic)
                + struct.pack(">i", 1) + struct.pack(">i", partition)
                + struct.pack(">i", len(batch)) + batch)
        r = self.request(API_PRODUCE, version, body)
        results = {}
        for _ in range(r.int32()):
            name = r.string()
            for _ in range(r.int32()):
                index = r.int32()
                error = r.int16()
                base_offset = r.int64()
                r.int64()                       # log_append_time_ms
                if version >= 5:
                    r.int64()                   # log_start_offset
                message = None
                if version >= 8:
                    r.array(lambda: (r.int32(), r.string()))   # record_errors
                    message = r.string()
                results[(name, index)] = (error, base_offset, message)
        return results[(topic, partition)]

    def latest_offset(self, topic: str, partition: int) -> tuple[int, int]:
        """ListOffsets v1, timestamp -1 (latest): (error, log end offset)."""
        body = (struct.pack(">i", -1) + struct.pack(">i", 1) + string(topic)
                + struct.pack(">i", 1) + struct.pack(">iq", partition, -1))
        r = self.request(API_LIST_OFFSETS, 1, body)
        out = {}
        for _ in range(r.int32()):
            name = r.string()
            for _ in range(r.int32()):
                index = r.int32()
                error = r.int16()
                r.int64()                       # timestamp
                out[(name, index)] = (error, r.int64())
        return out[(topic, partition)]

    def describe_producers(self, topics: dict[str, list[int]]) -> dict[tuple[str, int], dict]:
        """DescribeProducers v0 (flexible): {(topic, partition): {"error": code,
        "message": str|None, "producers": [{producer_id, producer_epoch,
        last_sequence, last_timestamp, coordinator_epoch,
        current_txn_start_offset}]}}."""
        body = uvarint(len(topics) + 1)
        for name, parts in topics.items():
            body += compact_string(name) + uvarint(len(parts) + 1)
            body += b"".join(struct.pack(">i", p) for p in parts) + uvarint(0)
        body += uvarint(0)
        r = self.request(API_DESCRIBE_PRODUCERS, 0, body, flexible=True, response_flexible=True)
        r.int32()                               # throttle_time_ms
        out = {}

        def producer():
            p = {"producer_id": r.int64(), "producer_epoch": r.int32(), "last_sequence": r.int32(),
                 "last_timestamp": r.int64(), "coordinator_epoch": r.int32(),
                 "current_txn_start_offset": r.int64()}
            r.tagged_fields()
            return p

        def partition(name):
            index = r.int32()
            error = r.int16()
            message = r.compact_string()
            producers = r.compact_array(producer)
            r.tagged_fields()
            out[(name, index)] = {"error": error, "message": message, "producers": producers}

        def topic():
            name = r.compact_string()
            r.compact_array(lambda: partition(name))
            r.tagged_fields()

        r.compact_array(topic)
        r.tagged_fields()
        assert r.pos == len(r.data), f"{len(r.data) - r.pos} bytes left over in the DescribeProducers response"
        return out

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


def record_batch(values: list[bytes], producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
                 timestamp_ms: int | None = None) -> bytes:
    """An uncompressed magic-v2 record batch (null keys, no headers) with the
    given producer id, epoch and base sequence; base offset 0 (the broker
    assigns offsets). The same arguments give the same bytes."""
    from crc32c import crc32c

    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    records = b""
    for delta, value in enumerate(values):
        body = (struct.pack(">b", 0)            # attributes
                + varint(0)                     # timestamp delta
                + varint(delta)                 # offset delta
                + varint(-1)                    # key: null
                + varint(len(value)) + value
                + varint(0))                    # no headers
        records += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, ts, ts, producer_id, producer_epoch, base_sequence,
                            len(values)) + records
    # base offset, batch length (from partition leader epoch on), partition leader epoch, magic, crc
    return struct.pack(">qiibI", 0, 4 + 1 + 4 + len(after_crc), -1, 2, crc32c(after_crc)) + after_crc


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
