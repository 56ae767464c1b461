"""The hand-written Kafka ApiVersions/Metadata probe, against bytes built here."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest


def _str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def _api_versions_payload(cid: int, error: int, apis: list[tuple[int, int, int]]) -> bytes:
    body = struct.pack(">ihi", cid, error, len(apis))
    return body + b"".join(struct.pack(">hhh", *api) for api in apis)


def test_api_versions_request_bytes(stack) -> None:
    got = stack.encode_api_versions_request(7, "ballast-stack")
    payload = struct.pack(">hhi", 18, 0, 7) + _str("ballast-stack")
    assert got == struct.pack(">i", len(payload)) + payload


def test_request_with_null_client_id(stack) -> None:
    got = stack.encode_request(18, 0, 3, None)
    assert got == struct.pack(">ihhih", 10, 18, 0, 3, -1)


def test_decode_api_versions(stack) -> None:
    payload = _api_versions_payload(5, 0, [(0, 0, 11), (3, 0, 12), (18, 0, 4)])
    assert stack.decode_api_versions_response(payload, 5) == {
        0: (0, 11),
        3: (0, 12),
        18: (0, 4),
    }


def test_api_versions_error_code(stack) -> None:
    payload = _api_versions_payload(5, 35, [(18, 0, 3)])
    with pytest.raises(stack.ProtocolError, match="error code 35"):
        stack.decode_api_versions_response(payload, 5)


@pytest.mark.parametrize(
    ("mangle", "needle"),
    [
        (lambda p: p[:-1], "truncated"),
        (lambda p: p + b"\x00", "trailing"),
        (lambda p: struct.pack(">i", 6) + p[4:], "correlation id 6"),
        (lambda p: p[:6] + struct.pack(">i", -1), "null api list"),
        (lambda p: p[:6] + struct.pack(">i", -5), "invalid array length"),
    ],
)
def test_malformed_api_versions(stack, mangle: Callable[[bytes], bytes], needle: str) -> None:
    good = _api_versions_payload(5, 0, [(18, 0, 3)])
    with pytest.raises(stack.ProtocolError, match=needle):
        stack.decode_api_versions_response(mangle(good), 5)


def test_api_versions_min_above_max(stack) -> None:
    with pytest.raises(stack.ProtocolError, match="min version 4 above max 2"):
        stack.decode_api_versions_response(_api_versions_payload(1, 0, [(3, 4, 2)]), 1)


def test_pick_metadata_version(stack) -> None:
    assert stack.pick_metadata_version({3: (0, 12)}) == 4
    assert stack.pick_metadata_version({3: (0, 2)}) == 1
    assert stack.pick_metadata_version({3: (0, 0)}) == 0
    with pytest.raises(stack.ProtocolError, match="Metadata"):
        stack.pick_metadata_version({3: (5, 12)})
    with pytest.raises(stack.ProtocolError):
        stack.pick_metadata_version({18: (0, 3)})


@pytest.mark.parametrize(
    ("version", "body"),
    [
        (0, struct.pack(">i", 0)),
        (1, struct.pack(">i", 0)),
        (4, struct.pack(">i?", 0, False)),
    ],
)
def test_metadata_request_bytes(stack, version: int, body: bytes) -> None:
    payload = struct.pack(">hhi", 3, version, 9) + _str("ballast-stack") + body
    assert stack.encode_metadata_request(version, 9) == struct.pack(">i", len(payload)) + payload


def _metadata_payload(cid: int, version: int, brokers: list[tuple[int, str, int]]) -> bytes:
    out = struct.pack(">i", cid)
    if version >= 3:
        out += struct.pack(">i", 0)  # throttle
    out += struct.pack(">i", len(brokers))
    for node, host, port in brokers:
        out += struct.pack(">i", node) + _str(host) + struct.pack(">i", port)
        if version >= 1:
            out += struct.pack(">h", -1)  # rack null
    # the rest (cluster id, controller, topics) is not read by the probe
    return out + struct.pack(">ii", 1, 0)


@pytest.mark.parametrize("version", [0, 1, 4])
def test_decode_metadata_brokers(stack, version: int) -> None:
    payload = _metadata_payload(2, version, [(1, "127.0.0.1", 19092), (2, "h2", 9)])
    assert stack.decode_metadata_brokers(payload, version, 2) == [
        (1, "127.0.0.1", 19092),
        (2, "h2", 9),
    ]


def test_decode_metadata_truncated(stack) -> None:
    payload = _metadata_payload(2, 1, [(1, "127.0.0.1", 19092)])
    with pytest.raises(stack.ProtocolError):
        stack.decode_metadata_brokers(payload[:12], 1, 2)


class FakeBroker:
    """Answers ApiVersions v0 and Metadata v4 on a loopback port with canned frames."""

    def __init__(self, brokers: list[tuple[int, str, int]], api_error: int = 0) -> None:
        self.brokers = brokers
        self.api_error = api_error
        self.requests: list[tuple[int, int, int]] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _recv(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError
            data += chunk
        return data

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            try:
                while True:
                    (size,) = struct.unpack(">i", self._recv(conn, 4))
                    frame = self._recv(conn, size)
                    key, version, cid = struct.unpack_from(">hhi", frame)
                    self.requests.append((key, version, cid))
                    if key == 18:
                        reply = _api_versions_payload(cid, self.api_error, [(3, 0, 12), (18, 0, 3)])
                    else:
                        reply = _metadata_payload(cid, version, self.brokers)
                    conn.sendall(struct.pack(">i", len(reply)) + reply)
            except (ConnectionError, OSError):
                return

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake_broker() -> Iterator[Callable[..., FakeBroker]]:
    made: list[FakeBroker] = []

    def make(*args: object, **kwargs: object) -> FakeBroker:
        broker = FakeBroker(*args, **kwargs)  # type: ignore[arg-type]
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def test_probe_against_fake_broker(stack, fake_broker) -> None:
    broker = fake_broker([(1, "127.0.0.1", 19092)])
    assert stack.kafka_probe("127.0.0.1", broker.port, timeout=5) == [(1, "127.0.0.1", 19092)]
    assert broker.requests == [(18, 0, 1), (3, 4, 2)]


def test_ready_needs_a_registered_broker(stack, fake_broker, tmp_path) -> None:
    broker = fake_broker([])
    cfg = stack.load_config(
        {"BALLAST_STATE_DIR": str(tmp_path), "BALLAST_KAFKA_PORT": str(broker.port)}
    )
    assert stack.kafka_ready(cfg, timeout=5) == (False, "no broker registered yet")


def test_ready_reports_error_code(stack, fake_broker, tmp_path) -> None:
    broker = fake_broker([(1, "h", 1)], api_error=35)
    cfg = stack.load_config(
        {"BALLAST_STATE_DIR": str(tmp_path), "BALLAST_KAFKA_PORT": str(broker.port)}
    )
    ready, why = stack.kafka_ready(cfg, timeout=5)
    assert not ready
    assert "error code 35" in why


def test_ready_false_when_nothing_listens(stack, tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = stack.load_config({"BALLAST_STATE_DIR": str(tmp_path), "BALLAST_KAFKA_PORT": str(port)})
    ready, _ = stack.kafka_ready(cfg, timeout=1)
    assert not ready
