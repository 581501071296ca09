"""A small keep-alive HTTP(S) client on the standard library, shared by the HTTP sinks.

Only :mod:`http.client` and :mod:`ssl`: the sinks add no dependency. TLS verification is on
unless explicitly turned off. Credentials travel in headers the caller builds; nothing here
logs headers or bodies, and error messages name the host and status only.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from analyzer.errors import ConfigError

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    retry_after: float | None = None


class HttpClient:
    """One persistent connection to one origin; reconnects after any failure."""

    def __init__(self, url: str, *, ca_file: str | os.PathLike[str] | None = None,
                 verify: bool = True, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"expected an http:// or https:// URL, got {_redact(url)!r}")
        if parts.username or parts.password:
            raise ConfigError("credentials in the URL are not accepted (they would end up in "
                              "logs and process lists); use a credential file")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.query = parts.query
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        if self.scheme == "https":
            self._context = tls_context(ca_file=ca_file, verify=verify)
        elif ca_file is not None:
            raise ConfigError("a CA file was given for a plain http:// URL")
        self._conn: http.client.HTTPConnection | None = None

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def request(self, method: str, path: str, body: bytes,
                headers: dict[str, str]) -> Response:
        """Send one request; raises :class:`OSError` (incl. ``http.client`` errors) on failure."""
        for attempt in (0, 1):
            conn = self._connection()
            try:
                target = (self.base_path + path) or "/"
                if self.query:
                    target += ("&" if "?" in target else "?") + self.query
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A kept-alive connection the server closed meanwhile fails once: retry once
                # on a fresh connection before reporting the destination as down.
                if attempt == 0 and isinstance(exc, (http.client.RemoteDisconnected,
                                                     BrokenPipeError, ConnectionResetError)):
                    continue
                raise ConnectionError(f"{self.origin}: {type(exc).__name__}: "
                                      f"{exc}") from None
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            retry_after = resp.getheader("Retry-After")
            try:
                wait = float(retry_after) if retry_after else None
            except ValueError:
                wait = None
            return Response(resp.status, data, wait)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._context is not None:
                self._conn = http.client.HTTPSConnection(self.host, self.port,
                                                         timeout=self.timeout,
                                                         context=self._context)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout)
        return self._conn


def tls_context(*, ca_file: str | os.PathLike[str] | None = None, verify: bool = True,
                cert_file: str | os.PathLike[str] | None = None,
                key_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A client TLS context: system CAs (or ``ca_file``), hostname checks, TLS 1.2+."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        _log.warning("TLS certificate verification is OFF: the destination is not "
                     "authenticated")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


_SAFE_REASON = re.compile(r"[A-Za-z0-9 _.,:;()/'-]{1,80}")
_SECRET_WORDS = re.compile(r"(?i)author|bearer|basic|token|passw|secret|api.?key|cookie|"
                           r"session|credential")


def safe_reason(text: object) -> str:
    """A destination's own words about a refusal, only if short and plainly harmless.

    Refusal reasons reach stderr, the dead-letter file and the chained trail, which cannot
    be cleaned afterwards. A destination may echo the request (its ``Authorization``
    header, the record's fields) in its error body, so the body itself is never kept: only
    a short reason of plain characters that names no credential, else ``""``.

    >>> safe_reason("Invalid data format"), safe_reason("echo: Authorization: Bearer abc")
    ('Invalid data format', '')
    """
    value = str(text or "").strip()
    if not _SAFE_REASON.fullmatch(value) or _SECRET_WORDS.search(value):
        return ""
    return value


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        return url.replace(parts.netloc, parts.netloc.rpartition("@")[2])
    return url
