"""Windows event logs exported as JSON (Winlogbeat, NXLog, Get-WinEvent) -> frame.

Each event is one JSON object a line (or the file is one JSON array). The event data fields
(``TargetUserName``, ``IpAddress``, ``LogonType``, ``Status``, ...) are looked up wherever the
exporter put them: at the top level (NXLog, the OTRF/Mordor datasets), under
``winlog.event_data`` / ``winlog.user_data`` (Winlogbeat) or under ``EventData`` /
``event_data``.

What is mapped is keyed by channel, because event ids collide between channels (System 104
is a log cleared, Sysmon 10 a process access, Security 4624 a logon): the Security events an
attack leaves (logons, Kerberos and NTLM, process creation, services, scheduled tasks, audit
policy, account and group changes, directory and SAM access, object and share access, log
cleared), System 7045 and 104, and Sysmon 10. :data:`ACTIONS` is the table; ``docs/formats.md``
describes it column by column. The acting account is ``user`` (the subject for most events,
the account logging on for logons and Kerberos/NTLM), what it acted on is ``resource``.

Records outside the table are counted in :attr:`ReadResult.skipped` (Security ids under
``"unmapped event id"``, other channels under ``"other channel"``), or kept as action
``windows.<id>`` (Security) / ``<channel>.<id>`` (``sysmon.1``, ``system.7040``,
``powershell.4104``) with ``all_events=True``.

Extra columns beside the contract's: ``source_host`` (the requesting workstation),
``logon_type``, ``command_line`` (4688), ``object_properties`` (4662), ``service_file``
(4697, 7045), ``ticket_encryption`` and ``preauth_type`` (4768, 4769: ``0x17`` is RC4, what
Rubeus and Mimikatz ask for with an NTLM hash), ``user_kind`` (``machine`` for ``NAME$``,
``anonymous`` for ANONYMOUS LOGON) and
``source_scope`` (``local`` when the address is loopback, link-local or ``-``: the machine
itself, not an outside source; ``source_ip`` is then empty).

Event logs are not large enough to need the column-wise treatment of the sshd and CloudTrail
readers; each record is mapped by a short Python function.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from analyzer.sources._base import MAX_DOCUMENT_BYTES, ReadResult, Rejected
from analyzer.sources.generic import (
    dig,
    json_records,
    json_stream,
    read_bytes,
    rows_to_frame,
)

__all__ = ["ACTIONS", "DCSYNC_RIGHTS", "FORMAT", "OPTIONS", "read", "read_chunks",
           "sniff"]

FORMAT = "windows"
#: The :class:`~analyzer.sources.options.ReaderOptions` :func:`read` takes.
OPTIONS: frozenset[str] = frozenset({"all_events"})

SECURITY = "security"
SYSTEM = "system"
SYSMON = "microsoft-windows-sysmon/operational"

_AUTH, _IAM, _CONFIG, _PROCESS, _FILE = ("authentication", "iam", "configuration", "process",
                                         "file")
#: How ``resource`` is found: a field name (first non-empty of several, ``|``-separated),
#: or one of these kinds.
_HOST, _TARGET, _SHARE = "@host", "@target", "@share"

#: (channel, event id) -> (action, ECS category, whose account is ``user``, resource).
#: ``user`` is the target account (``TargetUserName``) for "target", else the subject
#: (``SubjectUserName``); "source" is Sysmon's ``SourceUser``.
ACTIONS: Mapping[tuple[str, int], tuple[str, str, str, str]] = {
    (SECURITY, 4624): ("login", _AUTH, "target", _HOST),
    (SECURITY, 4625): ("login", _AUTH, "target", _HOST),
    (SECURITY, 4634): ("logout", _AUTH, "target", _HOST),
    (SECURITY, 4647): ("logout", _AUTH, "target", _HOST),
    (SECURITY, 4648): ("login.explicit", _AUTH, "subject", "TargetServerName|@target"),
    (SECURITY, 4672): ("login.privileged", _IAM, "subject", _HOST),
    (SECURITY, 4768): ("kerberos.tgt", _AUTH, "target", _HOST),
    (SECURITY, 4769): ("kerberos.service_ticket", _AUTH, "target", "ServiceName"),
    (SECURITY, 4771): ("kerberos.preauth", _AUTH, "target", _HOST),
    (SECURITY, 4776): ("ntlm.validate", _AUTH, "target", _HOST),
    (SECURITY, 4661): ("sam.object_access", _IAM, "subject", "ObjectName"),
    (SECURITY, 4662): ("directory.object_access", _IAM, "subject", "ObjectName"),
    (SECURITY, 4656): ("object.access", _FILE, "subject", "ObjectName"),
    (SECURITY, 4663): ("object.access", _FILE, "subject", "ObjectName"),
    (SECURITY, 4688): ("process.start", _PROCESS, "subject", "NewProcessName"),
    (SECURITY, 4697): ("service.install", _CONFIG, "subject", "ServiceName"),
    (SECURITY, 4698): ("task.create", _CONFIG, "subject", "TaskName"),
    (SECURITY, 4699): ("task.delete", _CONFIG, "subject", "TaskName"),
    (SECURITY, 4700): ("task.enable", _CONFIG, "subject", "TaskName"),
    (SECURITY, 4701): ("task.disable", _CONFIG, "subject", "TaskName"),
    (SECURITY, 4702): ("task.update", _CONFIG, "subject", "TaskName"),
    (SECURITY, 4719): ("audit_policy.change", _CONFIG, "subject",
                       "SubcategoryGuid|SubcategoryId"),
    (SECURITY, 1102): ("log.clear", _CONFIG, "subject", "@host"),
    (SECURITY, 5140): ("share.access", _FILE, "subject", "ShareName"),
    (SECURITY, 5145): ("share.object_access", _FILE, "subject", _SHARE),
    (SECURITY, 4720): ("user.create", _IAM, "subject", _TARGET),
    (SECURITY, 4722): ("user.enable", _IAM, "subject", _TARGET),
    (SECURITY, 4723): ("password.change", _IAM, "subject", _TARGET),
    (SECURITY, 4724): ("password.reset", _IAM, "subject", _TARGET),
    (SECURITY, 4725): ("user.disable", _IAM, "subject", _TARGET),
    (SECURITY, 4726): ("user.delete", _IAM, "subject", _TARGET),
    (SECURITY, 4738): ("user.change", _IAM, "subject", _TARGET),
    (SECURITY, 4740): ("user.lockout", _IAM, "subject", _TARGET),
    (SECURITY, 4741): ("computer.create", _IAM, "subject", _TARGET),
    (SECURITY, 4742): ("computer.change", _IAM, "subject", _TARGET),
    (SECURITY, 4743): ("computer.delete", _IAM, "subject", _TARGET),
    **{(SECURITY, i): ("group.create", _IAM, "subject", _TARGET)
       for i in (4727, 4731, 4744, 4749, 4754)},
    **{(SECURITY, i): ("group.change", _IAM, "subject", _TARGET)
       for i in (4735, 4737, 4745, 4750, 4755)},
    **{(SECURITY, i): ("group.member_add", _IAM, "subject", _TARGET)
       for i in (4728, 4732, 4746, 4751, 4756)},
    **{(SECURITY, i): ("group.member_remove", _IAM, "subject", _TARGET)
       for i in (4729, 4733, 4747, 4752, 4757)},
    **{(SECURITY, i): ("group.delete", _IAM, "subject", _TARGET)
       for i in (4730, 4734, 4748, 4753, 4758)},
    (SYSTEM, 7045): ("service.install", _CONFIG, "subject", "ServiceName"),
    (SYSTEM, 104): ("log.clear", _CONFIG, "subject", "@host"),
    (SYSMON, 10): ("process.access", _PROCESS, "source", "TargetImage"),
}

#: The DS-Replication-Get-Changes, -Get-Changes-All and -Get-Changes-In-Filtered-Set rights:
#: a 4662 naming one of them is a directory replication request (what DCSync sends).
DCSYNC_RIGHTS = frozenset({"1131f6aa-9c07-11d1-f79f-00c04fc2dcd2",
                           "1131f6ad-9c07-11d1-f79f-00c04fc2dcd2",
                           "89e95b76-444d-4c62-991a-0facbeda640c"})

#: Events whose outcome is in ``Status`` rather than in the event id.
_STATUS_OUTCOME = frozenset({4768, 4769, 4776})
_ALWAYS_FAILED = frozenset({4625, 4771})
#: The "Audit Failure" bit of the Security log's keywords (0x8010000000000000).
_AUDIT_FAILURE_BIT = 0x10000000000000
_EMPTY = frozenset({"", "-", "::", "0.0.0.0", None})  # noqa: S104 (values meaning "no address")
#: What ``4656``/``4663`` touch, by ``ObjectType``; anything else is a file-like object.
_OBJECT_CATEGORY = {"Process": _PROCESS, "Key": "registry"}
#: 4719's ``AuditPolicyChanges`` codes, so the message says what was turned off.
_POLICY_CHANGES = {"%%8448": "success removed", "%%8449": "success added",
                   "%%8450": "failure removed", "%%8451": "failure added"}
#: Kerberos events whose ``TicketEncryptionType`` and ``PreAuthType`` are kept.
_KERBEROS_TICKETS = frozenset({4768, 4769})
_MAX_DETAIL = 200  # characters of one field in ``message``; the full value has its column


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
    """Read Windows events (JSON lines or a JSON array, plain or gzip).

    Parameters
    ----------
    path
        The exported events, of any channels (Security, System, Sysmon, PowerShell, ...).
    all_events
        Also keep records outside :data:`ACTIONS`, as action ``windows.<id>`` (Security)
        or ``<channel>.<id>`` (``sysmon.1``, ``system.7040``). Off by default: they are
        counted in ``skipped`` by event id or channel.

    Returns
    -------
    ReadResult
        One row per mapped event. A line that is not a JSON object, or that has no event id
        or no readable time, is rejected with its line number.
    """
    # run to the end (one piece): the file closes there, not when the generator is collected
    (result,) = read_chunks(path, rows=None, all_events=all_events)
    return result


def read_chunks(path: str | os.PathLike[str], *, rows: int | None,
                all_events: bool = False) -> Iterator[ReadResult]:
    """:func:`read` in pieces of about ``rows`` events (``None``: one piece, the whole
    file), in the file's order, each with its own accounting: a record is judged on its
    own, so the pieces hold what a whole read holds, rejected lines numbered in the file.

    JSON lines (and objects pretty-printed over lines) are read in blocks, never whole
    (:func:`~analyzer.sources.generic.json_stream`); a JSON array document is one value and
    is read whole, then handed out in pieces all the same.
    """
    where = str(Path(path))
    piece = _Piece(where, all_events)
    if rows is None:
        records = json_records(where, read_bytes(path, max_line=MAX_DOCUMENT_BYTES)[1],
                               piece.rejected)
    else:
        records = json_stream(path, piece.rejected, rows=rows)
    last = None
    for number, doc in records:
        if rows is not None and len(piece.rows) >= rows and number != last:
            yield piece.result()  # cut between lines: the rejects of a line stay together
        piece.take(number, doc)
        last = number
    yield piece.result()


class _Piece:
    """The events of the records taken since the last :meth:`result`, and their accounting.
    ``rejected`` is also where the JSON reader sets lines aside."""

    def __init__(self, where: str, all_events: bool) -> None:
        self.where, self.all_events = where, all_events
        self.rejected: list[Rejected] = []
        self.rows: list[dict[str, Any]] = []
        self.unmapped: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.others: dict[str, int] = {}
        self.seen = self.own = 0  # objects read; of the rejected, those set aside here

    def take(self, number: int, doc: dict[str, Any]) -> None:
        """Map one record (from line ``number``), or count why it is not an event."""
        self.seen += 1
        event_id = _event_id(doc)
        if event_id is None:
            self.own += 1
            self.rejected.append(Rejected(self.where, number, "no EventID",
                                          orjson.dumps(doc)[:4096]))
            return
        written, channel = _channel(doc)
        rule = ACTIONS.get((channel, event_id))
        if rule is None and not self.all_events:
            if channel == SECURITY:
                self.unmapped[str(event_id)] = self.unmapped.get(str(event_id), 0) + 1
            else:
                self.channels[written] = self.channels.get(written, 0) + 1
            return
        if (rule is not None and not self.all_events and (channel, event_id) == (SYSMON, 10)
                and (target := _image_name(doc, "TargetImage")) not in CREDENTIAL_PROCESSES):
            # Sysmon 10 fires for every handle any process opens on another: thousands an
            # hour with no user. Opening the credential store is the evidence; the rest is
            # counted by target (and kept with --all-events).
            self.others[target] = self.others.get(target, 0) + 1
            return
        row = _row(doc, event_id, channel, rule)
        if row["timestamp"] is None:
            self.own += 1
            self.rejected.append(Rejected(self.where, number, "no readable time",
                                          orjson.dumps(doc)[:4096]))
            return
        row["line"] = number
        self.rows.append(row)

    def result(self) -> ReadResult:
        """What was taken since the last result, as one; then start again."""
        skipped = {k: v for k, v in (("unmapped event id", self.unmapped),
                                     ("other channel", self.channels),
                                     ("sysmon 10 on another process", self.others)) if v}
        # the JSON reader's rejects are lines it never handed over
        records = self.seen + len(self.rejected) - self.own
        rejected = list(self.rejected)
        self.rejected.clear()  # (in place: the JSON reader holds this list)
        frame = _frame(self.rows, self.where, rejected)
        result = ReadResult(frame, tuple(sorted(rejected, key=lambda r: r.line)),
                            records=records, skipped=skipped)
        self.rows, self.unmapped, self.channels, self.others = [], {}, {}, {}
        self.seen = self.own = 0
        return result


#: Processes whose memory holds credentials: a handle opened on them (Sysmon 10) is what
#: Mimikatz and its kin leave.
CREDENTIAL_PROCESSES = frozenset({"lsass.exe"})


def _image_name(doc: Mapping[str, Any], field: str) -> str:
    """The executable's file name, lower case (``C:\\Windows\\system32\\lsass.exe`` ->
    ``lsass.exe``)."""
    value = doc.get(field)
    return str(value).replace("/", "\\").rsplit("\\", 1)[-1].lower() if value else ""


def _channel(doc: Mapping[str, Any]) -> tuple[str, str]:
    """The channel as written and as looked up (lower case: OTRF writes both "Security" and
    "security"); a record that names none is a Security record, as plain exports are."""
    written = doc.get("Channel")
    if written is None:
        winlog = doc.get("winlog")
        written = winlog.get("channel") if isinstance(winlog, Mapping) else None
    if not isinstance(written, str) or not written:
        return "Security", SECURITY
    return written, written.lower()


def _event_data(doc: dict[str, Any]) -> Mapping[str, Any]:
    """One flat view of the record's fields: top-level keys win over nested event data."""
    nested = []
    winlog = doc.get("winlog")
    if isinstance(winlog, Mapping):
        nested += [winlog.get("event_data"), winlog.get("user_data")]
    if "EventData" in doc or "event_data" in doc:
        nested += [doc.get("EventData"), doc.get("event_data")]
    parts = [part for part in nested if isinstance(part, Mapping)]
    if not parts:
        return doc  # NXLog and OTRF: everything is already at the top level
    flat: dict[str, Any] = {}
    for part in reversed(parts):
        flat.update(part)
    flat.update(doc)
    return flat


