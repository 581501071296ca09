"""Kubernetes audit logs (``audit.k8s.io/v1`` Event, one JSON object a line) -> frame.

Pretty-printed objects and webhook batches (``EventList``) are read too.

Mapping (the full table is in ``docs/formats.md``): user ``user.username``; action
``verb:resource[/subresource]`` (``get:secrets``, ``create:pods/exec``; ``verb:<path>`` for
non-resource URLs such as ``/healthz``); resource ``namespace/resource/name`` from
``objectRef`` (the request URI when there is none); outcome from ``responseStatus.code``
(below 400 success, else failure, unknown when absent); source IP the first of
``sourceIPs``; time ``stageTimestamp`` (else ``requestReceivedTimestamp``); ``event_id`` the
``auditID``. The API server writes one record per stage of a request; only the final stages
(``ResponseComplete``, ``Panic``) are events here, so a request is counted once, except
``pods/exec``, ``pods/attach`` and ``pods/portforward``: an upgraded connection is logged at
``ResponseStarted`` only while it is open, so these are kept once per ``auditID`` at the
latest stage logged. ``command`` holds an exec's command (its ``command=`` parameters);
``user_kind`` is ``anonymous`` for ``system:anonymous``. RBAC objects (roles, bindings,
service accounts) are ECS category ``iam``, the rest ``api``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson

from analyzer.sources._base import MAX_DOCUMENT_BYTES, ReadResult, Rejected, empty_frame
from analyzer.sources.generic import json_records, json_stream, read_bytes, rows_to_frame

__all__ = ["FORMAT", "OPTIONS", "read", "read_chunks", "sniff"]

FORMAT = "k8s"
#: The :class:`~analyzer.sources.options.ReaderOptions` :func:`read` takes.
OPTIONS: frozenset[str] = frozenset({"stages"})

_FINAL_STAGES = ("ResponseComplete", "Panic")
#: Subresources that upgrade the connection (SPDY / WebSocket): the API server logs them at
#: ResponseStarted and, for a session still open when the log is read, at no later stage.
_STREAMING = frozenset({"exec", "attach", "portforward"})
#: Principals no one authenticated as (``--anonymous-auth``): their own user_kind.
_ANONYMOUS = frozenset({"system:anonymous"})
_IAM_RESOURCES = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings",
                            "serviceaccounts", "certificatesigningrequests", "tokenreviews",
                            "subjectaccessreviews", "selfsubjectaccessreviews"})


def sniff(head: bytes) -> bool:
    """True if the first record is a Kubernetes audit Event (or EventList), on one line or
    pretty-printed over several."""
    first = head.lstrip().split(b"\n", 1)[0]
    try:
        doc = orjson.loads(first)
    except orjson.JSONDecodeError:
        # a pretty-printed object: its opening lines name the kind and API version
        return first.strip() == b"{" and re.search(rb'"kind"\s*:\s*"Event(?:List)?"', head) \
            is not None and re.search(rb'"apiVersion"\s*:\s*"audit\.k8s\.io/', head) is not None
    return isinstance(doc, dict) and doc.get("kind") in ("Event", "EventList") \
        and str(doc.get("apiVersion", "")).startswith("audit.k8s.io/")


def read(path: str | os.PathLike[str], *,
         stages: Collection[str] = _FINAL_STAGES) -> ReadResult:
    """Read a Kubernetes audit log (JSON lines or pretty-printed objects, plain or gzip).

    Parameters
    ----------
    path
        The audit log the API server writes with ``--audit-log-path`` (one Event a line), or
        what a webhook receives (``EventList`` objects, whose ``items`` are read).
    stages
        The stages that count as events. Streaming requests (``pods/exec``, ``pods/attach``,
        ``pods/portforward``) count at any stage: an upgraded connection is logged at
        ``ResponseStarted`` only. Other records are counted in ``skipped`` by stage.

    Returns
    -------
    ReadResult
        One row per request. A line that is not a JSON object, or has no verb or no readable
        time, is rejected with its line number; an object of another kind (not an audit
        ``Event``) is counted in ``skipped``.
    """
    # run to the end (one piece): the file closes there, not when the generator is collected
    (result,) = read_chunks(path, rows=None, stages=stages)
    return result


def read_chunks(path: str | os.PathLike[str], *, rows: int | None,
                stages: Collection[str] = _FINAL_STAGES) -> Iterator[ReadResult]:
    """:func:`read` in pieces of about ``rows`` events (``None``: one piece, the whole
    file), in the file's order, each with its own accounting; together they hold what a
    whole read holds, rejected lines numbered in the file.

    JSON lines (and objects pretty-printed over lines) are read in blocks, never whole
    (:func:`~analyzer.sources.generic.json_stream`); a JSON array document is one value and
    is read whole. A streaming request (``pods/exec``, ...) logged at a stage that does not
    count holds its row open: a later stage of it replaces that row in place, maybe pieces
    later. So a file is scanned once first (parsed, not mapped, except those requests): the
    last record of each request still open at a cut is then the row where it started. The
    ``auditID`` of the streaming requests that counted are carried from piece to piece (a
    later stage of them is skipped). Memory holds a piece, those requests' last rows and
    the ids, never the file.
    """
    where = str(Path(path))
    ahead: dict[tuple[int, int], dict[str, Any]] = {}
    if rows is not None:
        scan = _Piece(where, stages, ahead, scanning=True)
        for _ in _pieces(json_stream(path, scan.rejected, rows=rows), scan, rows):
            pass
    piece = _Piece(where, stages, ahead)
    if rows is None:
        records = json_records(where, read_bytes(path, max_line=MAX_DOCUMENT_BYTES)[1],
                               piece.rejected)
    else:
        records = json_stream(path, piece.rejected, rows=rows)
    yield from _pieces(records, piece, rows)


def _pieces(records: Iterator[tuple[int, dict[str, Any]]], piece: _Piece, rows: int | None
            ) -> Iterator[ReadResult]:
    """``piece``'s results, cut after ``rows`` rows (``None``: at the end only), between
    lines (the rejects of a line stay together)."""
    last, ordinal = None, 0
    for number, doc in _events(records):
        if rows is not None and len(piece.rows) >= rows and number != last:
            yield piece.result()
        ordinal = ordinal + 1 if number == last else 0
        piece.take(number, ordinal, doc)
        last = number
    yield piece.result(end=True)


class _Piece:
    """The rows of the records taken since the last :meth:`result`, rejects, skips by why
    and stage, records seen. ``rejected`` is also where the JSON reader sets lines aside.

    A streaming request outside ``stages`` is kept once per ``auditID``, at the latest stage
    logged for it: a later record of the same request replaces the earlier one, which is
    then counted as skipped like any other stage. ``ahead`` holds the last row of each such
    request still open at a cut, by where it started (line, item): filled by a scan
    (``scanning``: rows are counted, not mapped), read by the pieces after it.
    """

    def __init__(self, where: str, stages: Collection[str],
                 ahead: dict[tuple[int, int], dict[str, Any]], *,
                 scanning: bool = False) -> None:
        self.where, self.stages, self.ahead, self.scanning = where, stages, ahead, scanning
        self.rejected: list[Rejected] = []
        self.rows: list[dict[str, Any]] = []  # ({} for a row a scan only counts)
        self.own: list[Rejected] = []
        self.later: list[Rejected] = []  # of rows given before their lines' piece
        self.skipped: dict[str, dict[str, int]] = {}
        #: auditID -> (row index, -1 once given or if its last row came from ``ahead``;
        #: stage; where it started)
        self.provisional: dict[str, tuple[int, str, tuple[int, int]]] = {}
        self.final: set[str] = set()  # streaming requests counted (kept across pieces)
        self.seen = 0
        self.line = 0  # the last line taken

    def _skip(self, why: str, detail: str) -> None:
        counts = self.skipped.setdefault(why, {})
        counts[detail] = counts.get(detail, 0) + 1

    def take(self, number: int, ordinal: int, doc: dict[str, Any]) -> None:
        """One record (item ``ordinal`` of line ``number``): a row, a reject or a skip."""
        self.seen += 1
        self.line = number
        kind = doc.get("kind", "Event")
        if kind != "Event":
            self._skip("not an audit Event", f"kind {kind!r:.40}")
            return
        stage = str(doc.get("stage") or "")
        counted = not stage or stage in self.stages
        streaming = _is_streaming(doc)
        audit_id = str(doc.get("auditID") or "")
        if not counted and (not streaming or audit_id in self.final):
            self._skip("other stage", stage[:40])
            return
        verb = doc.get("verb")
        if not isinstance(verb, str) or not verb:
            self.own.append(Rejected(self.where, number, "verb: missing",
                                     orjson.dumps(doc)[:4096]))
            return
        row = {} if self.scanning and not streaming else {**_row(doc, verb), "line": number}
        earlier = self.provisional.pop(audit_id, None) if streaming and audit_id else None
        if earlier is not None:  # the same streaming request, logged again at a later stage
            index, start = earlier[0], earlier[2]
            self._skip("other stage", earlier[1][:40])
            if index >= 0:
                self.rows[index] = row
            elif self.scanning:  # it started before a cut: its row there is this one
                self.ahead[start] = row
        else:
            start = (number, ordinal)
            last = None if self.scanning else self.ahead.pop(start, None)
            index = len(self.rows) if last is None else -1
            self.rows.append(row if last is None else last)
        if streaming and audit_id:
            if counted:
                self.final.add(audit_id)
            else:
                self.provisional[audit_id] = (index, stage, start)

    def result(self, *, end: bool = False) -> ReadResult:
        """What was taken since the last result, as one; then start again (``final`` and
        the open requests stay). A row given before its line's piece (the last stage of a
        request that started here) is set aside in the piece of its line."""
        self.provisional = {k: (-1, *v[1:]) for k, v in self.provisional.items()}
        if self.scanning:
            self.rejected.clear()
            self.rows, self.own = [], []
            return ReadResult(empty_frame())
        records = self.seen + len(self.rejected)
        rejected = [*self.rejected, *self.own]
        self.rejected.clear()  # (in place: the JSON reader holds this list)
        timed: list[Rejected] = []  # rows whose time cannot be read
        frame = rows_to_frame(self.rows, ("user", "action", "outcome", "source_ip",
                                          "resource", "category", "message", "event_id"),
                              self.where, timed, extra=("user_kind", "command"))
        timed += self.later
        self.later = [] if end else [r for r in timed if r.line > self.line]
        rejected += [r for r in timed if end or r.line <= self.line]
        result = ReadResult(frame, tuple(sorted(rejected, key=lambda r: r.line)),
                            records=records, skipped=self.skipped)
        self.rows, self.own, self.skipped, self.seen = [], [], {}, 0
        return result


def _events(records: Iterator[tuple[int, dict[str, Any]]]
            ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each record, with the ``items`` of an ``EventList`` (a webhook batch) taken out."""
    for number, doc in records:
        items = doc.get("items")
        if doc.get("kind") == "EventList" and isinstance(items, list):
            for item in items:
                yield number, item if isinstance(item, dict) else {"kind": type(item).__name__}
        else:
            yield number, doc


