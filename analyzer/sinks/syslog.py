"""syslog destination: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587 octet
counting) or TLS (RFC 5425).

Each audit record becomes one message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [audit@32473 id=".." seq=".." ...] MSG

``PRI`` is facility * 8 + severity (facility 13, "log audit", by default; severity from
``log.level``); ``TIMESTAMP`` the event's ``@timestamp``; ``HOSTNAME``, ``APP-NAME`` and
``PROCID`` from ``host.name``, ``service.name`` and ``process.pid``; ``MSGID`` the
``event.action``. The key fields travel as structured data under an SD-ID of the form
``name@<private enterprise number>`` (``audit@32473`` by default: 32473 is the number
RFC 5612 reserves for documentation; use your organisation's own), so a SIEM can index them
without parsing the body. ``MSG`` is the whole JSON record (or only its ``message``).

At-least-once ends at the socket: TCP and TLS report a broken connection on the next write,
when the kernel may already have discarded what the previous writes buffered; UDP reports
nothing. Prefer TLS (or TCP) for audit data, and Elasticsearch or CloudWatch where delivery
must be confirmed.

>>> from analyzer.sinks.shipper import Record
>>> doc = {"@timestamp": "2024-05-01T10:00:00.000001Z", "message": "hi",
...        "event": {"id": "e1", "action": "login", "sequence": 3},
...        "log": {"level": "warning"}, "host": {"name": "web-1"},
...        "user": {"name": 'a"b]'}}
>>> print(format_message(Record(b"{}", doc, 0), body="message").decode())
... # doctest: +NORMALIZE_WHITESPACE
<108>1 2024-05-01T10:00:00.000001Z web-1 audit-analyzer - login
[audit@32473 id="e1" seq="3" action="login" user="a\\"b\\]"] hi
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

from analyzer.errors import ConfigError
from analyzer.sinks._http import tls_context
from analyzer.sinks.shipper import DeliveryError, Record, SendResult

__all__ = ["SyslogSink", "format_message", "sd_escape"]

_log = logging.getLogger(__name__)

_SEVERITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
#: structured-data parameter -> path in the record, in the order they are written
SD_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("id", ("event", "id")),
    ("seq", ("event", "sequence")),
    ("action", ("event", "action")),
    ("kind", ("event", "kind")),
    ("outcome", ("event", "outcome")),
    ("user", ("user", "name")),
    ("src", ("source", "ip")),
    ("resource", ("resource", "name")),
    ("risk", ("event", "risk_score")),
    ("hash", ("event", "hash")),
)
_MAX_UDP = 65_000


def sd_escape(value: str) -> str:
    """Escape a structured-data parameter value (RFC 5424 6.3.3: ``"``, ``\\`` and ``]``)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(value: object, limit: int, default: str = "-") -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters."""
    if value is None or value == "":
        return default
    text = "".join(c if 33 <= ord(c) <= 126 else "_" for c in str(value))[:limit]
    return text or default


def _get(doc: dict, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)  # type: ignore[assignment]
    return doc


def format_message(record: Record, *, facility: int = 13, sd_id: str = "audit@32473",
                   app_name: str = "audit-analyzer", body: str = "json") -> bytes:
    """One RFC 5424 message (without transport framing) for an audit record."""
    doc = record.doc
    level = _get(doc, ("log", "level"))
    severity = _SEVERITY.get(level if isinstance(level, str) else "", 5)
    timestamp = doc.get("@timestamp")
    ts = timestamp if isinstance(timestamp, str) and "T" in timestamp else "-"
    params = []
    for name, path in SD_FIELDS:
        value = _get(doc, path)
        if value is not None and value != "":
            params.append(f'{name}="{sd_escape(str(value))}"')
    sd = f"[{sd_id} {' '.join(params)}]" if params else "-"
    header = " ".join((
        f"<{facility * 8 + severity}>1", ts,
        _header_field(_get(doc, ("host", "name")), 255),
        _header_field(_get(doc, ("service", "name")), 48, app_name),
        _header_field(_get(doc, ("process", "pid")), 128),
        _header_field(_get(doc, ("event", "action")), 32),
        sd,
    ))
    if body == "json":
        msg = record.raw
    else:
        text = doc.get("message")
        msg = (text if isinstance(text, str) else "").encode("utf-8")
    return header.encode("utf-8") + (b" " + msg if msg else b"")


class SyslogSink:
    """Send audit records as RFC 5424 syslog messages.

    Parameters
    ----------
    address
        ``udp://host:514``, ``tcp://host:514`` or ``tls://host:6514`` (``tcp`` with
        ``tls=True`` is the same as ``tls``).
    tls, ca_file, verify, cert_file, key_file
        TLS (RFC 5425) with the server's certificate verified (on by default) and an
        optional client certificate for mutual TLS.
    facility
        Syslog facility number (default 13, log audit).
    sd_id
        The structured-data ID, ``name@<private enterprise number>``.
    body
        ``"json"`` (default: the whole record as MSG) or ``"message"`` (its text only).
    """

    max_batch_records = 500

    def __init__(self, address: str, *, tls: bool = False,
                 ca_file: str | os.PathLike[str] | None = None, verify: bool = True,
                 cert_file: str | os.PathLike[str] | None = None,
                 key_file: str | os.PathLike[str] | None = None, facility: int = 13,
                 sd_id: str = "audit@32473", app_name: str = "audit-analyzer",
                 body: str = "json", timeout: float = 10.0, name: str = "syslog") -> None:
        parts = urlsplit(address if "://" in address else f"udp://{address}")
        scheme = parts.scheme
        if scheme == "tcp" and tls:
            scheme = "tls"
        if scheme not in ("udp", "tcp", "tls") or not parts.hostname:
            raise ConfigError(f"syslog address must be udp://, tcp:// or tls://HOST:PORT, "
                              f"got {address!r}")
        if scheme == "udp" and tls:
            raise ConfigError("TLS needs a tcp:// or tls:// address")
        if not 0 <= facility <= 23:
            raise ConfigError(f"syslog facility must be 0-23, not {facility}")
        name_part, at, pen = sd_id.partition("@")
        if not (name_part and at and pen.isdigit()) or len(sd_id) > 32 or any(
                c in sd_id for c in ' ="]') or not sd_id.isascii():
            raise ConfigError(f"SD-ID must look like name@<enterprise number>, at most 32 "
                              f"characters, got {sd_id!r}")
        if body not in ("json", "message"):
            raise ConfigError(f"body must be json or message, not {body!r}")
        self.name = name
        self.transport = scheme
        self.host = parts.hostname
        self.port = parts.port or (6514 if scheme == "tls" else 514)
        self.facility, self.sd_id, self.app_name, self.body = facility, sd_id, app_name, body
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        if scheme == "tls":
            self._context = tls_context(ca_file=ca_file, verify=verify, cert_file=cert_file,
                                        key_file=key_file)
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"SyslogSink('{self.transport}://{self.host}:{self.port}')"

    def send(self, batch: Sequence[Record]) -> SendResult:
        rejected: list[tuple[int, str]] = []
        frames: list[bytes] = []
        for i, rec in enumerate(batch):
            msg = format_message(rec, facility=self.facility, sd_id=self.sd_id,
                                 app_name=self.app_name, body=self.body)
            if self.transport == "udp":
                if len(msg) > _MAX_UDP:
                    rejected.append((i, f"{len(msg)} bytes: too large for one UDP datagram"))
                    continue
                frames.append(msg)
            else:
                frames.append(b"%d %s" % (len(msg), msg))  # RFC 6587 octet counting
        try:
            sock = self._connect()
            if self.transport == "udp":
                for frame in frames:
                    sock.send(frame)
            else:
                sock.sendall(b"".join(frames))
        except (OSError, ssl.SSLError) as exc:
            self.close()
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise ConfigError(f"{self.name} ({self.host}:{self.port}): TLS certificate "
                                  f"not trusted: {exc.verify_message}") from None
            raise DeliveryError(f"{self.name} ({self.transport}://{self.host}:{self.port}): "
                                f"{type(exc).__name__}: {exc}") from None
        return SendResult(rejected=tuple(rejected))

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            if self.transport != "udp" and _peer_closed(self._sock):
                # The server hung up since the last batch: reconnect now rather than
                # write into a dead connection whose loss would only show on the next one.
                self.close()
            else:
                return self._sock
        if self.transport == "udp":
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family[0], socket.SOCK_DGRAM)
            sock.connect(family[4])
        else:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._context is not None:
                try:
                    sock = self._context.wrap_socket(sock, server_hostname=self.host)
                except BaseException:
                    sock.close()
                    raise
        self._sock = sock
        return sock


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the other end closed the connection (readable with nothing to read)."""
    import select

    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        if isinstance(sock, ssl.SSLSocket):
            # Readable may be a TLS 1.3 session ticket, not data: read without blocking.
            timeout = sock.gettimeout()
            sock.setblocking(False)
            try:
                return sock.recv(1) == b""
            except ssl.SSLWantReadError:
                return False
            finally:
                sock.settimeout(timeout)
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ssl.SSLError, ValueError):
        return True