def _text(data: Mapping[str, Any], *names: str) -> str:
    for name in names:
        value = data.get(name)
        if value is None or isinstance(value, (dict, list)):
            continue
        if value not in _EMPTY:
            return str(value)
    return ""


def _event_id(doc: Mapping[str, Any]) -> int | None:
    value = doc.get("EventID")
    if type(value) is int:  # NXLog and OTRF: the common case, read once per record
        return value
    for path in (("EventID",), ("winlog", "event_id"), ("event", "code"), ("Id",),
                 ("System", "EventID")):
        value = dig(doc, path)
        if isinstance(value, Mapping):  # the XML rendering: {"#text": "4624", ...}
            value = value.get("#text") or value.get("value")
        if not isinstance(value, str | int | float):  # None, a list: not an id
            continue
        try:
            return int(value)
        except (TypeError, ValueError):
            continue
    return None


def _row(doc: dict[str, Any], event_id: int, channel: str,
         rule: tuple[str, str, str, str] | None) -> dict[str, Any]:
    data = _event_data(doc)
    if rule is None:
        prefix = "windows" if channel == SECURITY else _short_channel(channel)
        rule = (f"{prefix}.{event_id}", "", "subject", _HOST)
    action, category, whose, where = rule
    target = _account(_text(data, "TargetUserName"))
    if whose == "target":
        user = target or _account(_text(data, "SubjectUserName"))
    elif whose == "source":
        user = _account(_text(data, "SourceUser"))
    else:
        user = _account(_text(data, "SubjectUserName")) or target
    if not user and channel == SYSTEM:  # 7045, 104: who did it is the record's own user
        user = _account(str(dig(doc, ("winlog", "user", "name")) or ""))
    host = _text(data, "Hostname", "Computer") or str(dig(doc, ("winlog", "computer_name"))
                                                     or "")
    resource = _resource(data, where, target, host)
    properties = None
    if event_id == 4662 and channel == SECURITY:
        properties = " ".join(_text(data, "Properties").split()) or None
        if properties and any(right in properties.lower() for right in DCSYNC_RIGHTS):
            action = "directory.replication"
    elif category == _FILE and event_id in (4656, 4663):
        category = _OBJECT_CATEGORY.get(_text(data, "ObjectType"), _FILE)
    ip, scope = _source(data)
    logon_type = _text(data, "LogonType")
    status = _text(data, "Status").lower()
    timestamp = doc.get("@timestamp") or dig(doc, ("TimeCreated", "SystemTime")) \
        or doc.get("TimeCreated") or doc.get("EventTime")
    return {
        "timestamp": timestamp, "user": user, "action": action,
        "outcome": _outcome(doc, event_id, status), "source_ip": ip, "resource": resource,
        "host": host or None, "category": category or None,
        "session": _text(data, "TargetLogonId", "SubjectLogonId") or None,
        "message": _message(doc, data, event_id, status, logon_type, target),
        "source_host": _text(data, "WorkstationName", "Workstation") or None,
        "logon_type": logon_type or None,
        "event_id": str(data.get("RecordNumber") or "") or None,
        "command_line": (_text(data, "CommandLine") or None) if event_id == 4688 else None,
        "object_properties": properties,
        "service_file": (_text(data, "ServiceFileName", "ImagePath") or None)
        if action == "service.install" else None,
        **_kerberos(data, event_id, channel),
        "user_kind": _user_kind(user), "source_scope": scope,
    }


