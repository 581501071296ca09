"""Kubernetes audit logs (``audit.k8s.io/v1`` Event, one JSON object a line) -> frame.

Mapping (the full table is in ``docs/formats.md``): user ``user.username``; action
``verb:resource[/subresource]`` (``get:secrets``, ``create:pods/exec``; ``verb:<path>`` for
non-resource URLs such as ``/healthz``); resource ``namespace/resource/name`` from
``objectRef`` (the request URI when there is none); outcome from ``responseStatus.code``
(below 400 success, else failure, unknown when absent); source IP the first of
``sourceIPs``; time ``stageTimestamp`` (else ``requestReceivedTimestamp``); ``event_id`` the
``auditID``. The API server writes one record per stage of a request; only the final stages
(``ResponseComplete``, ``Panic``) are events here, so a request is counted once. RBAC
objects (roles, bindings, service accounts) are ECS category ``iam``, the rest ``api``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from typing import Any

import orjson

from analyzer.sources._base import ReadResult, Rejected
from analyzer.sources.generic import json_records, read_bytes, rows_to_frame

__all__ = ["FORMAT", "read", "sniff"]

logger = logging.getLogger(__name__)

FORMAT = "k8s"

_FINAL_STAGES = ("ResponseComplete", "Panic")
_IAM_RESOURCES = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings",
                            "serviceaccounts", "certificatesigningrequests", "tokenreviews",
                            "subjectaccessreviews", "selfsubjectaccessreviews"})


def sniff(head: bytes) -> bool:
    """True if the first line is a Kubernetes audit Event."""
    first = head.lstrip().split(b"\n", 1)[0]
    try:
        doc = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == "Event" \
        and str(doc.get("apiVersion", "")).startswith("audit.k8s.io/")


def read(path: str | os.PathLike[str], *,
         stages: Collection[str] = _FINAL_STAGES) -> ReadResult:
    """Read a Kubernetes audit log (JSON lines, plain or gzip).

    Parameters
    ----------
    path
        The audit log the API server writes with ``--audit-log-path``.
    stages
        The stages that count as events; the others are skipped (and counted in the log).

    Returns
    -------
    ReadResult
        One row per request. A line that is not a JSON object, or has no verb or no readable
        time, is rejected with its line number.
    """
    where, data = read_bytes(path)
    rejected: list[Rejected] = []
    rows: list[dict[str, Any]] = []
    skipped = 0
    for number, doc in json_records(where, data, rejected):
        stage = doc.get("stage")
        if stage is not None and stage not in stages:
            skipped += 1
            continue
        verb = doc.get("verb")
        if not isinstance(verb, str) or not verb:
            rejected.append(Rejected(where, number, "verb: missing", orjson.dumps(doc)[:4096]))
            continue
        row = _row(doc, verb)
        row["line"] = number
        rows.append(row)
    if skipped:
        logger.info("%s: %d records of other stages were skipped", where, skipped)
    frame = rows_to_frame(rows, ("user", "action", "outcome", "source_ip", "resource",
                                 "category", "message", "event_id"), where, rejected)
    return ReadResult(frame, tuple(sorted(rejected, key=lambda r: r.line)))


def _row(doc: Mapping[str, Any], verb: str) -> dict[str, Any]:
    user = doc.get("user") if isinstance(doc.get("user"), Mapping) else {}
    ref = doc.get("objectRef") if isinstance(doc.get("objectRef"), Mapping) else {}
    status = doc.get("responseStatus") if isinstance(doc.get("responseStatus"), Mapping) \
        else {}
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
    return {
        "timestamp": doc.get("stageTimestamp") or doc.get("requestReceivedTimestamp"),
        "user": username, "action": action, "outcome": outcome, "source_ip": source_ip,
        "resource": resource,
        "category": "iam" if str(ref.get("resource")) in _IAM_RESOURCES else "api",
        "message": message, "event_id": doc.get("auditID"),
    }
