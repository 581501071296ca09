"""Windows Security events exported as JSON (Winlogbeat, NXLog, Get-WinEvent) -> frame.

Each event is one JSON object a line (or the file is one JSON array). The event data fields
(``TargetUserName``, ``IpAddress``, ``LogonType``, ``Status``, ...) are looked up wherever the
exporter put them: at the top level (NXLog, the OTRF/Mordor datasets), under
``winlog.event_data`` (Winlogbeat) or under ``EventData`` / ``event_data``.

Mapping (the full table is in ``docs/formats.md``): logon 4624 -> ``login`` success, 4625 ->
``login`` failure, 4634/4647 -> ``logout``, 4648 -> ``login.explicit``, 4672 ->
``login.privileged``; Kerberos 4768 -> ``kerberos.tgt``, 4769 -> ``kerberos.service_ticket``,
4771 -> ``kerberos.preauth`` (failure); NTLM 4776 -> ``ntlm.validate``; account and group
changes 4720-4758 -> ``user.create``, ``password.reset``, ``group.member_add``, ... with the
acting account as user and the changed account or group as resource. For Kerberos and NTLM
the outcome comes from ``Status`` (``0x0`` is success).

The requesting workstation (``WorkstationName`` / ``Workstation``) and the logon type are kept
in two extra columns, ``source_host`` and ``logon_type``, beside the contract's columns; the
IP goes to ``source_ip`` (IPv4-mapped IPv6 ``::ffff:a.b.c.d`` as ``a.b.c.d``).

Security event logs are not large enough to need the column-wise treatment of the sshd and
CloudTrail readers; each record is mapped by a short Python function.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import orjson
import pandas as pd

from analyzer.sources._base import ReadResult, Rejected
from analyzer.sources.generic import dig, json_records, read_bytes, rows_to_frame

__all__ = ["ACTIONS", "FORMAT", "read", "sniff"]

logger = logging.getLogger(__name__)

FORMAT = "windows"

_LOGON = "authentication"
#: Event ID -> (action, ECS category, whose account is ``user``: "target" or "subject").
ACTIONS: Mapping[int, tuple[str, str, str]] = {
    4624: ("login", _LOGON, "target"),
    4625: ("login", _LOGON, "target"),
    4634: ("logout", _LOGON, "target"),
    4647: ("logout", _LOGON, "target"),
    4648: ("login.explicit", _LOGON, "subject"),
    4672: ("login.privileged", "iam", "subject"),
    4768: ("kerberos.tgt", _LOGON, "target"),
    4769: ("kerberos.service_ticket", _LOGON, "target"),
    4771: ("kerberos.preauth", _LOGON, "target"),
    4776: ("ntlm.validate", _LOGON, "target"),
    4720: ("user.create", "iam", "subject"),
    4722: ("user.enable", "iam", "subject"),
    4723: ("password.change", "iam", "subject"),
    4724: ("password.reset", "iam", "subject"),
    4725: ("user.disable", "iam", "subject"),
    4726: ("user.delete", "iam", "subject"),
    4738: ("user.change", "iam", "subject"),
    4740: ("user.lockout", "iam", "subject"),
    4741: ("computer.create", "iam", "subject"),
    4742: ("computer.change", "iam", "subject"),
    4743: ("computer.delete", "iam", "subject"),
    **{i: ("group.create", "iam", "subject") for i in (4727, 4731, 4744, 4749, 4754)},
    **{i: ("group.change", "iam", "subject") for i in (4735, 4737, 4745, 4750, 4755)},
    **{i: ("group.member_add", "iam", "subject") for i in (4728, 4732, 4746, 4751, 4756)},
    **{i: ("group.member_remove", "iam", "subject")
       for i in (4729, 4733, 4747, 4752, 4757)},
    **{i: ("group.delete", "iam", "subject") for i in (4730, 4734, 4748, 4753, 4758)},
}
#: Events whose outcome is in ``Status`` rather than in the event id.
_STATUS_OUTCOME = frozenset({4768, 4769, 4776})
_ALWAYS_FAILED = frozenset({4625, 4771})
_EMPTY = {"", "-", "::", "0.0.0.0", None}  # noqa: S104 (values meaning "no address")


def sniff(head: bytes) -> bool:
    """True if the first JSON line carries a Windows event id and event data."""
    first = head.lstrip().lstrip(b"[").lstrip().split(b"\n", 1)[0].rstrip().rstrip(b",")
    try:
        doc = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict):
        return False
    has_id = _event_id(doc) is not None
    windowsy = "winlog" in doc or "EventData" in doc or "SourceName" in doc \
        or str(doc.get("Channel", "")).lower() == "security"
    return has_id and windowsy


def read(path: str | os.PathLike[str], *, all_events: bool = False) -> ReadResult:
    """Read Windows Security events (JSON lines or a JSON array, plain or gzip).

    Parameters
    ----------
    path
        The exported events.
    all_events
        Also keep event ids outside the mapped set, as action ``windows.<id>`` with the
        outcome of their audit keyword. Off by default: they are counted and skipped.

    Returns
    -------
    ReadResult
        One row per mapped event. A line that is not a JSON object, or that has no event id
        or no readable time, is rejected with its line number.
    """
    where, data = read_bytes(path)
    rejected: list[Rejected] = []
    rows: list[dict[str, Any]] = []
    skipped = 0
    for number, doc in json_records(where, data, rejected):
        event_id = _event_id(doc)
        if event_id is None:
            rejected.append(Rejected(where, number, "no EventID", orjson.dumps(doc)[:4096]))
            continue
        if event_id not in ACTIONS and not all_events:
            skipped += 1
            continue
        row = _row(doc, event_id)
        if row["timestamp"] is None:
            rejected.append(Rejected(where, number, "no readable time",
                                     orjson.dumps(doc)[:4096]))
            continue
        row["line"] = number
        rows.append(row)
    if skipped:
        logger.info("%s: %d events with unmapped ids were skipped", where, skipped)
    return ReadResult(_frame(rows, where, rejected), tuple(sorted(rejected,
                                                                  key=lambda r: r.line)))


def _field(doc: Mapping[str, Any], name: str) -> Any:
    for path in ((name,), ("winlog", "event_data", name), ("EventData", name),
                 ("event_data", name)):
        value = dig(doc, path)
        if value is not None:
            return value
    return None


def _text(doc: Mapping[str, Any], *names: str) -> str:
    for name in names:
        value = _field(doc, name)
        if value not in _EMPTY:
            return str(value)
    return ""


def _event_id(doc: Mapping[str, Any]) -> int | None:
    for path in (("EventID",), ("winlog", "event_id"), ("event", "code"), ("Id",),
                 ("System", "EventID")):
        value = dig(doc, path)
        if isinstance(value, Mapping):  # the XML rendering: {"#text": "4624", ...}
            value = value.get("#text") or value.get("value")
        try:
            return int(value)
        except (TypeError, ValueError):
            continue
    return None


def _row(doc: Mapping[str, Any], event_id: int) -> dict[str, Any]:
    action, category, whose = ACTIONS.get(event_id, (f"windows.{event_id}", "", "subject"))
    target = _account(_text(doc, "TargetUserName"))
    subject = _account(_text(doc, "SubjectUserName"))
    user = (target or subject) if whose == "target" else (subject or target)
    status = _text(doc, "Status").lower()
    failure_keyword = "failure" in (str(doc.get("EventType", "")) + " "
                                    + str(dig(doc, ("winlog", "keywords")) or "")).lower()
    if event_id in _ALWAYS_FAILED:
        outcome = "failure"
    elif event_id in _STATUS_OUTCOME and status:
        outcome = "success" if status in ("0x0", "0") else "failure"
    elif failure_keyword:
        outcome = "failure"
    else:
        outcome = "success"
    host = _text(doc, "Hostname", "Computer") or str(dig(doc, ("winlog", "computer_name"))
                                                    or "")
    host_short = host.split(".", 1)[0]
    if event_id in (4769,):
        resource = _text(doc, "ServiceName")
    elif event_id == 4648:
        resource = _text(doc, "TargetServerName") or target
    elif category == "iam" and event_id != 4672:
        resource = target
    else:
        resource = host_short
    ip = _text(doc, "IpAddress")
    if ip.lower().startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    logon_type = _text(doc, "LogonType")
    details = " ".join(f"{k}={v}" for k, v in (
        ("LogonType", logon_type), ("Status", status), ("SubStatus", _text(doc, "SubStatus")),
        ("Workstation", _text(doc, "WorkstationName", "Workstation")),
        ("Member", _text(doc, "MemberName")), ("Target", target),
    ) if v)
    title = str(doc.get("Message") or "").split("\r", 1)[0].split("\n", 1)[0]
    timestamp = doc.get("@timestamp") or dig(doc, ("TimeCreated", "SystemTime")) \
        or doc.get("TimeCreated") or doc.get("EventTime")
    return {
        "timestamp": timestamp, "user": user, "action": action, "outcome": outcome,
        "source_ip": "" if ip in _EMPTY else ip, "resource": resource,
        "host": host or None, "category": category or None,
        "session": _text(doc, "TargetLogonId", "SubjectLogonId") or None,
        "message": f"{event_id} {title} {details}".replace("  ", " ").strip(),
        "source_host": _text(doc, "WorkstationName", "Workstation") or None,
        "logon_type": logon_type or None, "event_id": str(_field(doc, "RecordNumber") or "")
        or None,
    }


def _account(name: str) -> str:
    """``alice@CORP.LOCAL`` (Kerberos) and ``CORP\\alice`` both name ``alice``."""
    name = name.split("@", 1)[0] if "@" in name else name
    return name.rsplit("\\", 1)[-1]


def _frame(rows: list[dict[str, Any]], where: str, rejected: list[Rejected]) -> pd.DataFrame:
    # source_host (WorkstationName) and logon_type ride along beyond the contract
    return rows_to_frame(rows, ("user", "action", "outcome", "source_ip", "resource", "host",
                                "category", "session", "message", "event_id"), where, rejected,
                         extra=("source_host", "logon_type"))
