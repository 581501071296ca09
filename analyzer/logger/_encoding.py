"""The logger's record encoding: canonical JSON assembled from pre-encoded parts.

Private to :mod:`analyzer.logger` (the module's name says so); its names are the writer's
to import.

Every key is written in sorted order at every level, so the bytes the logger hashes are the
canonical form :func:`analyzer.integrity.canonical_bytes` derives from a parsed record. The
caches are bounded: a long-running process sees many values.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from analyzer.errors import (
    SchemaError,
)
from analyzer.events import (
    ECS_VERSION,
    Level,
    Outcome,
    check_time_span,
    format_timestamp,
    parse_timestamp,
)

__all__ = [
    "CATEGORY_PARTS",
    "ECS",
    "ECS_PART",
    "JSON_STRINGS",
    "LEVEL_PART",
    "ORIGINS",
    "OUTCOMES",
    "OUTCOME_PART",
    "Timestamps",
    "categories_part",
    "jstr",
    "origin_json",
    "stamp",
    "valid_ip",
]

@functools.lru_cache(maxsize=8192)
def valid_ip(value: str) -> str:
    # Cached: the same few addresses recur on every call, and parsing costs microseconds.
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise SchemaError(f"source.ip: not an IP address: {value!r}") from None


class Timestamps:
    """Formats ``@timestamp`` cheaply: the date-and-seconds prefix is cached per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def now(self) -> bytes:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.").encode()
            self._second = second
        return b"%s%06dZ" % (self._prefix, micro)



ECS = {"version": ECS_VERSION}
CATEGORY_PARTS: dict[str, bytes] = {}


def categories_part(action: str, categories: tuple[str, ...]) -> bytes:
    """``,"category":[...]`` of an action whose category is inferred (cached per action)."""
    part = b',"category":' + orjson.dumps(list(categories)) if categories else b""
    if len(CATEGORY_PARTS) > 65536:
        CATEGORY_PARTS.clear()
    CATEGORY_PARTS[action] = part
    return part
# Pre-encoded pieces of the canonical record (keys in sorted order).
ECS_PART = b',"ecs":{"version":"%s"},"event":{"action":' % ECS_VERSION.encode()
OUTCOME_PART = {o: b'","kind":"event","outcome":"%s","sequence":' % o.value.encode()
                 for o in Outcome}
LEVEL_PART = {lvl: b'},"log":{"level":"%s","logger":' % lvl.label.encode() for lvl in Level}
JSON_STRINGS: dict[str, bytes] = {}
ORIGINS: dict[tuple[Any, int], bytes] = {}


def origin_json(code: Any, line: int) -> bytes:
    """``log.origin`` of a call site, then ``"message":`` (cached per code object and line)."""
    encoded = b',"origin":{"file":{"line":%d,"name":%s},"function":%s}},"message":' % (
        line, orjson.dumps(os.path.basename(code.co_filename)), orjson.dumps(code.co_name))
    if len(ORIGINS) > 65536:
        ORIGINS.clear()
    ORIGINS[(code, line)] = encoded
    return encoded


def jstr(value: str, basename: bool = False) -> bytes:
    """A string as JSON, cached: actions, users, resources and code locations recur."""
    cache_key = ("\0" + value) if basename else value
    encoded = JSON_STRINGS.get(cache_key)
    if encoded is None:
        if type(value) is not str:
            raise SchemaError(f"expected a string, got {value!r:.60}")
        encoded = orjson.dumps(os.path.basename(value) if basename else value)
        if len(JSON_STRINGS) > 65536:  # bounded: a long-running process sees many values
            JSON_STRINGS.clear()
        JSON_STRINGS[cache_key] = encoded
    return encoded
OUTCOMES = {o.value: o for o in Outcome}


def stamp(value: datetime | str) -> str:
    return format_timestamp(check_time_span(parse_timestamp(value), "@timestamp"))