def _is_streaming(doc: Mapping[str, Any]) -> bool:
    ref = doc.get("objectRef")
    return isinstance(ref, Mapping) and ref.get("resource") == "pods" \
        and ref.get("subresource") in _STREAMING


def _command(uri: str) -> str:
    """The command of a ``pods/exec`` request: its ``command=`` parameters, in order."""
    query = uri.partition("?")[2]
    return " ".join(value for key, value in parse_qsl(query, keep_blank_values=True)
                    if key == "command")


def _row(doc: Mapping[str, Any], verb: str) -> dict[str, Any]:
    user, ref, status = (value if isinstance(value := doc.get(key), Mapping) else {}
                         for key in ("user", "objectRef", "responseStatus"))
    uri = str(doc.get("requestURI") or "")
    kind = str(ref.get("resource") or "")
    if ref.get("subresource"):
        kind += "/" + str(ref["subresource"])
    action = f"{verb}:{kind or uri.split('?', 1)[0]}"
    parts = [str(ref[k]) for k in ("namespace", "resource", "name") if ref.get(k)]
    if ref.get("subresource"):
        parts.append(str(ref["subresource"]))
    resource = "/".join(parts) if parts else uri.split("?", 1)[0]
    code = status.get("code")
    outcome = ("success" if code < 400 else "failure") if isinstance(code, int) else "unknown"
    ips = doc.get("sourceIPs")
    source_ip = str(ips[0]) if isinstance(ips, list) and ips else ""
    username = str(user.get("username") or "")
    impersonated = doc.get("impersonatedUser")
    detail = f" as {impersonated.get('username')}" \
        if isinstance(impersonated, Mapping) and impersonated.get("username") else ""
    reason = status.get("reason") or status.get("message") or ""
    message = f"{verb} {uri} by {username or '-'}{detail} -> {code if code else '-'}"
    if reason:
        message += f" {reason}"
    if doc.get("userAgent"):
        message += f" ({doc['userAgent']})"
    command = _command(uri) if ref.get("subresource") == "exec" else ""
    if command:
        message += f" command: {command}"
    return {
        "timestamp": doc.get("stageTimestamp") or doc.get("requestReceivedTimestamp"),
        "user": username, "action": action, "outcome": outcome, "source_ip": source_ip,
        "resource": resource,
        "category": "iam" if str(ref.get("resource")) in _IAM_RESOURCES else "api",
        "message": message, "event_id": doc.get("auditID"),
        "user_kind": "anonymous" if username in _ANONYMOUS else "", "command": command,
    }
