"""AWS CloudWatch Logs destination, through boto3 (the optional ``[cloudwatch]`` extra).

``PutLogEvents`` has rules the sink keeps so that a batch is never refused as a whole:

- at most 10,000 events and 1,048,576 bytes per call, counting each message's UTF-8 size
  plus 26 bytes; one message at most 256 KiB (larger records go to the dead letter);
- events in chronological order, and one call spanning at most 24 hours;
- the log group and stream exist (created when missing, on the first send).

Events the service refuses for their time (older than the group's retention or 14 days,
more than 2 hours in the future) are reported back per event and go to the dead letter.
Throttling, ``ServiceUnavailable`` and network errors are retried by the shipper's backoff;
when part of a batch went in before a failure, only the rest is retried. CloudWatch has no
idempotency key, so a batch resent after a crash appears twice there; ``event.id`` inside
each message lets a query tell the copies apart.

Credentials and region come from boto3's own chain (environment, shared config, instance
role) or the ``client`` given; the sink never reads or logs them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from analyzer.errors import ConfigError
from analyzer.sinks.shipper import DeliveryError, Record, SendResult

__all__ = ["CloudWatchSink", "plan_batches"]

_log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
MAX_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 262_144 - EVENT_OVERHEAD
MAX_SPAN_MS = 24 * 3600 * 1000

_RETRYABLE = {"ThrottlingException", "ServiceUnavailableException", "InternalFailure",
              "RequestTimeout", "RequestTimeoutException", "LimitExceededException",
              "OperationAbortedException"}
_CONFIG = {"AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
           "ExpiredTokenException", "InvalidSignatureException", "SignatureDoesNotMatch"}


def _millis(timestamp: str | None) -> int | None:
    if not timestamp:
        return None
    try:
        return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def plan_batches(events: Sequence[tuple[int, int, int]]) -> list[list[int]]:
    """Split ``(timestamp ms, message bytes, index)`` into PutLogEvents calls.

    Returns lists of indices, each list in chronological order and within the count,
    size and 24-hour limits; the calls themselves follow in chronological order.

    >>> plan_batches([(0, 10, 0), (MAX_SPAN_MS + 1, 10, 1), (5, 10, 2)])
    [[0, 2], [1]]
    """
    ordered = sorted(events)  # stable by (time, size, index): ties keep log order
    calls: list[list[int]] = []
    current: list[int] = []
    size = first = 0
    for ts, nbytes, index in ordered:
        cost = nbytes + EVENT_OVERHEAD
        if current and (len(current) >= MAX_EVENTS or size + cost > MAX_BYTES
                        or ts - first > MAX_SPAN_MS):
            calls.append(current)
            current, size = [], 0
        if not current:
            first = ts
        current.append(index)
        size += cost
    if current:
        calls.append(current)
    return calls


class CloudWatchSink:
    """Send audit records to a CloudWatch Logs stream.

    Parameters
    ----------
    group, stream
        The log group and stream (created if missing, unless ``create=False``).
    region, endpoint_url, profile
        Passed to boto3 when it builds the client (``endpoint_url`` for a VPC endpoint or a
        local test server).
    client
        A ready ``boto3.client("logs")`` instead (then region, endpoint and profile are
        not used).
    retention_days
        Set the group's retention when the sink creates it.
    """

    max_batch_records = MAX_EVENTS
    max_batch_bytes = MAX_BYTES

    def __init__(self, group: str, stream: str, *, region: str | None = None,
                 endpoint_url: str | None = None, profile: str | None = None,
                 client: Any = None, create: bool = True, retention_days: int | None = None,
                 name: str = "cloudwatch") -> None:
        if not group or not stream:
            raise ConfigError("CloudWatch needs a log group and a log stream name")
        if ":" in stream or "*" in stream:
            raise ConfigError(f"log stream name {stream!r} may not contain ':' or '*'")
        self.name = name
        self.group, self.stream = group, stream
        self.create = create
        self.retention_days = retention_days
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise ConfigError("CloudWatch shipping needs boto3: "
                                  "pip install 'audit-analyzer[cloudwatch]'") from None
            session = boto3.session.Session(profile_name=profile, region_name=region)
            # The shipper retries with backoff itself; botocore's own retries stay short.
            client = session.client("logs", endpoint_url=endpoint_url, config=Config(
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5, read_timeout=30))
        self._client = client
        self._ready = False

    def __repr__(self) -> str:
        return f"CloudWatchSink({self.group!r}, {self.stream!r})"

    def send(self, batch: Sequence[Record]) -> SendResult:
        rejected: list[tuple[int, str]] = []
        events: list[tuple[int, int, int]] = []
        messages: dict[int, str] = {}
        for i, rec in enumerate(batch):
            ms = _millis(rec.timestamp)
            if ms is None:
                rejected.append((i, "@timestamp missing or not ISO 8601"))
                continue
            if len(rec.raw) > MAX_EVENT_BYTES:
                rejected.append((i, f"{len(rec.raw)} bytes: larger than a CloudWatch event "
                                    f"may be ({MAX_EVENT_BYTES})"))
                continue
            messages[i] = rec.raw.decode("utf-8", "replace")
            events.append((ms, len(rec.raw), i))
        calls = plan_batches(events)
        stamp = {i: ms for ms, _, i in events}
        self._ensure_stream()
        for n, call in enumerate(calls):
            try:
                answer = self._put([{"timestamp": stamp[i], "message": messages[i]}
                                    for i in call])
            except DeliveryError as exc:
                if n == 0:
                    raise
                rest = tuple(sorted(i for c in calls[n:] for i in c))
                return SendResult(rejected=tuple(rejected), retry=rest, retry_reason=str(exc))
            rejected.extend(_refused(answer.get("rejectedLogEventsInfo"), call))
        return SendResult(rejected=tuple(sorted(rejected)))

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    # -- internals ----------------------------------------------------------------------

    def _put(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            return self._client.put_log_events(logGroupName=self.group,
                                               logStreamName=self.stream, logEvents=events)
        except Exception as exc:
            code = _code(exc)
            if code == "ResourceNotFoundException" and self.create:
                self._ready = False
                self._ensure_stream()
                return self._put(events)
            if code == "DataAlreadyAcceptedException":
                return {}
            raise self._translate(exc) from None

    def _ensure_stream(self) -> None:
        if self._ready or not self.create:
            return
        try:
            try:
                self._client.create_log_group(logGroupName=self.group)
                if self.retention_days:
                    self._client.put_retention_policy(logGroupName=self.group,
                                                      retentionInDays=self.retention_days)
            except Exception as exc:
                if _code(exc) != "ResourceAlreadyExistsException":
                    raise
            try:
                self._client.create_log_stream(logGroupName=self.group,
                                               logStreamName=self.stream)
            except Exception as exc:
                if _code(exc) != "ResourceAlreadyExistsException":
                    raise
        except Exception as exc:
            raise self._translate(exc) from None
        self._ready = True

    def _translate(self, exc: Exception) -> Exception:
        code = _code(exc)
        where = f"{self.name} ({self.group}/{self.stream})"
        if code in _CONFIG or code in ("InvalidParameterException", "ResourceNotFoundException"):
            return ConfigError(f"{where}: {code}: {_message(exc)}")
        if code in _RETRYABLE or code is None or code.startswith("5"):
            return DeliveryError(f"{where}: {code or type(exc).__name__}: {_message(exc)}")
        return DeliveryError(f"{where}: {code}: {_message(exc)}")


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def _message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", ""))[:300]
    return str(exc)[:300]


def _refused(info: dict[str, int] | None, call: list[int]) -> list[tuple[int, str]]:
    """Per-event refusals of one PutLogEvents call -> (batch index, reason)."""
    if not info:
        return []
    out = []
    too_new = info.get("tooNewLogEventStartIndex")
    too_old = info.get("tooOldLogEventEndIndex")
    expired = info.get("expiredLogEventEndIndex")
    for pos, index in enumerate(call):
        if too_new is not None and pos >= too_new:
            out.append((index, "CloudWatch refused the event: timestamp too far in the future"))
        elif expired is not None and pos <= expired:
            out.append((index, "CloudWatch refused the event: older than the retention"))
        elif too_old is not None and pos <= too_old:
            out.append((index, "CloudWatch refused the event: timestamp too old"))
    return out