def _kerberos(data: Mapping[str, Any], event_id: int, channel: str) -> dict[str, str | None]:
    """``ticket_encryption`` and ``preauth_type`` of a TGT or service ticket request."""
    if event_id not in _KERBEROS_TICKETS or channel != SECURITY:
        return {"ticket_encryption": None, "preauth_type": None}
    return {"ticket_encryption": _code(_text(data, "TicketEncryptionType")),
            "preauth_type": _code(_text(data, "PreAuthType"), hexadecimal=False)}


def _code(value: str, *, hexadecimal: bool = True) -> str | None:
    """One spelling of a numeric code, whichever the exporter wrote (``0x17``, ``0X17``,
    ``23``): lower-case hex, or decimal when ``hexadecimal`` is off (``PreAuthType`` is
    documented in decimal: ``0`` no pre-authentication, ``2`` encrypted timestamp)."""
    text = value.strip()
    try:
        number = int(text, 16) if text[:2].lower() == "0x" else int(text)
    except ValueError:
        return text or None  # not a number: kept as written, so nothing is lost
    if number < 0:
        number &= 0xFFFFFFFF  # a failed request's 0xffffffff, exported as -1
    return f"0x{number:x}" if hexadecimal else str(number)


def _short_channel(channel: str) -> str:
    """``microsoft-windows-sysmon/operational`` -> ``sysmon``; ``windows powershell`` ->
    ``windows-powershell``: the prefix of kept actions from channels other than Security."""
    name = channel.removeprefix("microsoft-windows-").removesuffix("/operational")
    return name.replace(" ", "-").replace("/", "-")


