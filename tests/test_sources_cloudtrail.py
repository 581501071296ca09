"""The CloudTrail adapter on the OTRF sample and on hand-written records.

The OTRF Security-Datasets sample is MIT licensed (../shared/data/otrf/LICENSE). Expected
numbers are computed here with the json module, independently of the adapter.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from analyzer.errors import SourceError
from analyzer.sources import cloudtrail

DATA = Path(__file__).parents[2] / "shared" / "data"
SAMPLE = DATA / "otrf" / "cloudtrail_ec2_proxy_s3_exfiltration.jsonl"
needs_data = pytest.mark.skipif(not SAMPLE.exists(),
                                reason="real samples in ../shared/data/otrf are absent")

ROLE = "arn:aws:sts::111122223333:assumed-role/Deploy/i-0abc"


def record(**fields) -> dict:
    base = {"eventTime": "2024-05-01T12:00:00Z", "eventSource": "s3.amazonaws.com",
            "eventName": "GetObject", "sourceIPAddress": "198.51.100.7",
            "awsRegion": "eu-west-1", "eventID": "e1",
            "userIdentity": {"type": "IAMUser", "userName": "alice",
                             "arn": "arn:aws:iam::111122223333:user/dev/alice",
                             "accessKeyId": "AKIAEXAMPLE"}}
    base.update(fields)
    return base


@needs_data
def test_sample_counts_match_the_records():
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    result = cloudtrail.read(SAMPLE)
    frame = result.frame
    assert result.rejected == ()
    assert len(frame) == len(records) == 103
    # grep -c '"userName":"pedro"' counts the IAM user's records
    assert (frame.user == "pedro").sum() == \
        sum(r["userIdentity"].get("userName") == "pedro" for r in records)
    actions = Counter(f"{r['eventSource']}:{r['eventName']}" for r in records)
    assert Counter(frame.action.astype(str)) == actions
    assert (frame.outcome == "failure").sum() == sum("errorCode" in r for r in records) == 0
    # the only address in the sample; AWS services calling in by name give no IP
    assert set(frame.source_ip.astype(str)) == {"1.2.3.4", ""}
    assert (frame.source_ip == "").sum() == \
        sum(r["sourceIPAddress"] == "ec2.amazonaws.com" for r in records)


@needs_data
def test_sample_exfiltration_rows():
    frame = cloudtrail.read(SAMPLE).frame
    gets = frame[frame.action == "s3.amazonaws.com:GetObject"]
    assert len(gets) == 2
    row = gets.iloc[0]
    assert row.user == "MordorNginxStack-BankingWAFRole-9S3E0UAE1MM0/i-0317f6c6b66ae9c40"
    assert row.resource == "arn:aws:s3:::mordors3stack-s3bucket-llp2yingx64a/ring.txt"
    assert (row.bytes, row.session, row.category) == (89, "ASIA5FLZVX4OPVKKVBMX", "file")
    assert row.timestamp == pd.Timestamp("2020-09-14 01:02:34", tz="UTC")
    # ListObjects: the resources list starts with an ARNPrefix; the bucket ARN is preferred
    lists = frame[frame.action == "s3.amazonaws.com:ListObjects"]
    assert set(lists.resource) == {"arn:aws:s3:::mordors3stack-s3bucket-llp2yingx64a"}
    # the EC2 service assuming the instance role
    assume = frame[frame.action == "sts.amazonaws.com:AssumeRole"].iloc[0]
    assert (assume.user, assume.category) == ("ec2.amazonaws.com", "iam")
    assert assume.resource.startswith("arn:aws:iam::123456789123:role/")


@needs_data
def test_the_exfiltration_calls_arrive_with_the_stolen_role_and_the_outside_address():
    # the stolen instance credentials used from outside: every call of the assumed role
    # from 1.2.3.4, counted here with json (ListBuckets, ListObjects, GetObject)
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    stolen = Counter(r["eventName"] for r in records
                     if r["userIdentity"]["type"] == "AssumedRole"
                     and r["sourceIPAddress"] == "1.2.3.4")
    assert set(stolen) == {"ListBuckets", "ListObjects", "GetObject"}
    result = cloudtrail.read(SAMPLE)
    frame = result.frame
    role = "MordorNginxStack-BankingWAFRole-9S3E0UAE1MM0/i-0317f6c6b66ae9c40"
    mine = frame[(frame.user == role) & (frame.source_ip == "1.2.3.4")]
    assert Counter(a.split(":")[1] for a in mine.action) == stolen
    assert set(mine.session) == {"ASIA5FLZVX4OPVKKVBMX"}
    # every record is accounted for: all used, with a user; the EC2 service's AssumeRole
    # calls are the only ones without an address, and say they are a machine's
    assert result.records == len(records) == len(frame) + len(result.rejected) + \
        result.n_skipped
    assert (frame.user != "").all()
    assert set(frame[frame.source_ip == ""].user_kind) == {"machine"}


def test_records_document_gzip_and_identities(tmp_path):
    records = [
        record(),
        record(userIdentity={"type": "Root", "arn": "arn:aws:iam::111122223333:root",
                             "principalId": "111122223333"},
               eventSource="iam.amazonaws.com", eventName="CreateAccessKey",
               requestParameters={"userName": "mallory"}),
        record(userIdentity={"type": "AssumedRole", "arn": ROLE, "accessKeyId": "ASIAX"},
               errorCode="AccessDenied", errorMessage="not allowed",
               requestParameters={"bucketName": "payroll"}, eventName="ListObjects"),
        record(eventSource="signin.amazonaws.com", eventName="ConsoleLogin",
               responseElements={"ConsoleLogin": "Failure"}, sourceIPAddress="203.0.113.9"),
        record(userIdentity={"type": "AWSService", "invokedBy": "lambda.amazonaws.com"},
               sourceIPAddress="lambda.amazonaws.com", eventSource="sts.amazonaws.com",
               eventName="AssumeRole",
               resources=[{"ARN": "arn:aws:iam::111122223333:role/Fn", "type": "AWS::IAM::Role"}]),
    ]
    path = tmp_path / "111122223333_CloudTrail_eu-west-1_20240501T1200Z_x.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))
    frame = cloudtrail.read(path).frame
    got = list(zip(frame.user, frame.action, frame.outcome, frame.resource, strict=True))
    assert got == [
        ("alice", "s3.amazonaws.com:GetObject", "success", ""),
        ("root", "iam.amazonaws.com:CreateAccessKey", "success", "mallory"),
        ("Deploy/i-0abc", "s3.amazonaws.com:ListObjects", "failure", "arn:aws:s3:::payroll"),
        ("alice", "login", "failure", ""),
        ("lambda.amazonaws.com", "sts.amazonaws.com:AssumeRole", "success",
         "arn:aws:iam::111122223333:role/Fn"),
    ]
    assert list(frame.category) == ["file", "iam", "api", "authentication", "iam"]
    assert list(frame.source_ip) == ["198.51.100.7", "198.51.100.7", "198.51.100.7",
                                     "203.0.113.9", ""]
    assert frame.message[2].endswith("AccessDenied: not allowed")
    assert list(frame.event_id) == ["e1"] * 5


def test_user_kind_tells_unsigned_requests_and_services_from_people(tmp_path):
    records = [
        record(),
        # an unsigned S3 request, and a signed one from another account: same type
        record(userIdentity={"type": "AWSAccount", "principalId": "",
                             "accountId": "ANONYMOUS_PRINCIPAL"}),
        record(userIdentity={"type": "AWSAccount", "principalId": "AIDAOTHER",
                             "accountId": "444455556666"}),
        record(userIdentity={"type": "AWSService", "invokedBy": "ec2.amazonaws.com"},
               sourceIPAddress="ec2.amazonaws.com"),
    ]
    path = tmp_path / "trail.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    frame = cloudtrail.read(path).frame
    assert list(frame.user_kind) == ["", "anonymous", "", "machine"]
    assert list(frame.user) == ["alice", "", "AIDAOTHER", "ec2.amazonaws.com"]


def test_malformed_lines_are_set_aside_with_line_numbers(tmp_path):
    lines = [
        json.dumps(record()),
        "{not json",
        json.dumps(record(eventName=None)),
        "",
        json.dumps(record(requestParameters={"bucketName": ["a", "list"]})),
        json.dumps(record(eventTime="yesterday")),
        json.dumps(record(additionalEventData={"bytesTransferredOut": 1024})),
    ]
    path = tmp_path / "trail.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = cloudtrail.read(path)
    assert [(r.line, r.reason.split(":")[0]) for r in result.rejected] == [
        (2, "bad JSON"), (3, "eventName"), (5, "requestParameters.bucketName"),
        (6, "eventTime"),
    ]
    assert result.rejected[0].raw == b"{not json"
    assert len(result.frame) == 2
    assert result.frame.bytes.isna().tolist() == [True, False]
    assert int(result.frame.bytes.iloc[1]) == 1024
    assert result.records == 6  # the blank line is not a record


def test_records_document_with_a_bad_record(tmp_path):
    path = tmp_path / "trail.json"
    path.write_text(json.dumps({"Records": [record(), "oops", record(eventID="e3")]}))
    result = cloudtrail.read(path)
    assert [(r.line, r.reason) for r in result.rejected] == [(2, "record is not a JSON object")]
    assert list(result.frame.event_id) == ["e1", "e3"]
    assert result.records == 3


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(SourceError, match="none.json"):
        cloudtrail.read(tmp_path / "none.json")


@needs_data
def test_sniff():
    assert cloudtrail.sniff(SAMPLE.read_bytes()[:65536])
    assert cloudtrail.sniff(b'{"Records": [{"eventVersion": "1.08"')
    assert not cloudtrail.sniff(b"Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user x\n")
