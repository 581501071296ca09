"""Elasticsearch / OpenSearch destination: the ``_bulk`` API over the standard library.

Each record is one ``create`` (default) or ``index`` action with ``_id = event.id``, so a
batch sent twice (the shipper delivers at least once) never makes a second document: with
``create`` the copy is answered ``409 version_conflict`` and counted as delivered, with
``index`` it overwrites the same document. The record's JSON line is sent as is, so what
lands in the index is byte for byte what the chain covers.

Index names come from a template with Joda-style date tokens taken from the event's own
``@timestamp`` (``audit-{yyyy.MM.dd}`` -> ``audit-2024.05.01``), so a late or re-shipped
event lands in its day's index.

Per-item results decide each record's fate: 2xx (and 409 for ``create``) delivered; 429 and
5xx retried; any other 4xx (a mapping error, say) rejected for good, into the dead-letter
file. A whole-request 429 or 5xx, a timeout or a refused connection retries the batch.
401/403 raise :class:`~analyzer.errors.ConfigError`: retrying cannot fix credentials.

>>> ElasticsearchSink("http://127.0.0.1:9200", index="audit-{yyyy.MM}").index_for(
...     "2024-05-01T12:00:00.000000Z")
'audit-2024.05'
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import orjson

from analyzer.errors import ConfigError
from analyzer.files import read_secret
from analyzer.sinks._http import HttpClient
from analyzer.sinks.shipper import DeliveryError, Record, SendResult

__all__ = ["ElasticsearchSink"]

_log = logging.getLogger(__name__)

# Joda/Java date tokens -> slices of an ISO 8601 UTC timestamp "YYYY-MM-DDTHH:..."
_TOKENS = {"yyyy": (0, 4), "yy": (2, 4), "MM": (5, 7), "dd": (8, 10), "HH": (11, 13)}
_TOKEN_RE = re.compile("|".join(sorted(_TOKENS, key=len, reverse=True)))
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}")
_INVALID_INDEX = re.compile(r'[\\/*?"<>| ,#:A-Z]')


class ElasticsearchSink:
    """Send audit records to Elasticsearch or OpenSearch through ``_bulk``.

    Parameters
    ----------
    url
        ``https://host:9200`` (a path prefix is kept, for proxies).
    index
        Index name or template; ``{...}`` holds date tokens ``yyyy``, ``yy``, ``MM``, ``dd``,
        ``HH`` taken from the event's ``@timestamp`` (UTC), e.g. ``audit-{yyyy.MM.dd}``.
    api_key
        ``id:key`` or its base64 form (``Authorization: ApiKey ...``). Or ``username`` and
        ``password`` for basic auth. Use :meth:`from_files` to read them from files.
    ca_file, verify
        Trust store for TLS; verification is on unless ``verify=False``.
    op_type
        ``"create"`` (default; required by data streams; a resend is a 409, not a copy) or
        ``"index"`` (a resend overwrites).
    pipeline
        Optional ingest pipeline name.
    name
        Names the cursor and dead-letter files (default ``elasticsearch``).
    """

    max_batch_records = 1000
    max_batch_bytes = 5 << 20
    #: the record's line is the document as it is: the shipper need not parse it
    sends_raw_lines = True

    def __init__(self, url: str, *, index: str = "audit-{yyyy.MM.dd}",
                 api_key: str | None = None, username: str | None = None,
                 password: str | None = None, ca_file: str | os.PathLike[str] | None = None,
                 verify: bool = True, timeout: float = 30.0, op_type: str = "create",
                 pipeline: str | None = None, name: str = "elasticsearch") -> None:
        if op_type not in ("create", "index"):
            raise ConfigError(f"op_type must be create or index, not {op_type!r}")
        if api_key and (username or password):
            raise ConfigError("give either an API key or a username and password, not both")
        if (username is None) != (password is None):
            raise ConfigError("basic auth needs both a username and a password")
        self._check_template(index)
        self.name = name
        self.index = index
        self.op_type = op_type
        self._client = HttpClient(url, ca_file=ca_file, verify=verify, timeout=timeout)
        self._headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}
        if api_key:
            token = api_key if ":" not in api_key else \
                base64.b64encode(api_key.encode()).decode()
            self._headers["Authorization"] = f"ApiKey {token}"
        elif username is not None:
            pair = f"{username}:{password}".encode()
            self._headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        self._path = "/_bulk" + (f"?pipeline={pipeline}" if pipeline else "")
        self._static_index = index if "{" not in index else None
        self._index_cache: dict[str, str] = {}
        self._action_cache: dict[str, bytes] = {}

    @classmethod
    def from_files(cls, url: str, *, api_key_file: str | os.PathLike[str] | None = None,
                   username: str | None = None,
                   password_file: str | os.PathLike[str] | None = None,
                   **options: object) -> ElasticsearchSink:
        """Build the sink with credentials read from files (the CLI's way)."""
        api_key = read_secret(api_key_file) if api_key_file else None
        password = read_secret(password_file) if password_file else None
        if password is not None and username is None:
            raise ConfigError("a password file needs --username")
        return cls(url, api_key=api_key, username=username, password=password,
                   **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:  # never the credentials
        return f"ElasticsearchSink({self._client.origin!r}, index={self.index!r})"

    # -- the index template -------------------------------------------------------------

    @staticmethod
    def _check_template(index: str) -> None:
        static = _PLACEHOLDER.sub("", index)
        if not index or "{" in static or "}" in static or _INVALID_INDEX.search(static) \
                or static.startswith(("-", "_", "+")):
            raise ConfigError(f"invalid index name or template {index!r} (lowercase, no "
                              "spaces or \\/*?\"<>|,#:, date tokens inside {...})")
        for inner in _PLACEHOLDER.findall(index):
            if not _TOKEN_RE.search(inner) or _INVALID_INDEX.search(_TOKEN_RE.sub("", inner)):
                raise ConfigError(f"index template {index!r}: {{{inner}}} holds no date "
                                  "token (yyyy, yy, MM, dd, HH)")

    def index_for(self, timestamp: str | None) -> str:
        """The index for an event with this ``@timestamp`` (raises ValueError if unusable)."""
        if self._static_index is not None:
            return self._static_index
        if not timestamp or not _ISO.match(timestamp):
            raise ValueError(f"@timestamp {timestamp!r:.40} is not ISO 8601; cannot name "
                             "the index")
        key = timestamp[:13]
        name = self._index_cache.get(key)
        if name is None:
            def fill(match: re.Match[str]) -> str:
                return _TOKEN_RE.sub(lambda t: key[slice(*_TOKENS[t.group()])], match.group(1))

            name = _PLACEHOLDER.sub(fill, self.index)
            if len(self._index_cache) > 10_000:
                self._index_cache.clear()
            self._index_cache[key] = name
        return name

    # -- sending --------------------------------------------------------------------------

    def _action(self, timestamp: str | None) -> bytes:
        """The start of a record's action line, up to ``"_id":`` (cached per hour)."""
        key = timestamp[:13] if timestamp else ""
        action = self._action_cache.get(key)
        if action is None:
            meta = orjson.dumps({self.op_type: {"_index": self.index_for(timestamp)}})
            action = meta[:-2] + b',"_id":'
            if len(self._action_cache) > 10_000:
                self._action_cache.clear()
            self._action_cache[key] = action
        return action

    def send(self, batch: Sequence[Record]) -> SendResult:
        body: list[bytes] = []
        sent: list[int] = []  # batch index of each action line
        rejected: list[tuple[int, str]] = []
        action_for = self._action
        for i, rec in enumerate(batch):
            try:
                action = action_for(rec.timestamp)
            except ValueError as exc:
                rejected.append((i, str(exc)))
                continue
            event_id = rec.event_id
            if event_id:
                body.append(b"%s%s}}\n%s" % (action, orjson.dumps(event_id), rec.raw))
            else:
                body.append(action[:-7] + b"}}\n" + rec.raw)
            sent.append(i)
        if not sent:
            return SendResult(rejected=tuple(rejected))
        payload = b"\n".join(body) + b"\n"
        try:
            resp = self._client.request("POST", self._path, payload, self._headers)
        except ConnectionError as exc:
            raise DeliveryError(f"{self.name}: {exc}") from None
        where = f"{self.name} ({self._client.origin})"
        if resp.status in (401, 403):
            raise ConfigError(f"{where}: HTTP {resp.status}: credentials refused or lacking "
                              "the privilege to write the index")
        if resp.status == 429 or resp.status >= 500:
            raise DeliveryError(f"{where}: HTTP {resp.status}")
        if resp.status == 413:
            raise ConfigError(f"{where}: HTTP 413: batch too large for the cluster's "
                              "http.max_content_length; lower the batch size")
        if resp.status >= 300:
            raise ConfigError(f"{where}: HTTP {resp.status} for _bulk: "
                              f"{_error_text(resp.body)}")
        try:
            answer = orjson.loads(resp.body)
            items = answer["items"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise DeliveryError(f"{where}: unreadable _bulk response") from None
        if len(items) != len(sent):
            raise DeliveryError(f"{where}: _bulk answered {len(items)} items for "
                                f"{len(sent)} sent")
        retry: list[int] = []
        reason = ""
        if answer.get("errors"):
            for i, item in zip(sent, items, strict=True):
                result: dict[str, Any] = (next(iter(item.values()), {})
                                          if isinstance(item, dict) else {})
                status = int(result.get("status", 500))
                if status < 300 or (status == 409 and self.op_type == "create"):
                    continue
                if status == 429 or status >= 500:
                    retry.append(i)
                    reason = f"item status {status}"
                else:
                    rejected.append((i, f"HTTP {status}: {_error_text(result.get('error'))}"))
        return SendResult(rejected=tuple(sorted(rejected)), retry=tuple(retry),
                          retry_reason=reason)

    def close(self) -> None:
        self._client.close()


def _error_text(error: object) -> str:
    """The error's type (and its cause's), e.g. ``mapper_parsing_exception``.

    Elasticsearch's ``reason`` quotes the document ("failed to parse field [user.name]
    ... value 'alice'"), and a proxy in front of it may echo the request: neither is kept,
    since the text lands in the trail (see :func:`~analyzer.sinks._http.safe_reason`).
    """
    if isinstance(error, bytes):
        try:
            error = orjson.loads(error).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            return "error"
    if isinstance(error, dict):
        text = _ERROR_TYPE.fullmatch(str(error.get("type", ""))) and str(error["type"])
        cause = error.get("caused_by")
        if isinstance(cause, dict) and _ERROR_TYPE.fullmatch(str(cause.get("type", ""))):
            text = f"{text or 'error'} (caused by {cause['type']})"
        return text or "error"
    return "error"


_ERROR_TYPE = re.compile(r"[a-z_]{1,64}")
