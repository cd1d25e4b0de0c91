"""The small HTTP endpoint every long-running distill process exposes.

``GET /metrics`` serves one injected registry in the Prometheus text format (or OpenMetrics
when the scraper asks for it); ``GET /healthz`` answers 200 or 503 with the JSON that the
``health`` callable returns, so a load balancer, systemd or Kubernetes can ask the same
question an operator would. Optional ``post_routes`` let a service take, for example, an
Alertmanager webhook on the same port.

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

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

HealthFn = Callable[[], tuple[bool, Mapping[str, Any]]]
PostHandler = Callable[[bytes], tuple[int, Mapping[str, Any]]]
"""Takes the request body, returns (HTTP status, JSON-able reply)."""

DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 1 << 20


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


def start_http_server(address: str, registry: CollectorRegistry, health: HealthFn,
                      post_routes: Mapping[str, PostHandler] | None = None) -> HttpServerHandle:
    """Serve /metrics and /healthz on ``address`` from a daemon thread; returns at once."""
    host, port = parse_address(address)
    handler = _make_handler(registry, health, dict(post_routes or {}))
    server_cls = _V6Server if ":" in host else ThreadingHTTPServer
    server = server_cls((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"distill-http-{port}",
                              daemon=True)
    thread.start()
    return HttpServerHandle(server, thread)


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _make_handler(registry: CollectorRegistry, health: HealthFn,
                  post_routes: dict[str, PostHandler]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "distill"

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
            route = post_routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._json(404, {"error": "no such path"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._json(413, {"error": "body too large"})
                return
            try:
                status, body = route(self.rfile.read(length))
            except Exception as exc:  # a bad webhook must not kill the server thread
                log.exception("POST %s failed", self.path)
                status, body = 500, {"error": type(exc).__name__}
            self._json(status, body)

        def _metrics(self) -> None:
            encoder, content_type = choose_encoder(self.headers.get("Accept"))
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

        def _json(self, status: int, body: Mapping[str, Any]) -> None:
            self._reply(status, json.dumps(body, default=str).encode(), "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

    return Handler
