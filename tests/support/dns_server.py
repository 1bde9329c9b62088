"""A real DNS server on 127.0.0.1 for tests: UDP and TCP on one ephemeral port, built with dnslib.

Usage::

    with DnsServer() as dns:
        dns.add("example.org", "MX", "10 aspmx.l.google.com.")
        dns.add("_submission._tcp.example.org", "SRV", "0 1 587 mail.example.org.")
        dns.behave("slow.example.org", Behaviour.SILENT)
        await discover("jobs@example.org", nameserver=dns.address, autoconfig=False)

or the ``dns_server`` pytest fixture, which yields a started server. Names without records answer
NXDOMAIN (``default``); names with records of another type answer NOERROR with no answer. A
behaviour set with :meth:`DnsServer.behave` overrides the records of a name (one type or all).
Answers too large for UDP (512 bytes, or the client's EDNS size) are sent truncated, so the client
retries over TCP. Every query is logged in :attr:`DnsServer.queries`.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from enum import Enum
from types import TracebackType

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

__all__ = ["Behaviour", "DnsServer", "dns_server"]

_TCP_READ_TIMEOUT = 2.0


class Behaviour(Enum):
    """How the server treats a question."""

    ANSWER = "answer"  # the records added for the name (NXDOMAIN when the name has none at all)
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    SILENT = "silent"  # no reply at all: the client times out


class DnsServer:
    """A threaded DNS server on 127.0.0.1 with records and behaviours set by the test."""

    def __init__(self, default: Behaviour = Behaviour.ANSWER) -> None:
        self.default = default
        self.queries: list[tuple[str, str]] = []
        self._records: dict[str, list[RR]] = {}
        self._behaviours: dict[tuple[str, str | None], Behaviour] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._udp, self._tcp = _bind_pair()
        self.port: int = self._udp.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._started = False

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the form ``discover(nameserver=...)`` takes."""
        return f"{self.host}:{self.port}"

    def add(self, name: str, rtype: str, value: str, ttl: int = 60) -> None:
        """Add a record in zone-file form: ``add("example.org", "MX", "10 mx.example.org.")``."""
        records = RR.fromZone(f"{_key(name)} {ttl} IN {rtype.upper()} {value}")
        with self._lock:
            self._records.setdefault(_key(name), []).extend(records)

    def behave(self, name: str, behaviour: Behaviour, rtype: str | None = None) -> None:
        """Answer questions for ``name`` (of type ``rtype``, or any type) with ``behaviour``."""
        with self._lock:
            self._behaviours[(_key(name), rtype.upper() if rtype else None)] = behaviour

    def queried(self, name: str, rtype: str | None = None) -> int:
        """How many questions for ``name`` (and ``rtype``) arrived."""
        key = _key(name)
        with self._lock:
            return sum(1 for n, t in self.queries if n == key and rtype in (None, t))

    def start(self) -> DnsServer:
        self._started = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(timeout=5)
        self._udp.close()
        self._tcp.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving -------------------------------------------------------------------------------

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ, "udp")
            selector.register(self._tcp, selectors.EVENT_READ, "tcp")
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.05):
                    try:
                        if key.data == "udp":
                            self._serve_udp()
                        else:
                            self._serve_tcp()
                    except OSError:
                        continue  # a client went away; keep serving the others

    def _serve_udp(self) -> None:
        data, peer = self._udp.recvfrom(65535)
        reply = self._reply(data, udp=True)
        if reply is not None:
            self._udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        connection, _ = self._tcp.accept()
        with connection:
            connection.settimeout(_TCP_READ_TIMEOUT)
            length = int.from_bytes(_read_exactly(connection, 2), "big")
            reply = self._reply(_read_exactly(connection, length), udp=False)
            if reply is not None:
                connection.sendall(len(reply).to_bytes(2, "big") + reply)

    def _reply(self, data: bytes, *, udp: bool) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # a malformed packet: no reply, as a real server would drop it
            return None
        name = _key(str(request.q.qname))
        rtype = QTYPE.get(request.q.qtype, str(request.q.qtype))
        with self._lock:
            self.queries.append((name, rtype))
            behaviour = self._behaviours.get((name, rtype)) or self._behaviours.get((name, None))
            records = list(self._records.get(name, []))
        behaviour = behaviour or self.default
        if behaviour is Behaviour.SILENT:
            return None
        reply = request.reply()
        if behaviour is Behaviour.ANSWER:
            if not records:
                reply.header.rcode = RCODE.NXDOMAIN
            for record in records:
                if record.rtype == request.q.qtype:
                    reply.add_answer(record)
        else:
            reply.header.rcode = getattr(RCODE, behaviour.name)
        packed: bytes = reply.pack()
        if udp and len(packed) > _udp_limit(request):
            truncated = request.reply()
            truncated.header.tc = 1
            packed = truncated.pack()
        return packed


def _key(name: str) -> str:
    return name.lower().rstrip(".") + "."


def _udp_limit(request: DNSRecord) -> int:
    for record in request.ar:
        if record.rtype == QTYPE.OPT:
            return max(512, int(record.rclass))
    return 512


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same free port of 127.0.0.1."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise RuntimeError("no free port for both UDP and TCP on 127.0.0.1")


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A started DNS server on 127.0.0.1, empty: add records and behaviours in the test."""
    with DnsServer() as server:
        yield server
