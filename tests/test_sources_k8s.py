"""The Kubernetes audit adapter on hand-written audit.k8s.io/v1 events."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analyzer.errors import SourceError
from analyzer.sources import detect_format, k8s
from tests.conftest import shared_data


def event(**fields) -> dict:
    base = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": "a1", "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/prod/secrets/db", "verb": "get",
            "user": {"username": "alice", "groups": ["dev"]}, "sourceIPs": ["10.1.2.3"],
            "userAgent": "kubectl/v1.30", "objectRef": {
                "resource": "secrets", "namespace": "prod", "name": "db", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": "2024-06-01T09:00:00.000000Z",
            "stageTimestamp": "2024-06-01T09:00:00.012345Z"}
    base.update(fields)
    return base


@pytest.fixture
def audit_log(tmp_path):
    lines = [
        json.dumps(event()),
        json.dumps(event(stage="RequestReceived", auditID="a2")),       # counted once ...
        json.dumps(event(auditID="a2", verb="create", requestURI="/api/v1/namespaces/prod/"
                         "pods/web-0/exec?command=sh", objectRef={
                             "resource": "pods", "subresource": "exec", "namespace": "prod",
                             "name": "web-0"},
                         responseStatus={"code": 403, "reason": "Forbidden"},
                         user={"username": "system:serviceaccount:ci:builder"})),
        "not json",
        json.dumps(event(auditID="a4", verb=None)),
        json.dumps(event(auditID="a5", verb="get", requestURI="/healthz", objectRef=None,
                         sourceIPs=["192.0.2.1", "10.0.0.1"], user={"username": "system:anonymous"},
                         responseStatus={"code": 401})),
        json.dumps(event(auditID="a6", verb="create", objectRef={
            "resource": "clusterrolebindings", "name": "root-all"},
            responseStatus={"code": 201})),
        "",
    ]
    path = tmp_path / "audit.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mapping_counts_and_rejects(audit_log):
    result = k8s.read(audit_log)
    frame = result.frame
    # grep -c '"stage": "ResponseComplete"' minus the two broken lines
    assert len(frame) == 4
    assert [(r.line, r.reason.split(":")[0]) for r in result.rejected] == [
        (4, "bad JSON"), (5, "verb")]
    got = list(zip(frame.user, frame.action, frame.outcome, frame.resource, frame.source_ip,
                   strict=True))
    assert got == [
        ("alice", "get:secrets", "success", "prod/secrets/db", "10.1.2.3"),
        ("system:serviceaccount:ci:builder", "create:pods/exec", "failure",
         "prod/pods/web-0/exec", "10.1.2.3"),
        ("system:anonymous", "get:/healthz", "failure", "/healthz", "192.0.2.1"),
        ("alice", "create:clusterrolebindings", "success", "clusterrolebindings/root-all",
         "10.1.2.3"),
    ]
    assert list(frame.category) == ["api", "api", "api", "iam"]
    assert frame.timestamp[0] == pd.Timestamp("2024-06-01 09:00:00.012345", tz="UTC")
    assert list(frame.event_id) == ["a1", "a2", "a5", "a6"]
    assert "403 Forbidden" in frame.message[1]
    assert list(frame.user_kind) == ["", "", "anonymous", ""]
    assert result.skipped == {"other stage": {"RequestReceived": 1}}
    assert result.records == 7  # the blank line is not a record
    assert result.records == len(frame) + len(result.rejected) + result.n_skipped


EXEC_URI = ("/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&"
            "command=cat%20%2Fetc%2Fshadow&container=web&stdin=true&tty=true")


def exec_event(stage: str, code: int | None = 101, **fields) -> dict:
    return event(stage=stage, auditID="x1", verb="create", requestURI=EXEC_URI,
                 objectRef={"resource": "pods", "subresource": "exec", "namespace": "prod",
                            "name": "web-0"},
                 responseStatus={"code": code} if code else None, **fields)


def test_exec_is_kept_at_the_stage_it_was_logged_once_per_request(tmp_path):
    # an upgraded connection still open: logged at RequestReceived and ResponseStarted only
    path = tmp_path / "audit.log"
    path.write_text("\n".join(json.dumps(e) for e in (
        exec_event("RequestReceived", None), exec_event("ResponseStarted"),
        event(stage="RequestReceived", auditID="z9"))) + "\n")
    result = k8s.read(path)
    (row,) = result.frame.itertuples()
    assert (row.user, row.action, row.source_ip, row.outcome) == (
        "alice", "create:pods/exec", "10.1.2.3", "success")
    assert row.command == "sh -c cat /etc/shadow"
    assert "command: sh -c cat /etc/shadow" in row.message
    assert result.skipped == {"other stage": {"RequestReceived": 2}}
    # ... and when the session closed, its ResponseComplete replaces the earlier record
    path.write_text("\n".join(json.dumps(e) for e in (
        exec_event("RequestReceived", None), exec_event("ResponseStarted"),
        exec_event("ResponseComplete", 403))) + "\n")
    result = k8s.read(path)
    assert result.frame.outcome.tolist() == ["failure"]
    assert result.skipped == {"other stage": {"RequestReceived": 1, "ResponseStarted": 1}}
    assert result.records == 3


def test_pretty_printed_objects_and_event_lists_are_read(tmp_path):
    path = tmp_path / "audit.json"
    batch = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
             "items": [event(auditID="b1"), event(auditID="b2", stage="RequestReceived")]}
    path.write_text(json.dumps(event(auditID="p1"), indent=2) + "\n"
                    + json.dumps(event(auditID="p2")) + "\n"
                    + json.dumps(batch, indent=4) + "\n")
    assert detect_format(path) == "k8s"
    result = k8s.read(path)
    assert result.rejected == ()
    assert list(result.frame.event_id) == ["p1", "p2", "b1"]
    assert result.skipped == {"other stage": {"RequestReceived": 1}}


def test_a_broken_pretty_printed_object_costs_its_own_lines_only(tmp_path):
    path = tmp_path / "audit.json"
    pretty = json.dumps(event(auditID="p1"), indent=2).splitlines()
    broken = pretty[:5]  # cut off: never closes
    path.write_text("\n".join(broken + pretty + [json.dumps(event(auditID="p3"))]) + "\n")
    result = k8s.read(path)
    assert list(result.frame.event_id) == ["p1", "p3"]
    assert result.rejected[0].line == 1
    assert all(r.line <= len(broken) for r in result.rejected)
    assert result.records == len(result.frame) + len(result.rejected) + result.n_skipped


FALCO = "falco-k8s-audit"


def test_falco_exec_and_attach_captures_arrive_with_user_source_and_command():
    frames = {name: k8s.read(shared_data(FALCO, f"{name}.json")).frame
              for name in ("exec_pod", "attach_pod")}
    (exec_row,) = frames["exec_pod"].itertuples()
    assert (exec_row.user, exec_row.source_ip, exec_row.action, exec_row.command) == (
        "minikube-user", "192.168.99.1", "create:pods/exec", "bash")
    assert exec_row.resource == "default/pods/nginx-deployment-7998647bdf-phvq7/exec"
    (attach_row,) = frames["attach_pod"].itertuples()
    assert (attach_row.user, attach_row.source_ip, attach_row.action) == (
        "minikube-user", "192.168.99.1", "create:pods/attach")


def test_every_falco_capture_reads_without_a_reject():
    folder = shared_data(FALCO, "exec_pod.json").parent
    files = sorted(folder.glob("*.json"))
    assert len(files) == 47
    used = 0
    for file in files:
        result = k8s.read(file)
        assert result.rejected == (), file.name
        assert result.records == len(result.frame) + result.n_skipped, file.name
        used += len(result.frame)
    # the one record that is no audit Event: Falco's malformed-input case {"kind": 0}
    assert k8s.read(folder / "fal_01_003.json").skipped == {
        "not an audit Event": {"kind 0": 1}}
    assert used == 51
    anonymous = k8s.read(folder / "anonymous_creates_namespace_foo.json").frame
    assert anonymous.user_kind.tolist() == ["anonymous"]
    assert anonymous.source_ip.tolist() == ["192.168.99.1"]


def test_all_stages_on_request(audit_log):
    frame = k8s.read(audit_log, stages=("RequestReceived", "ResponseComplete")).frame
    assert (frame.event_id == "a2").sum() == 2


def test_sniff_and_missing_file(audit_log, tmp_path):
    assert k8s.sniff(audit_log.read_bytes())
    assert not k8s.sniff(b'{"kind": "Pod", "apiVersion": "v1"}\n')
    with pytest.raises(SourceError, match="gone.log"):
        k8s.read(tmp_path / "gone.log")