def _resource(data: Mapping[str, Any], where: str, target: str, host: str) -> str:
    if where == _HOST:
        return host.split(".", 1)[0]
    if where == _TARGET:
        return target
    if where == _SHARE:
        share, relative = _text(data, "ShareName"), _text(data, "RelativeTargetName")
        return f"{share}\\{relative}" if share and relative else share or relative
    for name in where.split("|"):
        if name == _TARGET:
            return target
        value = _text(data, name)
        if value:
            return value
    return ""


def _source(data: Mapping[str, Any]) -> tuple[str, str]:
    """``source_ip`` and ``source_scope``: loopback, link-local and ``-`` are the machine
    itself ("local"), not an outside address."""
    raw = data.get("IpAddress")
    if raw is None:
        return "", ""
    ip = str(raw).strip().lower()
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    if ip in ("-", "::1", "") or ip.startswith("127.") or (
            ip[:3] in ("fe8", "fe9", "fea", "feb") and ":" in ip):
        return "", "local"
    return ("" if ip in _EMPTY else ip), ""


def _outcome(doc: Mapping[str, Any], event_id: int, status: str) -> str:
    if event_id in _ALWAYS_FAILED:
        return "failure"
    if event_id in _STATUS_OUTCOME and status:
        return "success" if status in ("0x0", "0") else "failure"
    if "FAILURE" in str(doc.get("EventType", "")).upper():
        return "failure"
    keywords = doc.get("Keywords")
    if isinstance(keywords, str) and keywords[:2] in ("0x", "0X"):
        try:
            keywords = int(keywords, 16)
        except ValueError:
            keywords = None
    if isinstance(keywords, int) and keywords & _AUDIT_FAILURE_BIT:
        return "failure"
    winlog = doc.get("winlog")
    if isinstance(winlog, Mapping) and "failure" in str(winlog.get("keywords") or "").lower():
        return "failure"
    return "success"


