"""`distill gateway`: take teacher events over HTTP (POST /v1/events) into the input topic."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from distill.cli.common import bootstrap_option, client_settings, config_option, load_or_exit


@click.command(name="gateway")
@config_option
@bootstrap_option
@click.option("--address", default=None, metavar="HOST:PORT",
              help="Where POST /v1/events, /metrics and /healthz listen. "
                   "[default: 127.0.0.1:9110]")
@click.option("--input-topic", default=None, help="Teacher-output topic.")
@click.option("--partitions", type=int, default=None,
              help="Partitions when the topic must be created.")
def command(config_path: Path | None, bootstrap_servers: str | None, address: str | None,
            input_topic: str | None, partitions: int | None) -> None:
    """Accept teacher events on POST /v1/events (one JSON event, or a batch as an array) and
    produce them to the input topic with the monitor's checks: 200 once the broker
    acknowledged all of them, 422 naming each rejected event's reason (then nothing is sent).

    Beyond loopback a bearer token is required (http.token, http.token_file or
    DISTILL_HTTP__TOKEN); clients send `Authorization: Bearer <token>`.
    """
    cfg = load_or_exit(config_path, {
        "kafka": {"bootstrap_servers": bootstrap_servers, "input_topic": input_topic,
                  "partitions": partitions},
        "gateway": {"address": address},
    })
    from prometheus_client import CollectorRegistry, Counter

    from distill.gateway import EVENTS_PATH, EventsEndpoint
    from distill.http import TokenRequired, http_options, require_token, start_http_server
    from distill.logs import setup_logging
    from stream.exceptions import StreamError
    from stream.kafka import ensure_topics, open_sink

    setup_logging(cfg.serve.log_format)
    k = cfg.kafka
    try:  # before any Kafka connection: a refused start should be quick
        options = http_options(cfg.http)
        require_token(cfg.gateway.address, {EVENTS_PATH: None}, options["token"])
    except ValueError as exc:  # TokenRequired included
        raise click.ClickException(str(exc)) from exc
    settings = client_settings(cfg, "distill-gateway")
    try:
        ensure_topics(settings, {k.input_topic: k.partitions})
        sink = open_sink(settings, linger_ms=0)
    except StreamError as exc:
        raise click.ClickException(str(exc)) from exc
    endpoint = EventsEndpoint(sink, k.input_topic, cfg.serve.max_message_bytes)
    registry = CollectorRegistry()
    events = Counter("distill_gateway_events", "Events taken over HTTP, by outcome.",
                     ["status"], registry=registry)
    events.labels(status="accepted").inc(0)
    events.labels(status="rejected").inc(0)

    def handle(body: bytes) -> tuple[int, dict[str, Any]]:
        before = endpoint.accepted, endpoint.rejected
        status, reply = endpoint(body)
        events.labels(status="accepted").inc(endpoint.accepted - before[0])
        events.labels(status="rejected").inc(endpoint.rejected - before[1])
        return status, dict(reply)

    try:
        server = start_http_server(cfg.gateway.address, registry,
                                   lambda: (True, {"topic": k.input_topic}),
                                   {EVENTS_PATH: handle}, **options)
    except (TokenRequired, OSError, ValueError) as exc:
        sink.close()
        raise click.ClickException(str(exc)) from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"gateway: POST http://{server.host}:{server.port}{EVENTS_PATH} -> "
               f"{k.input_topic}", err=True)
    while not stop.wait(0.5):  # a timed wait lets the signal handler run
        pass
    server.shutdown()
    sink.close()
    click.echo(f"gateway: {endpoint.accepted} events accepted, {endpoint.rejected} rejected",
               err=True)
    sys.exit(0)
