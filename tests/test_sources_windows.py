"""The Windows Security adapter on the OTRF PurpleSharp sample and on hand-written events.

The OTRF Security-Datasets sample is MIT licensed (../shared/data/otrf/LICENSE).
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from analyzer.errors import SourceError
from analyzer.sources import windows
from analyzer.sources._base import ReadResult
from tests.conftest import shared_data

DATA = Path(__file__).parents[2] / "shared" / "data"
SAMPLE = DATA / "otrf" / "windows_security_purplesharp_ad_playbook_I.jsonl"
needs_data = pytest.mark.skipif(not SAMPLE.exists(),
                                reason="real samples in ../shared/data/otrf are absent")


@pytest.fixture(scope="module")
def purplesharp() -> pd.DataFrame:
    result = windows.read(SAMPLE)
    assert result.rejected == ()
    return result.frame


@needs_data
def test_counts_match_the_event_ids(purplesharp):
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    ids = Counter(r["EventID"] for r in records)
    # grep -c '"EventID":4625' ; every event id in the sample is mapped
    assert len(purplesharp) == len(records) == 154
    assert (purplesharp.action == "login").sum() == ids[4624] + ids[4625]
    assert ((purplesharp.action == "login") & (purplesharp.outcome == "failure")).sum() \
        == ids[4625] == 7
    assert (purplesharp.action == "logout").sum() == ids[4634]
    assert (purplesharp.action == "kerberos.service_ticket").sum() == ids[4769]
    # 4776 with Status 0xc000006a: bad password, so a failure
    ntlm = purplesharp[purplesharp.action == "ntlm.validate"]
    assert len(ntlm) == ids[4776] and set(ntlm.outcome) == {"failure"}


@needs_data
def test_the_password_spray_is_visible(purplesharp):
    failed = purplesharp[(purplesharp.action == "login") & (purplesharp.outcome == "failure")]
    assert set(failed.source_host) == {"WORKSTATION5"}
    assert failed.user.nunique() >= 5  # several distinct accounts ...
    span = failed.timestamp.max() - failed.timestamp.min()
    assert span < pd.Timedelta(seconds=1)  # ... within seconds
    assert failed.timestamp.min() >= pd.Timestamp("2020-10-22 08:29:50", tz="UTC")
    assert "pgustavo" in set(failed.user)
    first = failed.iloc[0]
    assert (first.user, first.logon_type, first.host) == \
        ("lrodriguez", "2", "WORKSTATION5.theshire.local")
    assert "Status=0xc000006d" in first.message


@needs_data
def test_kerberos_user_drops_the_realm(purplesharp):
    tickets = purplesharp[purplesharp.action == "kerberos.service_ticket"]
    assert "pgustavo" in set(tickets.user)  # pgustavo@THESHIRE.LOCAL in the record
    assert not tickets.user.str.contains("@").any()
    assert "sysmonsvc" in set(tickets.resource)
    # IpAddress ::ffff:172.18.39.5 -> 172.18.39.5
    assert "172.18.39.5" in set(tickets.source_ip)
    assert not tickets.source_ip.str.startswith("::ffff:").any()


def test_winlogbeat_layout_account_changes_and_rejects(tmp_path):
    events = [
        {"@timestamp": "2024-02-01T10:00:00.000Z", "winlog": {
            "event_id": 4728, "computer_name": "DC1.corp.local", "keywords": ["Audit Success"],
            "event_data": {"SubjectUserName": "mallory", "TargetUserName": "Domain Admins",
                           "MemberName": "CN=eve,CN=Users,DC=corp,DC=local",
                           "SubjectLogonId": "0x3e7"}}},
        {"@timestamp": "2024-02-01T10:00:01.000Z", "winlog": {
            "event_id": 4771, "computer_name": "DC1.corp.local",
            "event_data": {"TargetUserName": "eve", "IpAddress": "::ffff:10.0.0.9",
                           "Status": "0x18"}}},
        {"@timestamp": "2024-02-01T10:00:02.000Z", "winlog": {"event_id": 4658}},
    ]
    lines = [json.dumps(e) for e in events] + ["{broken", json.dumps({"winlog": {}}),
                                               json.dumps({"EventID": 4624, "@timestamp": "x"})]
    path = tmp_path / "security.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = windows.read(path)
    frame = result.frame
    assert [(r.line, r.reason.split(":")[0]) for r in result.rejected] == [
        (4, "bad JSON"), (5, "no EventID"), (6, "unreadable time 'x'")]
    got = list(zip(frame.user, frame.action, frame.outcome, frame.resource, frame.source_ip,
                   strict=True))
    assert got == [("mallory", "group.member_add", "success", "Domain Admins", ""),
                   ("eve", "kerberos.preauth", "failure", "DC1", "10.0.0.9")]
    assert list(frame.category) == ["iam", "authentication"]
    assert "Member=CN=eve" in frame.message[0]
    # 4658 (handle closed) is not mapped: counted as skipped; asked for, kept under its id
    assert result.skipped == {"unmapped event id": {"4658": 1}}
    assert result.records == 6 == len(frame) + len(result.rejected) + result.n_skipped
    kept = windows.read(path, all_events=True).frame
    assert "windows.4658" in set(kept.action)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(SourceError, match="sec.json"):
        windows.read(tmp_path / "sec.json")


@needs_data
def test_sniff():
    assert windows.sniff(SAMPLE.read_bytes()[:65536])
    assert windows.sniff(b'[{"winlog": {"event_id": 4624}, "@timestamp": "2024-01-01T00:00:00Z"}')
    assert not windows.sniff(b'{"eventSource": "s3.amazonaws.com", "eventName": "GetObject"}\n')


# -- the OTRF attack datasets (../shared/data/README.md): the attack's own events arrive ------
# with the acting user and, where the event has one, the source address. Who acted is in the
# dataset's metadata (../shared/data/otrf/metadata/*.yaml): an Empire agent as THESHIRE\pgustavo
# on WORKSTATION5 (172.18.39.5), or as wardog on WORKSTATION6 (172.18.39.6) for Rubeus.

@pytest.fixture(scope="module")
def otrf(tmp_path_factory):
    """Read an OTRF zip (extracted once per module into a temporary folder)."""
    read: dict[str, ReadResult] = {}
    extracted: dict[str, Path] = {}

    def load(name: str, **options) -> ReadResult:
        key = name + repr(sorted(options.items()))
        if name not in extracted:
            archive = shared_data("otrf", name)
            folder = tmp_path_factory.mktemp(archive.stem)
            with zipfile.ZipFile(archive) as zf:
                (member,) = zf.namelist()
                zf.extract(member, folder)
            extracted[name] = folder / member
        if key not in read:
            read[key] = windows.read(extracted[name], **options)
        return read[key]
    return load


def _events(frame: pd.DataFrame, action: str, **equal: str) -> pd.DataFrame:
    rows = frame[frame.action == action]
    for column, value in equal.items():
        rows = rows[rows[column].astype(str) == value]
    return rows


OTRF_ZIPS = ["empire_shell_rubeus_asktgt_ptt.zip",
             "auditpol_system_user_auditpolicy_modification.zip", "schtask_create.zip", "empire_mimikatz_logonpasswords.zip",
             "empire_shell_samr_EnumDomainUsers.zip",
             "empire_shell_dcerpc_smb_service_dll_hijack.zip"]


@pytest.mark.parametrize("name", OTRF_ZIPS)
def test_every_record_is_accounted_for(otrf, name):
    result = otrf(name)
    assert result.rejected == ()
    assert result.records == len(result.frame) + result.n_skipped
    # what is skipped is named: Security ids one by one, the other channels by name
    assert set(result.skipped) <= {"unmapped event id", "other channel",
                                   "sysmon 10 on another process"}
    # handles opened on the credential store are kept; on other processes, counted
    assert "lsass.exe" not in result.skipped.get("sysmon 10 on another process", {})
    assert "Security" not in result.skipped.get("other channel", {})
    kept = otrf(name, all_events=True)
    assert len(kept.frame) == kept.records == result.records and not kept.skipped


def test_rubeus_asktgt_tgt_request_and_the_tool_run(otrf):
    frame = otrf("empire_shell_rubeus_asktgt_ptt.zip").frame
    # the AS-REQ Rubeus crafted for pgustavo, sent from WORKSTATION6 where the agent ran
    (tgt,) = _events(frame, "kerberos.tgt").itertuples()
    assert (tgt.user, tgt.source_ip, tgt.outcome, tgt.host) == \
        ("pgustavo", "172.18.39.6", "success", "MORDORDC.theshire.local")
    (run,) = _events(frame, "process.start", user="wardog").pipe(
        lambda f: f[f.resource.str.endswith("Rubeus.exe")]).itertuples()
    assert "asktgt /user:pgustavo" in run.command_line and run.host.startswith("WORKSTATION6")
    # asktgt /rc4: the ticket is RC4-HMAC, pre-authenticated with an encrypted timestamp
    assert (tgt.ticket_encryption, tgt.preauth_type) == ("0x17", "2")
    assert frame.ticket_encryption[frame.action != "kerberos.tgt"].isna().all()
    logons = _events(frame, "login")
    assert len(logons) == 7 and set(logons.logon_type) >= {"3"}


def test_auditpol_audit_policy_changes(otrf):
    frame = otrf("auditpol_system_user_auditpolicy_modification.zip").frame
    changes = _events(frame, "audit_policy.change")
    assert len(changes) == 63  # every 4719 in the file
    assert set(changes.user) == {"pedro-admin"} and set(changes.host) == {"pedro-computer"}
    assert set(changes.category) == {"configuration"}
    assert changes.resource.str.contains("0cce923f-69ae-11d9-bed3-505054503030").any()
    assert changes.message.str.contains("success removed").any()
    runs = _events(frame, "process.start", user="pedro-admin")
    assert "auditpol.exe /clear /y" in set(runs.command_line)
    # System 104: a log was cleared as well
    assert len(_events(frame, "log.clear")) == 1


def test_schtask_create_remote_task_and_its_network_logon(otrf):
    frame = otrf("schtask_create.zip").frame
    (task,) = _events(frame, "task.create").itertuples()
    assert (task.user, task.resource, task.host) == (
        "pgustavo", "\\Microsoft\\Windows\\SoftwareProtectionPlatform\\EventCacheManager",
        "WORKSTATION6.theshire.local")
    (logon,) = _events(frame, "login", user="pgustavo").itertuples()
    assert (logon.logon_type, logon.source_ip, logon.outcome, logon.source_scope) == \
        ("3", "172.18.39.5", "success", "")
    runs = _events(frame, "process.start", user="pgustavo")
    assert runs.command_line.str.contains("schtasks  /create").any()


def test_mimikatz_lsass_access(otrf):
    frame = otrf("empire_mimikatz_logonpasswords.zip").frame
    lsass = _events(frame, "object.access", user="pgustavo", category="process")
    assert set(lsass.resource) == {"\\Device\\HarddiskVolume2\\Windows\\System32\\lsass.exe"}
    assert len(lsass) == 2  # the handle request (4656) and its use (4663)
    assert set(lsass.host) == {"WORKSTATION5.theshire.local"}
    # Sysmon 10: PowerShell (the Empire agent) opening lsass; Sysmon 10 names no user here
    sysmon = _events(frame, "process.access")
    opened = sysmon[sysmon.resource.str.lower().str.endswith("lsass.exe")
                    & sysmon.message.str.contains("powershell.exe")]
    assert len(opened) == 1 and "GrantedAccess=0x1010" in opened.message.iloc[0]


def test_samr_enum_domain_users(otrf):
    frame = otrf("empire_shell_samr_EnumDomainUsers.zip").frame
    (sam,) = _events(frame, "sam.object_access").itertuples()
    assert (sam.user, sam.resource, sam.host) == ("pgustavo", "DC=theshire,DC=local",
                                                  "MORDORDC.theshire.local")
    (pipe,) = _events(frame, "share.object_access").itertuples()
    assert (pipe.user, pipe.resource, pipe.source_ip) == ("pgustavo", "\\\\*\\IPC$\\samr",
                                                          "172.18.39.5")
    assert "\"C:\\windows\\system32\\net.exe\" user /domain" in set(
        _events(frame, "process.start", user="pgustavo").command_line)


def test_dcerpc_smb_service_dll_hijack(otrf):
    frame = otrf("empire_shell_dcerpc_smb_service_dll_hijack.zip").frame
    copied = _events(frame, "share.object_access", user="pgustavo")
    assert "\\\\*\\C$\\Windows\\System32\\wlbsctrl.dll" in set(copied.resource)
    assert set(copied.source_ip) == {"172.18.39.5"}
    assert set(copied.host) == {"WORKSTATION6.theshire.local"}
    sc = _events(frame, "process.start", user="pgustavo")
    assert {"stop", "start", "query"} <= {c.split()[-2] for c in sc.command_line
                                          if "sc.exe" in c}
    # the records this dataset writes with Channel "security" (lower case) are read too
    assert len(_events(frame, "process.start")) == 10
    # 4662 on the DC: its own account asking for replication rights (a DCSync's trace)
    (ds,) = _events(frame, "directory.replication").itertuples()
    assert (ds.user, ds.user_kind) == ("MORDORDC$", "machine")
    assert "{1131f6aa-9c07-11d1-f79f-00c04fc2dcd2}" in ds.object_properties


def test_hand_written_channels_accounts_and_local_sources(tmp_path):
    def winlogbeat(event_id, channel="Security", data=None, **winlog):
        return {"@timestamp": "2024-03-01T02:00:00Z", "winlog": {
            "event_id": event_id, "channel": channel, "computer_name": "DC1.corp.local",
            "event_data": data or {}, **winlog}}
    events = [
        winlogbeat(1102, user_data={"SubjectUserName": "mallory",
                                    "SubjectDomainName": "CORP"}),
        winlogbeat(7045, "System", {"ServiceName": "PSEXESVC",
                                    "ImagePath": "%SystemRoot%\\PSEXESVC.exe",
                                    "ServiceType": "user mode service"},
                   user={"name": "mallory"}),
        # Zerologon: the DC's account changed by an anonymous caller
        winlogbeat(4742, data={"SubjectUserName": "ANONYMOUS LOGON", "TargetUserName": "DC1$",
                               "SubjectDomainName": "NT AUTHORITY"}),
        winlogbeat(4624, data={"TargetUserName": "WS7$", "IpAddress": "::1", "LogonType": "3"}),
        winlogbeat(4624, data={"TargetUserName": "bob", "IpAddress": "fe80::8d2:1ff:fe3a:1",
                               "LogonType": "3"}),
        winlogbeat(4625, data={"TargetUserName": "bob", "IpAddress": "203.0.113.9",
                               "LogonType": "3"}),
        winlogbeat(7040, "System", {"param1": "Print Spooler"}),
        winlogbeat(1, "Microsoft-Windows-Sysmon/Operational", {"Image": "C:\\x.exe"}),
        winlogbeat(4658, data={"SubjectUserName": "bob"}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = windows.read(path)
    frame = result.frame
    got = list(zip(frame.action, frame.user, frame.user_kind, frame.resource, frame.source_ip,
                   frame.source_scope, strict=True))
    assert got == [
        ("log.clear", "mallory", "", "DC1", "", ""),
        ("service.install", "mallory", "", "PSEXESVC", "", ""),
        ("computer.change", "ANONYMOUS LOGON", "anonymous", "DC1$", "", ""),
        ("login", "WS7$", "machine", "DC1", "", "local"),
        ("login", "bob", "", "DC1", "", "local"),
        ("login", "bob", "", "DC1", "203.0.113.9", ""),
    ]
    assert frame.service_file[1] == "%SystemRoot%\\PSEXESVC.exe"
    assert list(frame.outcome) == ["success"] * 5 + ["failure"]
    assert result.skipped == {"unmapped event id": {"4658": 1},
                              "other channel": {"System": 1,
                                                "Microsoft-Windows-Sysmon/Operational": 1}}
    assert result.records == 9
    kept = windows.read(path, all_events=True).frame
    assert list(kept.action[6:]) == ["system.7040", "sysmon.1", "windows.4658"]


def test_command_line_accounts_for_unmapped_ids_and_keeps_them_with_all_events(
        tmp_path, capsys):
    from analyzer.cli import main

    with zipfile.ZipFile(shared_data("otrf", "empire_shell_samr_EnumDomainUsers.zip")) as zf:
        (member,) = zf.namelist()
        zf.extract(member, tmp_path)
    events = tmp_path / member
    assert main(["score", str(events), "--no-write-back"]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "records read" in x]
    assert lines == ["audit-analyzer score: 633 records read: 22 used, 611 skipped (other "
                     "channel: Microsoft-Windows-Sysmon/Operational x220, Windows PowerShell "
                     "x75, Microsoft-Windows-PowerShell/Operational x66, System x3; sysmon 10 "
                     "on another process: svchost.exe x173, net.exe x3, net1.exe x3; unmapped "
                     "event id: 5156 x31, 5158 x24, 4627 x4, 4658 x3, 4703 x3, 2 more)"]
    log = tmp_path / "audit.jsonl"
    assert main(["ingest", str(events), "--all-events", "--log", str(log)]) == 0
    out = capsys.readouterr()
    assert "ingested 633 events" in out.out
    assert "633 records read: 633 used" in out.err and "skipped" not in out.err
    actions = {json.loads(x)["event"]["action"] for x in log.read_text().splitlines()}
    assert {"windows.5156", "sysmon.3", "powershell.4103", "sam.object_access"} <= actions


def test_kerberos_ticket_encryption_is_one_spelling_whatever_the_exporter_wrote(tmp_path):
    def ticket(event_id, encryption, preauth=None, user="alice"):
        data = {"TargetUserName": f"{user}@CORP.LOCAL", "Status": "0x0",
                "TicketEncryptionType": encryption, "ServiceName": "krbtgt"}
        if preauth is not None:
            data["PreAuthType"] = preauth
        return {"@timestamp": "2024-03-01T02:00:00Z", "winlog": {
            "event_id": event_id, "channel": "Security", "event_data": data}}
    events = [ticket(4768, "0x12", "2"), ticket(4768, "0X17", "0"), ticket(4769, "23"),
              ticket(4769, "0xffffffff", user="bob"), ticket(4769, "-"),
              {"@timestamp": "2024-03-01T02:00:00Z", "winlog": {
                  "event_id": 4624, "channel": "Security",
                  "event_data": {"TargetUserName": "alice", "TicketEncryptionType": "0x17"}}}]
    path = tmp_path / "kerberos.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    frame = windows.read(path).frame
    assert list(frame.ticket_encryption.astype(object).fillna("")) == \
        ["0x12", "0x17", "0x17", "0xffffffff", "", ""]
    assert list(frame.preauth_type.astype(object).fillna("")) == ["2", "0", "", "", "", ""]