def _message(doc: Mapping[str, Any], data: Mapping[str, Any], event_id: int, status: str,
             logon_type: str, target: str) -> str:
    title = str(doc.get("Message") or "").split("\r", 1)[0].split("\n", 1)[0]
    changes = _text(data, "AuditPolicyChanges")
    details = " ".join(f"{k}={v[:_MAX_DETAIL]}" for k, v in (
        ("LogonType", logon_type), ("Status", status), ("SubStatus", _text(data, "SubStatus")),
        ("Workstation", _text(data, "WorkstationName", "Workstation")),
        ("Member", _text(data, "MemberName")), ("Target", target),
        ("ObjectType", _text(data, "ObjectType")), ("AccessMask", _text(data, "AccessMask")),
        ("Process", _text(data, "ProcessName", "SourceImage")),
        ("GrantedAccess", _text(data, "GrantedAccess")),
        ("PolicyChange", ", ".join(_POLICY_CHANGES.get(c, c) for c in changes.split(", "))
         if changes else ""),
        ("ServiceAccount", _text(data, "ServiceAccount")),
    ) if v)
    return f"{event_id} {title} {details}".replace("  ", " ").strip()


def _account(name: str) -> str:
    """``alice@CORP.LOCAL`` (Kerberos) and ``CORP\\alice`` both name ``alice``."""
    name = name.split("@", 1)[0] if "@" in name else name
    return name.rsplit("\\", 1)[-1]


def _user_kind(user: str) -> str:
    if user.endswith("$"):
        return "machine"
    if user.upper() == "ANONYMOUS LOGON":
        return "anonymous"
    return ""


def _frame(rows: list[dict[str, Any]], where: str, rejected: list[Rejected]) -> pd.DataFrame:
    return rows_to_frame(rows, ("user", "action", "outcome", "source_ip", "resource", "host",
                                "category", "session", "message", "event_id"), where, rejected,
                         extra=("source_host", "logon_type", "command_line",
                                "object_properties", "service_file", "ticket_encryption",
                                "preauth_type", "user_kind", "source_scope"))
