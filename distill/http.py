"""The small HTTP endpoint every long-running distill process exposes.

``GET /metrics`` serves one injected registry in the Prometheus text format (or OpenMetrics
when the scraper asks for it); ``GET /healthz`` answers 200 or 503 with the JSON that the
``health`` callable returns, so a load balancer, systemd or Kubernetes can ask the same
question an operator would. Optional ``post_routes`` let a service take work on the same port
(an Alertmanager webhook on ``/-/retrain``, events on ``/v1/events``).

POST routes trigger work, so they take a bearer token (``Authorization: Bearer ...``); one is
required whenever the server listens beyond loopback (:class:`TokenRequired` at start). Every
request must arrive whole within ``timeout_s`` (headers and body; a reaper thread closes
connections that trickle), bodies need a numeric ``Content-Length`` no larger than
``max_body_bytes`` (411/400/413 otherwise, read nothing), and at most ``max_connections`` are
served at once (503 beyond), so half-sent requests cannot pile up threads. The standard
library server is kept, hardened, rather than adding a server dependency: the endpoints are
few and small.

>>> from prometheus_client import CollectorRegistry, Counter
>>> reg = CollectorRegistry()
>>> Counter("demo_events", "Events.", registry=reg).inc()
>>> srv = start_http_server("127.0.0.1:0", reg, lambda: (True, {"broker": "up"}))
>>> from urllib.request import urlopen
>>> b"demo_events_total 1.0" in urlopen(f"http://127.0.0.1:{srv.port}/metrics").read()
True
>>> urlopen(f"http://127.0.0.1:{srv.port}/healthz").read()
b'{"broker": "up", "healthy": true}'
>>> srv.shutdown()
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

HealthFn = Callable[[], tuple[bool, Mapping[str, Any]]]
PostHandler = Callable[[bytes], tuple[int, Mapping[str, Any]]]
"""Takes the request body, returns (HTTP status, JSON-able reply)."""

DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 8 << 20
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: 30\r\nConnection: close\r\n\r\n"
         b'{"error": "too many requests"}')


class TokenRequired(ValueError):
    """POST routes would listen beyond loopback without a bearer token."""


@dataclass(frozen=True)
class HttpLimits:
    """How much one client may ask of the server."""

    max_body_bytes: int = MAX_BODY_BYTES
    timeout_s: float = 10.0
    max_connections: int = 64


def parse_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (loopback). Raises ValueError in words.

    >>> parse_address("0.0.0.0:9108"), parse_address(":0"), parse_address("[::1]:9109")
    (('0.0.0.0', 9108), ('127.0.0.1', 0), ('::1', 9109))
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics address {address!r} is not host:port (port 0..65535)")
    host = host.strip("[]") or DEFAULT_HOST
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a wildcard or other address is not.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The bearer token from its value or its file (first line); None when neither is set."""
    if token:
        return token
    if token_file is None:
        return None
    try:
        lines = token_file.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"http.token_file {token_file}: cannot read it ({exc.strerror})"
                         ) from exc
    if not lines or not lines[0].strip():
        raise ValueError(f"http.token_file {token_file}: empty")
    return lines[0].strip()


def http_options(http_cfg: Any) -> dict[str, Any]:
    """``token`` and ``limits`` keyword arguments from the config's ``[http]`` section."""
    secret = http_cfg.token.get_secret_value() if http_cfg.token is not None else None
    return {"token": read_token(secret, http_cfg.token_file),
            "limits": HttpLimits(http_cfg.max_body_bytes, http_cfg.timeout_s,
                                 http_cfg.max_connections)}


