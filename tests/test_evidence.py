"""Evidence features: sensitive actions named, credentials in two places, web scanning."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from analyzer.detector import explain
from analyzer.features import FEATURES, FeatureExtractor, feature_names
from analyzer.features._evidence import SENSITIVE_ACTIONS, sensitive_entries
from analyzer.report.i18n import get_locale
from tests.conftest import events_frame, shared_data

frame = functools.partial(events_frame, action="api.call")


def window(windows: pd.DataFrame, entity: str, start: str | None = None,
           etype: str = "user") -> pd.Series:
    rows = windows[(windows["entity_type"] == etype) & (windows["entity"] == entity)]
    if start is not None:
        rows = rows[rows["window_start"] == pd.Timestamp(start, tz="UTC")]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# -- the catalogue ------------------------------------------------------------------------------

def test_catalogue_names_the_destructive_and_persistence_apis_of_every_source():
    actions = ["cloudtrail.amazonaws.com:DeleteTrail", "cloudtrail.amazonaws.com:StopLogging",
               "iam.amazonaws.com:CreateAccessKey", "organizations.amazonaws.com:LeaveOrganization",
               "ec2.amazonaws.com:ModifySnapshotAttribute", "guardduty.amazonaws.com:DeleteDetector",
               "directory.replication", "service.install", "log.clear", "user.create", "sudo",
               "s3.amazonaws.com:GetObject", "login", "dataset.read", "ec2.amazonaws.com:DescribeTags"]
    found = sensitive_entries(actions)
    assert (found[:11] >= 0).all() and (found[11:] == -1).all()
    assert SENSITIVE_ACTIONS[found[6]].label == "DCSync rights"


def test_evidence_features_are_in_the_table_and_absent_columns_give_zero():
    names = {f.name for f in FEATURES}
    assert {"n_new_sensitive", "n_remote_creations", "credential_addresses", "n_paths",
            "n_sensitive_probes", "n_injection", "n_scanner_requests"} <= names
    assert "n_new_sensitive" in feature_names("user")
    assert "n_new_sensitive" not in feature_names("source_ip")
    plain = frame([{"timestamp": "2026-01-05 09:00"}])
    windows = FeatureExtractor().fit_transform(plain)
    evidence = [f.name for f in FEATURES if f.name in (
        "n_new_sensitive", "n_sensitive", "n_paths", "share_4xx", "n_sensitive_probes",
        "n_injection", "n_scanner_requests", "credential_addresses")]
    assert (windows[evidence].to_numpy() == 0).all()


# -- sensitive actions ------------------------------------------------------------------------

def _cloud_history() -> pd.DataFrame:
    rows = [{"timestamp": f"2026-01-0{d} 10:{m:02d}", "action": "ec2.amazonaws.com:DescribeTags"}
            for d in (5, 6) for m in (0, 30)]
    rows += [{"timestamp": "2026-01-07 11:05", "action": "cloudtrail.amazonaws.com:DeleteTrail",
              "resource": "arn:aws:cloudtrail:us-east-1:1:trail/main"},
             {"timestamp": "2026-01-07 11:06", "action": "iam.amazonaws.com:CreateUser",
              "resource": "backdoor"},
             {"timestamp": "2026-01-07 14:00", "action": "cloudtrail.amazonaws.com:DeleteTrail",
              "resource": "arn:aws:cloudtrail:us-east-1:1:trail/main"},
             {"timestamp": "2026-01-07 14:10", "user": "bob",
              "action": "cloudtrail.amazonaws.com:DeleteTrail", "resource": "other"}]
    return frame(rows)


def test_first_use_of_a_sensitive_action_is_per_entity_and_as_seen_so_far():
    windows = FeatureExtractor().fit_transform(_cloud_history())
    first = window(windows, "alice", "2026-01-07 11:00")
    assert first["n_new_sensitive"] == 2 and first["n_sensitive"] == 2
    again = window(windows, "alice", "2026-01-07 14:00")
    assert again["n_new_sensitive"] == 0 and again["n_sensitive"] == 1
    # bob's first window is his first DeleteTrail too: not zeroed like the other novelty
    assert window(windows, "bob")["n_new_sensitive"] == 1


def test_scoring_names_the_action_its_object_and_who_did_it():
    history = _cloud_history()
    fx = FeatureExtractor().fit(history[history["timestamp"] < "2026-01-07"])
    windows = fx.transform(history)
    first = window(windows, "alice", "2026-01-07 11:00")
    assert first["d_new_sensitive"] == ("cloudtrail:DeleteTrail of "
                                        "arn:aws:cloudtrail:us-east-1:1:trail/main, "
                                        "iam:CreateUser of backdoor")
    # known from training: DescribeTags is neither sensitive nor new
    fitted = fx.transform(history[history["timestamp"] < "2026-01-07"])
    assert (fitted["n_new_sensitive"] == 0).all()
    names = [f.name for f in FEATURES]
    surprisal = np.zeros((1, len(names)))
    surprisal[0, names.index("n_new_sensitive")] = 1.0  # not even "rare": still named
    surprisal[0, names.index("hour_rarity")] = 6.0
    text = explain(windows.loc[[first.name]], surprisal, names)[0]
    assert text.startswith("first cloudtrail:DeleteTrail of arn:aws:cloudtrail:us-east-1:1:"
                           "trail/main, iam:CreateUser of backdoor by alice; active at 11:00")


def test_windows_sensitive_actions_respect_who_did_them():
    rows = [
        {"timestamp": "2026-01-05 09:00", "user": "DC1$", "user_kind": "machine",
         "action": "directory.replication", "host": "DC1"},
        {"timestamp": "2026-01-05 09:01", "user": "pgustavo", "user_kind": "",
         "action": "directory.replication", "host": "DC1"},
        {"timestamp": "2026-01-05 09:02", "user": "ANONYMOUS LOGON", "user_kind": "anonymous",
         "action": "computer.change", "resource": "DC1$", "host": "DC1"},
        {"timestamp": "2026-01-05 09:03", "user": "admin", "user_kind": "",
         "action": "computer.change", "resource": "WS6$", "host": "DC1"},
    ]
    windows = FeatureExtractor().fit_transform(frame(rows))
    assert window(windows, "DC1$")["n_sensitive"] == 0  # domain controllers replicate
    dcsync = window(windows, "pgustavo")
    assert dcsync["n_new_sensitive"] == 1
    zerologon = window(windows, "ANONYMOUS LOGON")
    assert zerologon["n_new_sensitive"] == 1
    assert window(windows, "admin")["n_sensitive"] == 0
    fx = FeatureExtractor().fit(frame(rows[:1]))
    named = fx.transform(frame(rows))
    assert window(named, "pgustavo")["d_new_sensitive"] == \
        "directory.replication (DCSync rights) on DC1"
    assert window(named, "ANONYMOUS LOGON")["d_new_sensitive"] == \
        "computer.change of DC1$ (anonymous, as in Zerologon) on DC1"


def test_a_persons_rc4_kerberos_ticket_is_evidence_not_aes_nor_a_machines():
    def tgt(minute: int, user: str, encryption: str, action: str = "kerberos.tgt") -> dict:
        return {"timestamp": f"2026-01-05 09:{minute:02d}", "user": user, "action": action,
                "user_kind": "machine" if user.endswith("$") else "", "host": "DC1",
                "resource": "DC1", "ticket_encryption": encryption}
    rows = [tgt(0, "alice", "0x12"), tgt(1, "bob", "0x17"), tgt(2, "WS6$", "0x17"),
            tgt(3, "carol", "0x3"), tgt(4, "dave", "0x17", "kerberos.service_ticket")]
    windows = FeatureExtractor().fit_transform(frame(rows))
    assert window(windows, "alice")["n_sensitive"] == 0  # AES, what the domain hands out
    assert window(windows, "WS6$")["n_sensitive"] == 0  # a machine with an old key
    assert window(windows, "carol")["n_sensitive"] == 1  # DES
    windows = FeatureExtractor().fit(frame(rows[:1])).transform(frame(rows))
    assert window(windows, "bob")["d_new_sensitive"] == \
        "kerberos.tgt of DC1 (RC4 ticket encryption, as Rubeus/Mimikatz request it) on DC1"
    assert window(windows, "dave")["d_new_sensitive"] == ("kerberos.service_ticket of DC1 "
                                                          "(RC4 ticket encryption, as "
                                                          "Kerberoasting requests it) on DC1")
    # a reader that does not say which encryption was used says nothing about it
    blind = FeatureExtractor().fit_transform(frame(rows).drop(columns="ticket_encryption"))
    assert (blind["n_sensitive"] == 0).all()


def test_service_or_task_created_in_a_network_logon_is_remote():
    rows = [
        {"timestamp": "2026-01-05 09:00", "user": "pgustavo", "action": "login",
         "session": "0x1a2b", "logon_type": "3", "host": "WORKSTATION6",
         "source_ip": "172.18.39.5"},
        {"timestamp": "2026-01-05 09:01", "user": "pgustavo", "action": "service.install",
         "resource": "IKEEXT", "session": "0x1a2b", "host": "WORKSTATION6", "source_ip": ""},
        {"timestamp": "2026-01-05 09:02", "user": "pgustavo", "action": "login",
         "session": "0x9", "logon_type": "2", "host": "WORKSTATION7", "source_ip": ""},
        {"timestamp": "2026-01-05 09:03", "user": "pgustavo", "action": "task.create",
         "resource": r"\Updater", "session": "0x9", "host": "WORKSTATION7", "source_ip": ""},
        # the same logon id on another host is another session
        {"timestamp": "2026-01-05 09:04", "user": "pgustavo", "action": "task.create",
         "resource": r"\Other", "session": "0x1a2b", "host": "WORKSTATION7", "source_ip": ""},
    ]
    fx = FeatureExtractor().fit(frame(rows[:1]))
    row = window(fx.transform(frame(rows)), "pgustavo")
    assert row["n_remote_creations"] == 1
    assert row["d_remote_creations"] == "service.install of IKEEXT on WORKSTATION6"
    assert row["n_sensitive"] == 3


def test_syslog_account_changes_name_the_account_touched():
    rows = [{"timestamp": "2026-01-05 09:00", "user": "bob", "action": "sudo",
             "resource": "/usr/bin/apt"},
            {"timestamp": "2026-01-06 03:00", "user": "bob", "action": "user.create",
             "resource": "backdoor"},
            {"timestamp": "2026-01-06 03:01", "user": "bob", "action": "sudo",
             "resource": "/usr/bin/apt"}]
    fx = FeatureExtractor().fit(frame(rows[:1]))
    row = window(fx.transform(frame(rows)), "bob", "2026-01-06 03:00")
    assert row["n_new_sensitive"] == 1
    assert row["d_new_sensitive"] == "user.create of backdoor"
    assert row["d_sensitive"] == "1 sudo of /usr/bin/apt, 1 user.create of backdoor"


def test_names_from_logs_lose_control_characters_and_length():
    rows = [{"timestamp": "2026-01-05 09:00", "user": "bob", "action": "user.create",
             "resource": "evil\x1b[31mname" + "x" * 100}]
    fx = FeatureExtractor().fit(frame([{"timestamp": "2026-01-01 09:00", "user": "bob"}]))
    text = window(fx.transform(frame(rows)), "bob")["d_new_sensitive"]
    assert "\x1b" not in text and text.startswith("user.create of evil?[31mname")
    assert len(text) < 90 and text.endswith("…")


# -- one credential in several places -----------------------------------------------------------

def test_one_credential_used_from_a_second_address_shows_where_it_turns_up():
    rows = [{"timestamp": "2026-01-05 09:00", "user": "role/i-0abc12345", "session": "ASIA1",
             "source_ip": "10.0.0.5"},
            {"timestamp": "2026-01-05 10:00", "user": "role/i-0abc12345", "session": "ASIA1",
             "source_ip": "10.0.0.5"},
            {"timestamp": "2026-01-05 10:20", "user": "role/i-0abc12345", "session": "ASIA1",
             "source_ip": "198.51.100.7"},
            # another user's key from other addresses is not this credential
            {"timestamp": "2026-01-05 10:30", "user": "bob", "session": "ASIA1",
             "source_ip": "203.0.113.1"}]
    windows = FeatureExtractor().fit_transform(frame(rows))
    assert window(windows, "role/i-0abc12345", "2026-01-05 09:00")["credential_addresses"] == 0
    assert window(windows, "role/i-0abc12345", "2026-01-05 10:00")["credential_addresses"] == 2
    assert window(windows, "bob")["credential_addresses"] == 0
    fx = FeatureExtractor().fit(frame(rows[:1]))
    named = window(fx.transform(frame(rows)), "role/i-0abc12345", "2026-01-05 10:00")
    assert named["d_credential_addresses"] == "10.0.0.5, 198.51.100.7"


# -- web scanning and injection -----------------------------------------------------------------

def _web(client: str, requests: list[tuple[str, str, int, str]], hour: int = 9) -> list[dict]:
    return [{"timestamp": f"2026-01-05 {hour:02d}:{i % 60:02d}", "user": "", "source_ip": client,
             "action": "http.get", "url_path": path, "url_query": query, "status": status,
             "user_agent": agent, "resource": path}
            for i, (path, query, status, agent) in enumerate(requests)]


def test_a_scanner_is_named_by_its_probes_injections_and_user_agent():
    browser = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"
    normal = _web("10.0.0.9", [("/", "", 200, browser), ("/shop", "item=3", 200, browser),
                               ("/missing", "", 404, browser)])
    scan = _web("203.0.113.66", [
        ("/.env", "", 404, "sqlmap/1.5#stable (https://sqlmap.org)"),
        ("/.git/config", "", 404, "sqlmap/1.5#stable (https://sqlmap.org)"),
        ("/wp-admin/", "", 404, "sqlmap/1.5#stable (https://sqlmap.org)"),
        ("/search", "q=1%27%20OR%201%3D1--", 500, "sqlmap/1.5#stable (https://sqlmap.org)"),
        ("/search", "q=%3Cscript%3Ealert(1)%3C/script%3E", 200, "curl/8.1"),
        ("/download", "file=../../etc/passwd", 403, "curl/8.1"),
        ("/backup.zip", "", 404, "curl/8.1"),
        ("/cgi-bin/test", "x=%24%7Bjndi%3Aldap%3A//x%7D", 404, "curl/8.1"),
    ])
    data = frame(normal + scan)
    data["status"] = data["status"].astype("Int64")
    fx = FeatureExtractor().fit(frame(_web("10.0.0.9", [("/", "", 200, browser)], hour=8)))
    windows = fx.transform(data)
    scanner = window(windows, "203.0.113.66", etype="source_ip")
    visitor = window(windows, "10.0.0.9", etype="source_ip")
    assert scanner["n_paths"] == 7 and visitor["n_paths"] == 3
    assert scanner["n_sensitive_probes"] == 5  # the traversal is an injection, not a path
    assert scanner["d_sensitive_probes"] == "/.env, /.git/config, /wp-admin/ and 2 more"
    assert scanner["n_injection"] == 4
    assert scanner["d_injection"] == "1 command, 1 sqli, 1 xss and 1 more"
    assert scanner["n_scanner_requests"] == 4 and scanner["d_scanner"] == "sqlmap/1.5#stable"
    assert scanner["n_scripted_requests"] == 4 and scanner["d_scripted"] == "curl/8.1"
    assert scanner["share_4xx"] == 6 / 8 and scanner["share_5xx"] == 1 / 8
    assert visitor[["n_sensitive_probes", "n_injection", "n_scanner_requests",
                    "n_scripted_requests", "share_5xx"]].sum() == 0
    assert visitor["share_4xx"] == 1 / 3


# -- reasons and their translations -------------------------------------------------------------

def test_evidence_reasons_are_translated():
    de = get_locale("de")
    assert de.reason("first cloudtrail:DeleteTrail by alice") == \
        "erstmals cloudtrail:DeleteTrail durch alice"
    assert de.reason("112 probes of sensitive paths (/.env, /.git/config and 110 more)") == \
        "112 Zugriffsversuche auf sensible Pfade (/.env, /.git/config und 110 weitere)"


def test_real_cloudtrail_attacker_window_names_its_api_calls():
    from analyzer.model import AuditModel
    from analyzer.sources import read_events

    events = read_events(shared_data("otrf", "cloudtrail_ec2_proxy_s3_exfiltration.jsonl")).frame
    # the console user's half hour before the instance credentials turn up elsewhere
    before = events["timestamp"] < pd.Timestamp("2020-09-14 01:00", tz="UTC")
    scores = AuditModel().fit(events[before]).score(events)
    attacker = scores[scores["entity"].str.endswith("/i-0317f6c6b66ae9c40")]
    assert len(attacker) == 1
    reasons = attacker["reasons"].iloc[0]
    assert reasons.startswith("first s3:ListBuckets (all buckets listed) by "
                              "MordorNginxStack-BankingWAFRole-9S3E0UAE1MM0/i-0317f6c6b66ae9c40")
