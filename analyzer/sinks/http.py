"""HTTP JSON destinations: Splunk HTTP Event Collector and a generic webhook.

Both are usually given alerts only (``Shipper(..., select=is_alert)``; the CLI's
``--only alerts``), but take any event.

Splunk HEC: one POST of concatenated event envelopes to ``/services/collector/event`` with
``Authorization: Splunk <token>``; the envelope's ``time`` is the event's ``@timestamp``.
HEC accepts or refuses a request as a whole: 429 and 5xx (HEC code 9, server busy) are
retried, 401/403 are a configuration error, other 400s (the data, e.g. code 6) are retried
record by record so that one bad record lands in the dead letter rather than the batch.

Webhook: one POST per record, the record's JSON as the body, with ``Idempotency-Key:
<event.id>`` so a receiver can drop a resend. 2xx delivered; 408, 429 and 5xx retried;
other 4xx rejected into the dead letter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime

import orjson

from analyzer.errors import ConfigError
from analyzer.files import read_secret
from analyzer.sinks._http import HttpClient, safe_reason
from analyzer.sinks.shipper import DeliveryError, Record, SendResult

__all__ = ["SplunkHecSink", "WebhookSink"]

_log = logging.getLogger(__name__)


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class SplunkHecSink:
    """Send records to Splunk's HTTP Event Collector.

    Parameters
    ----------
    url
        ``https://splunk:8088`` (``/services/collector/event`` is added when the URL has
        no path).
    token
        The HEC token; :meth:`from_files` reads it from a file.
    index, sourcetype, source
        Envelope fields (``sourcetype`` defaults to ``_json``).
    """

    max_batch_records = 500
    max_batch_bytes = 1 << 20

    def __init__(self, url: str, *, token: str, index: str | None = None,
                 sourcetype: str = "_json", source: str = "audit-analyzer",
                 ca_file: str | os.PathLike[str] | None = None, verify: bool = True,
                 timeout: float = 30.0, name: str = "splunk") -> None:
        if not token:
            raise ConfigError("Splunk HEC needs a token")
        self.name = name
        self._client = HttpClient(url, ca_file=ca_file, verify=verify, timeout=timeout)
        self._path = "" if self._client.base_path else "/services/collector/event"
        self._headers = {"Authorization": f"Splunk {token}",
                         "Content-Type": "application/json"}
        self._fields = {"sourcetype": sourcetype, "source": source}
        if index:
            self._fields["index"] = index

    @classmethod
    def from_files(cls, url: str, *, token_file: str | os.PathLike[str],
                   **options: object) -> SplunkHecSink:
        return cls(url, token=read_secret(token_file), **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"SplunkHecSink({self._client.origin!r})"

    def _envelope(self, rec: Record) -> bytes:
        env: dict[str, object] = dict(self._fields)
        when = _epoch(rec.timestamp)
        if when is not None:
            env["time"] = round(when, 6)
        host = rec.doc.get("host")
        if isinstance(host, dict) and host.get("name"):
            env["host"] = host["name"]
        return orjson.dumps(env)[:-1] + b',"event":' + rec.raw + b"}"

    def send(self, batch: Sequence[Record]) -> SendResult:
        status, text = self._post(b"\n".join(self._envelope(r) for r in batch))
        if status < 300:
            return SendResult()
        if len(batch) == 1:
            return SendResult(rejected=((0, f"HTTP {status}: {text}"),))
        # HEC refuses the whole request for one bad event: find it record by record.
        rejected = []
        for i, rec in enumerate(batch):
            status, text = self._post(self._envelope(rec))
            if status >= 300:
                rejected.append((i, f"HTTP {status}: {text}"))
        return SendResult(rejected=tuple(rejected))

    def _post(self, body: bytes) -> tuple[int, str]:
        try:
            resp = self._client.request("POST", self._path, body, self._headers)
        except ConnectionError as exc:
            raise DeliveryError(f"{self.name}: {exc}") from None
        where = f"{self.name} ({self._client.origin})"
        if resp.status in (401, 403):
            raise ConfigError(f"{where}: HTTP {resp.status}: HEC token refused")
        if resp.status in (408, 429) or resp.status >= 500:
            raise DeliveryError(f"{where}: HTTP {resp.status}")
        if 300 <= resp.status < 400 or resp.status == 404:
            raise ConfigError(f"{where}: HTTP {resp.status}: not a HEC endpoint")
        try:
            text = safe_reason(orjson.loads(resp.body).get("text", ""))
        except (orjson.JSONDecodeError, AttributeError):
            text = ""  # not HEC's JSON: nothing of the body is kept (see safe_reason)
        return resp.status, text or "refused"

    def close(self) -> None:
        self._client.close()


class WebhookSink:
    """POST each record's JSON to a URL (alert hooks, chat bridges, ticketing).

    Parameters
    ----------
    url
        Where to POST.
    headers
        Extra headers (e.g. ``{"Authorization": "Bearer ..."}`` built from a file by the
        caller); never logged.
    """

    max_batch_records = 100

    def __init__(self, url: str, *, headers: dict[str, str] | None = None,
                 ca_file: str | os.PathLike[str] | None = None, verify: bool = True,
                 timeout: float = 10.0, name: str = "webhook") -> None:
        self.name = name
        self._client = HttpClient(url, ca_file=ca_file, verify=verify, timeout=timeout)
        self._headers = {"Content-Type": "application/json", **(headers or {})}

    @classmethod
    def from_files(cls, url: str, *, bearer_token_file: str | os.PathLike[str] | None = None,
                   **options: object) -> WebhookSink:
        headers = {"Authorization": f"Bearer {read_secret(bearer_token_file)}"} \
            if bearer_token_file else None
        return cls(url, headers=headers, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"WebhookSink({self._client.origin!r})"

    def send(self, batch: Sequence[Record]) -> SendResult:
        rejected: list[tuple[int, str]] = []
        where = f"{self.name} ({self._client.origin})"
        for i, rec in enumerate(batch):
            headers = dict(self._headers)
            if rec.event_id:
                headers["Idempotency-Key"] = rec.event_id
            try:
                resp = self._client.request("POST", "", rec.raw, headers)
            except ConnectionError as exc:
                status, reason = 0, str(exc)
            else:
                status, reason = resp.status, f"HTTP {resp.status}"
            if status == 0 or status in (408, 429) or status >= 500:
                if i == 0:
                    raise DeliveryError(f"{where}: {reason}")
                return SendResult(rejected=tuple(rejected), retry=tuple(range(i, len(batch))),
                                  retry_reason=reason)
            if status in (401, 403):
                raise ConfigError(f"{where}: HTTP {status}: credentials refused")
            if status >= 300:
                # the status only: the body may echo the request, token included
                rejected.append((i, reason))
        return SendResult(rejected=tuple(rejected))

    def close(self) -> None:
        self._client.close()
