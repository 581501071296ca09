"""The Kubernetes audit adapter on hand-written audit.k8s.io/v1 events."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analyzer.errors import SourceError
from analyzer.sources import k8s


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


def test_all_stages_on_request(audit_log):
    frame = k8s.read(audit_log, stages=("RequestReceived", "ResponseComplete")).frame
    assert (frame.event_id == "a2").sum() == 2


def test_sniff_and_missing_file(audit_log, tmp_path):
    assert k8s.sniff(audit_log.read_bytes())
    assert not k8s.sniff(b'{"kind": "Pod", "apiVersion": "v1"}\n')
    with pytest.raises(SourceError, match="gone.log"):
        k8s.read(tmp_path / "gone.log")
