"""Web server access logs (NCSA common and combined formats: nginx, Apache) -> frame.

One compiled regular expression runs over the whole file at once (pyarrow's RE2 kernels).

Mapping (the full table is in ``docs/formats.md``): ``source_ip`` the client address;
``user`` the authenticated user (``-`` -> empty); ``action`` ``http.<method>``
(``http.get``); ``resource`` the path without its query string; ``outcome`` success for
status below 400, failure otherwise; ``bytes`` the response size; ``message`` the whole line.
Kept beside them for the web features: ``url`` (the request target as sent, ECS
``url.original``), ``url_path``, ``url_query``, ``status`` (Int64) and ``user_agent``.
A request line the server could not parse (``"-"``, TLS bytes sent to a plain port) is still
an event: action ``http.invalid``, outcome failure.

Published variants read as well: the whole line wrapped in double quotes (inner quotes
doubled, or backslash-escaped), CRLF line ends, and a host name in the client field (Apache
with ``HostnameLookups On``). A host name is not an address, so it goes to ``source_domain``
(ECS ``source.domain``) rather than ``source_ip``; the analyzer scores such a client as a
source all the same, and the result's ``notes`` say how many requests came from names.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.sources._base import (
    MAX_LINE_BYTES,
    ReadResult,
    Rejected,
    arrow_to_frame,
    within_time_range,
)
from analyzer.sources.generic import ip_or_empty, line_pieces

__all__ = ["FORMAT", "OPTIONS", "read", "read_chunks", "sniff"]

FORMAT = "weblog"
#: The :class:`~analyzer.sources.options.ReaderOptions` :func:`read` takes.
OPTIONS: frozenset[str] = frozenset()

_LINE = (r'^(?P<ip>\S+) (?P<ident>\S+) (?P<user>.*?) \[(?P<time>[^\]]+)\] '
         r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+|-)'
         r'(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?.*$')
_LINE_PY = re.compile(_LINE)
# path and query come out of the same pass: no second regex over a million targets
_REQUEST = (r"^(?P<method>[A-Za-z]+) (?P<target>(?P<path>[^?#\s]*)(?:\?(?P<query>[^#\s]*))?"
            r"\S*)(?: (?P<proto>\S+))?$")
_WRAPPED = r'^"(?P<inner>.*)"\s*$'


def sniff(head: bytes) -> bool:
    """True if most of the first lines are common/combined log format lines."""
    lines = [ln for ln in head.decode("utf-8", "replace").splitlines()[:40] if ln.strip()]
    if len(lines) > 1:
        lines = lines[:-1]  # the last line of a 64 KiB head is usually cut short
    lines = [_unwrap_py(ln) for ln in lines]
    return bool(lines) and sum(1 for ln in lines if _LINE_PY.match(ln)) * 2 > len(lines)


def _unwrap_py(line: str) -> str:
    """One line without its wrapping quotes (for sniffing a file's head only)."""
    line = line.rstrip("\r")
    if len(line) > 1 and line[0] == line[-1] == '"':
        inner = line[1:-1]
        return inner.replace('""', '"') if '""' in inner else inner.replace('\\"', '"')
    return line


def read(path: str | os.PathLike[str]) -> ReadResult:
    """Read an access log in common or combined log format (plain or gzip).

    Parameters
    ----------
    path
        ``access.log`` of nginx or Apache (``combined`` or ``common``; extra fields after
        the user agent, as in nginx's ``main`` with ``$http_x_forwarded_for``, are ignored).

    Returns
    -------
    ReadResult
        One row per request; lines of another shape, or with an unreadable time, are rejected
        with their line numbers. ``records`` counts the non-blank lines; nothing is skipped.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "access.log"
    >>> _ = log.write_text('192.0.2.1 - bob [10/Oct/2000:13:55:36 -0700] '
    ...                    '"GET /admin?x=1 HTTP/1.1" 403 153 "-" "curl/8"\\n')
    >>> read(log).frame.loc[0, ["user", "action", "outcome", "resource"]].tolist()
    ['bob', 'http.get', 'failure', '/admin']
    """
    # run to the end (one piece): the file closes there, not when the generator is collected
    (result,) = read_chunks(path, rows=None)
    return result


def read_chunks(path: str | os.PathLike[str], *, rows: int | None) -> Iterator[ReadResult]:
    """:func:`read` in pieces of ``rows`` lines (``None``: one piece, the whole file), in the
    file's order, each with its own accounting: a line is judged on its own, so the pieces
    hold what a whole read holds, rejected lines numbered in the file. The note on clients
    named by host comes with the last piece, counted over the file (memory holds the
    distinct names, not the lines)."""
    where = str(Path(path))
    number = 1
    requests = 0
    names: set[str] = set()
    pieces = line_pieces(path, rows=rows, max_line=MAX_LINE_BYTES)
    lines = next(pieces)
    while True:
        following = next(pieces, None)
        result, named, clients = _read_piece(where, lines, number)
        requests += named
        names.update(clients)
        if following is None:
            if requests:
                result = dataclasses.replace(result, notes=(
                    f"{where}: {requests:,} requests from {len(names):,} clients named by "
                    f"host name, not address (kept in source_domain, scored as sources)",))
            yield result
            return
        yield result
        number += len(lines)
        lines = following


def _read_piece(where: str, lines: pa.Array, number: int
                ) -> tuple[ReadResult, int, list[str]]:
    """The requests of ``lines``, whose first is line ``number`` of the file; how many of
    them name their client by host name, and those names."""
    text = _unwrap(lines)
    found = pc.extract_regex(text, _LINE)
    parsed = found.is_valid().to_numpy(zero_copy_only=False)
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0) \
        .to_numpy(zero_copy_only=False)
    rejected = [Rejected(where, int(i) + number, "not a common/combined log line",
                         lines[int(i)].as_py().encode("utf-8", "replace")[:4096])
                for i in np.flatnonzero(~parsed & ~blank)]
    rows = np.flatnonzero(parsed)
    keep_mask = pa.array(parsed)
    found = found.filter(keep_mask)
    text = text.filter(keep_mask)

    def field(name: str) -> pa.Array:
        return pc.fill_null(found.field(name), "")

    stamps = pd.to_datetime(pd.Series(field("time").to_pandas(), dtype="object"),
                            format="%d/%b/%Y:%H:%M:%S %z", utc=True, errors="coerce")
    stamps = within_time_range(stamps)
    bad = stamps.isna().to_numpy()
    for i in np.flatnonzero(bad):
        rejected.append(Rejected(where, int(rows[i]) + number,
                                 f"unreadable time {field('time')[int(i)].as_py()!r}",
                                 lines[int(rows[i])].as_py().encode()[:4096]))
    rejected.sort(key=lambda r: r.line)
    columns = _columns(field, text)
    frame = arrow_to_frame(columns, timestamps=stamps, keep=~bad)
    frame["status"] = frame["status"].astype("Int64")
    frame["url_path"] = frame["resource"]  # the same values: one dictionary, not two
    # counted on the categorical's codes: no million-string conversion for one note
    codes = frame["source_domain"].cat.codes.to_numpy()
    empty = np.flatnonzero(frame["source_domain"].cat.categories == "")
    named = (codes >= 0) & ~np.isin(codes, empty)
    clients = frame["source_domain"].cat.categories[np.unique(codes[named])].tolist()
    return ReadResult(frame, tuple(rejected), records=int((~blank).sum())), \
        int(named.sum()), clients


