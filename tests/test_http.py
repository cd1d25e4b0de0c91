"""The HTTP endpoint cannot be abused: token beyond loopback, bad headers, slow and many clients."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from distill.config import Config, load_config
from distill.http import (
    HttpLimits,
    HttpServerHandle,
    TokenRequired,
    http_options,
    start_http_server,
)


def _serve(token: str | None = None, limits: HttpLimits | None = None,
           address: str = "127.0.0.1:0") -> tuple[HttpServerHandle, list[bytes]]:
    received: list[bytes] = []

    def work(body: bytes) -> tuple[int, dict]:
        received.append(body)
        return 202, {"queued": True}

    srv = start_http_server(address, CollectorRegistry(), lambda: (True, {}),
                            {"/-/retrain": work}, token=token, limits=limits)
    return srv, received


@pytest.fixture()
def server() -> Iterator[tuple[HttpServerHandle, list[bytes]]]:
    srv, received = _serve(token="s3cret", limits=HttpLimits(max_body_bytes=1000,
                                                             timeout_s=1.0, max_connections=8))
    yield srv, received
    srv.shutdown()


def raw(port: int, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, dict]:
    """Send bytes as they are (headers a client library would refuse) and read the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    payload = reply.split(b"\r\n\r\n", 1)[1]
    return status, json.loads(payload) if payload else {}


def post(port: int, body: bytes = b"{}", token: str | None = "s3cret",
         length: str | None = None) -> tuple[int, dict]:
    head = "POST /-/retrain HTTP/1.1\nHost: x\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\n"
    head += f"Content-Length: {len(body) if length is None else length}\n"
    return raw(port, head, body)


def test_post_routes_beyond_loopback_need_a_token() -> None:
    with pytest.raises(TokenRequired, match="bearer token"):
        _serve(address="0.0.0.0:0")
    srv, _ = _serve(token="t", address="0.0.0.0:0")  # with one it starts
    srv.shutdown()
    srv = start_http_server("0.0.0.0:0", CollectorRegistry(), lambda: (True, {}))
    srv.shutdown()  # no POST routes: nothing to protect, metrics may be scraped from anywhere


def test_token_is_checked_before_the_body_is_read(server) -> None:
    srv, received = server
    assert post(srv.port, token=None)[0] == 401
    assert post(srv.port, token="wrong")[0] == 401
    assert post(srv.port, b'{"a": 1}') == (202, {"queued": True})
    assert received == [b'{"a": 1}']


def test_loopback_without_a_token_takes_posts() -> None:
    srv, received = _serve()
    try:
        assert post(srv.port, b"{}", token=None)[0] == 202 and received == [b"{}"]
    finally:
        srv.shutdown()


@pytest.mark.parametrize(("length", "status"), [
    ("abc", 400), ("-5", 400), ("1e3", 400), ("5000", 413), (None, 411)])
def test_bad_content_length_is_a_clean_4xx(server, length: str | None, status: int) -> None:
    srv, received = server
    head = "POST /-/retrain HTTP/1.1\nAuthorization: Bearer s3cret\n"
    if length is not None:
        head += f"Content-Length: {length}\n"
    code, reply = raw(srv.port, head, b"{}")
    assert code == status and reply["error"]
    assert received == []


def test_half_sent_bodies_hold_no_thread_past_the_deadline(server) -> None:
    srv, received = server
    slow = []
    for _ in range(40):  # more than max_connections: the extra ones get 503 at once
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /-/retrain HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n"
                  b"Content-Length: 900\r\n\r\n{\"partial\":")
        slow.append(s)
    started = time.monotonic()
    deadline = started + 10
    while time.monotonic() < deadline:  # the server frees its slots after timeout_s
        if post(srv.port)[0] == 202:
            break
        time.sleep(0.2)
    assert time.monotonic() - started < 8  # 1 s request deadline + reaper tick, not forever
    codes = []
    for s in slow:
        s.settimeout(5)
        codes.append(int(s.recv(100).split(b" ", 2)[1]))
        s.close()
    assert set(codes) <= {408, 503} and 408 in codes and 503 in codes
    assert received == [b"{}"]


def test_a_trickling_client_is_cut_at_the_request_deadline(server) -> None:
    """A byte every 0.3 s never trips a per-read timeout (1 s); only the whole-request
    deadline lets the server go."""
    srv, _ = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        s.settimeout(0.3)
        started = time.monotonic()
        while time.monotonic() - started < 10:
            try:
                s.recv(100)  # a reply or EOF: the server stopped reading from us
                break
            except TimeoutError:
                try:
                    s.sendall(b"x")
                except OSError:
                    break
        assert time.monotonic() - started < 5


def test_gateway_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    from click.testing import CliRunner

    from distill.cli import main

    env = {"DISTILL_HTTP__TOKEN": None, "DISTILL_HTTP__TOKEN_FILE": None}
    result = CliRunner().invoke(main, ["gateway", "--bootstrap-servers", "127.0.0.1:1",
                                       "--address", "0.0.0.0:9110"], env=env)
    assert result.exit_code == 1 and "bearer token" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_token_from_a_file_and_the_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    cfg = load_config(None, env={"DISTILL_HTTP__TOKEN_FILE": str(tmp_path / "token")})
    assert isinstance(cfg, Config)
    options = http_options(cfg.http)
    assert options["token"] == "from-file" and options["limits"].timeout_s == 10.0
    cfg = load_config(None, env={"DISTILL_HTTP__TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="token_file"):
        http_options(cfg.http)
