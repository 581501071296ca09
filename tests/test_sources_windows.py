"""The Windows Security adapter on the OTRF PurpleSharp sample and on hand-written events.

The OTRF Security-Datasets sample is MIT licensed (../shared/data/otrf/LICENSE).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from analyzer.errors import SourceError
from analyzer.sources import windows

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
        {"@timestamp": "2024-02-01T10:00:02.000Z", "winlog": {"event_id": 4688}},
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
    # 4688 (process creation) is not mapped; asked for, it is kept under its id
    kept = windows.read(path, all_events=True).frame
    assert "windows.4688" in set(kept.action)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(SourceError, match="sec.json"):
        windows.read(tmp_path / "sec.json")


@needs_data
def test_sniff():
    assert windows.sniff(SAMPLE.read_bytes()[:65536])
    assert windows.sniff(b'[{"winlog": {"event_id": 4624}, "@timestamp": "2024-01-01T00:00:00Z"}')
    assert not windows.sniff(b'{"eventSource": "s3.amazonaws.com", "eventName": "GetObject"}\n')