def _unwrap(lines: pa.Array) -> pa.Array:
    """Lines with wrapping double quotes removed and their inner quotes unescaped.

    Only lines that start with a quote are looked at (a plain access log line never does),
    so the common case costs one ``starts_with`` pass. Inside a wrapped line, doubled quotes
    (CSV style) are undone if there are any; otherwise backslash-escaped ones.
    """
    starts = pc.starts_with(lines, '"').to_numpy(zero_copy_only=False)
    if not starts.any():
        return lines
    sub = lines.filter(pa.array(starts))
    wrapped = pc.extract_regex(sub, _WRAPPED)
    inner = pc.fill_null(wrapped.field("inner"), "")
    doubled = pc.match_substring(inner, '""')
    unescaped = pc.if_else(doubled, pc.replace_substring(inner, '""', '"'),
                           pc.replace_substring(inner, '\\"', '"'))
    sub = pc.if_else(wrapped.is_valid(), unescaped, sub)
    return pc.replace_with_mask(lines, pa.array(starts), sub)


def _columns(field: Callable[[str], pa.Array], text: pa.Array) -> dict[str, pa.Array]:
    """The frame's columns from the parsed fields of each kept line."""
    request = pc.extract_regex(field("request"), _REQUEST)
    valid_request = request.is_valid()
    method = pc.utf8_lower(pc.fill_null(request.field("method"), ""))
    action = pc.if_else(valid_request, pc.binary_join_element_wise("http.", method, ""),
                        "http.invalid")
    target = pc.fill_null(request.field("target"), "")
    path_only = pc.fill_null(request.field("path"), "")
    query = pc.fill_null(request.field("query"), "")
    status = pc.cast(field("status"), pa.int64())
    outcome = pc.if_else(pc.and_(valid_request, pc.less(status, 400)), "success", "failure")
    size = field("bytes")
    nbytes = pc.cast(pc.if_else(pc.equal(size, "-"), pa.scalar(None, pa.string()), size),
                     pa.int64())
    user = field("user")
    user = pc.if_else(pc.equal(user, "-"), "", user)
    agent = field("agent")
    agent = pc.if_else(pc.equal(agent, "-"), "", agent)
    client = field("ip")
    address = ip_or_empty(client)
    # a host name in the client field (HostnameLookups On) is kept, never emptied
    named = pc.and_(pc.equal(address, ""), pc.not_equal(client, "-"))
    return {
        "user": user, "action": action, "outcome": outcome, "source_ip": address,
        "resource": path_only, "bytes": nbytes,
        "category": pa.array(["web"] * len(text), type=pa.string()),
        "kind": pa.array(["event"] * len(text), type=pa.string()), "message": text,
        "source_domain": pc.if_else(named, client, ""), "url": target,
        "url_query": query, "status": status, "user_agent": agent,
    }