@dataclass
class HttpServerHandle:
    """A running server: ``port`` is the bound port (useful with port 0)."""

    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def shutdown(self) -> None:
        """Stop serving, close the socket and join the thread. Idempotent."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()
        reaper = getattr(self.server, "reaper", None)
        if reaper is not None:
            reaper.stop()


def require_token(address: str, post_routes: Mapping[str, Any], token: str | None) -> None:
    """Raise TokenRequired when POST routes would listen beyond loopback without a token."""
    if post_routes and not token and not is_loopback(parse_address(address)[0]):
        raise TokenRequired(
            f"{address} listens beyond loopback and serves POST "
            f"{', '.join(sorted(post_routes))}: set a bearer token (http.token, "
            "http.token_file or DISTILL_HTTP__TOKEN) or bind to 127.0.0.1")


def start_http_server(address: str, registry: CollectorRegistry, health: HealthFn,
                      post_routes: Mapping[str, PostHandler] | None = None,
                      token: str | None = None,
                      limits: HttpLimits | None = None) -> HttpServerHandle:
    """Serve /metrics and /healthz (and ``post_routes``, behind ``token``) on ``address``
    from a daemon thread; returns at once. Raises TokenRequired before binding when POST
    routes would listen beyond loopback without a token."""
    host, port = parse_address(address)
    routes = dict(post_routes or {})
    require_token(address, routes, token)
    limits = limits or HttpLimits()
    handler = _make_handler(registry, health, routes, token, limits)
    server_cls = _V6Server if ":" in host else _Server
    server = server_cls((host, port), handler, limits)
    thread = threading.Thread(target=server.serve_forever, name=f"distill-http-{port}",
                              daemon=True)
    thread.start()
    return HttpServerHandle(server, thread)


class _Reaper:
    """One thread that cuts the reading side of connections past their deadline, so a
    client that sends its headers or body slowly holds a worker thread ``timeout_s`` at most."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._deadlines: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distill-http-reaper",
                                        daemon=True)
        self._thread.start()

    def watch(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines[conn] = time.monotonic() + self.timeout_s

    def done(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        tick = min(0.5, self.timeout_s / 4)
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                late = [c for c, t in self._deadlines.items() if t <= now]
                for conn in late:
                    del self._deadlines[conn]
            for conn in late:
                with contextlib.suppress(OSError):  # a blocked read returns; a reply can go out
                    conn.shutdown(socket.SHUT_RD)


class _Server(ThreadingHTTPServer):
    """A threading server with a cap on connections served at once and a request deadline."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 limits: HttpLimits) -> None:
        self.limits = limits
        self.reaper = _Reaper(limits.timeout_s)
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(0.5)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _V6Server(_Server):
    address_family = socket.AF_INET6


def _body_length(headers: Any, limit: int) -> tuple[int, str] | int:
    """The request's Content-Length, or (HTTP status, reason) when it cannot be accepted."""
    if headers.get("Transfer-Encoding"):
        return 411, "Transfer-Encoding is not supported: send a Content-Length"
    values = headers.get_all("Content-Length") or []
    if not values:
        return 411, "Content-Length required"
    if len(set(values)) > 1 or not values[0].strip().isdigit():
        return 400, "Content-Length must be one non-negative integer"
    length = int(values[0])
    if length > limit:
        return 413, f"body larger than {limit} bytes"
    return length


def _make_handler(registry: CollectorRegistry, health: HealthFn,
                  post_routes: dict[str, PostHandler], token: str | None,
                  limits: HttpLimits) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {token}".encode() if token else None

    class Handler(BaseHTTPRequestHandler):
        server_version = "distill"
        timeout = limits.timeout_s  # each read; the reaper bounds the whole request

        def setup(self) -> None:
            super().setup()
            self.server.reaper.watch(self.connection)  # type: ignore[attr-defined]

        def finish(self) -> None:
            self.server.reaper.done(self.connection)  # type: ignore[attr-defined]
            super().finish()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._metrics()
            elif path == "/healthz":
                self._health()
            elif path == "/":
                self._reply(200, b'<a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a>',
                            "text/html")
            else:
                self._json(404, {"error": f"no such path: {path}"})

        def do_POST(self) -> None:
            self.close_connection = True
            route = post_routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._json(404, {"error": "no such path"})
                return
            if expected is not None and not hmac.compare_digest(
                    self.headers.get("Authorization", "").encode(), expected):
                self._json(401, {"error": "missing or wrong bearer token"},
                           [("WWW-Authenticate", "Bearer")])
                return
            length = _body_length(self.headers, limits.max_body_bytes)
            if isinstance(length, tuple):
                self._json(length[0], {"error": length[1]})
                return
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                body = b""
            if len(body) < length:
                self._json(408, {"error": f"body incomplete after {limits.timeout_s:g} s"})
                return
            self.server.reaper.done(self.connection)  # type: ignore[attr-defined]
            try:
                status, reply = route(body)
            except Exception as exc:  # a bad webhook must not kill the server thread
                log.exception("POST %s failed", self.path)
                status, reply = 500, {"error": type(exc).__name__}
            self._json(status, reply)

        def _metrics(self) -> None:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(registry)
            except Exception:
                log.exception("collecting metrics failed")
                self._json(500, {"error": "collect failed"})
                return
            self._reply(200, body, content_type)

        def _health(self) -> None:
            try:
                healthy, detail = health()
                body = {**detail, "healthy": bool(healthy)}
            except Exception as exc:
                healthy, body = False, {"healthy": False, "error": f"{type(exc).__name__}: {exc}"}
            self._json(200 if healthy else 503, body)

        def _json(self, status: int, body: Mapping[str, Any],
                  extra: list[tuple[str, str]] | None = None) -> None:
            self._reply(status, json.dumps(body, default=str).encode(), "application/json",
                        extra)

        def _reply(self, status: int, body: bytes, content_type: str,
                   extra: list[tuple[str, str]] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra or ():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client went away; nothing to tell it
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

    return Handler
