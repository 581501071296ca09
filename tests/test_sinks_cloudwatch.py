"""CloudWatch Logs sink: batch planning within the service limits, and delivery to moto
running as a real HTTP server on a loopback port (no in-process mocks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.errors import ConfigError
from analyzer.logger import AuditLogger
from analyzer.sinks.cloudwatch import (
    EVENT_OVERHEAD,
    MAX_BYTES,
    MAX_EVENTS,
    MAX_SPAN_MS,
    CloudWatchSink,
    plan_batches,
)
from analyzer.sinks.shipper import DeliveryError, Record, Shipper


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * MAX_SPAN_MS), st.integers(1, 200_000)),
                max_size=80))
def test_planned_calls_respect_every_putlogevents_limit(events):
    indexed = [(ts, size, i) for i, (ts, size) in enumerate(events)]
    calls = plan_batches(indexed)
    assert sorted(i for c in calls for i in c) == list(range(len(events)))
    last = -1
    for call in calls:
        stamps = [events[i][0] for i in call]
        assert stamps == sorted(stamps) and stamps[0] >= last  # chronological throughout
        last = stamps[-1]
        assert stamps[-1] - stamps[0] <= MAX_SPAN_MS
        assert len(call) <= MAX_EVENTS
        assert sum(events[i][1] + EVENT_OVERHEAD for i in call) <= MAX_BYTES


def test_count_limit_splits_at_ten_thousand():
    calls = plan_batches([(0, 1, i) for i in range(MAX_EVENTS + 5)])
    assert [len(c) for c in calls] == [MAX_EVENTS, 5]


class FailingClient:
    """Takes the first call, then throttles: only the rest of the batch is retried."""

    def __init__(self):
        self.calls = 0

    def put_log_events(self, **kwargs):
        from botocore.exceptions import ClientError
        self.calls += 1
        if self.calls > 1:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}},
                              "PutLogEvents")
        return {}

    def create_log_group(self, **kwargs):
        pass

    def create_log_stream(self, **kwargs):
        pass


def _rec(ts: str, i: int) -> Record:
    doc = {"@timestamp": ts, "event": {"id": str(i)}}
    return Record(orjson.dumps(doc), doc, 0)


def test_a_throttled_second_call_retries_only_what_was_not_sent():
    pytest.importorskip("botocore")
    sink = CloudWatchSink("g", "s", client=FailingClient())
    batch = [_rec("2024-05-01T00:00:00Z", 0), _rec("2024-05-03T00:00:00Z", 1)]
    result = sink.send(batch)
    assert result.retry == (1,) and "ThrottlingException" in result.retry_reason
    with pytest.raises(DeliveryError, match="ThrottlingException"):
        sink.send(batch[1:])


def test_bad_stream_names_are_refused():
    with pytest.raises(ConfigError):
        CloudWatchSink("g", "a:b", client=object())


# -- against moto in server mode ------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch):
    # boto3's own chain reads these: fake credentials for the local server only.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def _read_back(endpoint: str, group: str, stream: str) -> list[dict]:
    import boto3
    client = boto3.client("logs", region_name="eu-west-1", endpoint_url=endpoint)
    events, token = [], None
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = client.get_log_events(logGroupName=group, logStreamName=stream,
                                     startFromHead=True, **kwargs)
        events += page["events"]
        if page["nextForwardToken"] == token or not page["events"]:
            return events
        token = page["nextForwardToken"]


@pytest.mark.integration
def test_events_are_readable_back_from_cloudwatch_in_order(moto_endpoint, aws_env, log_path):
    now = datetime.now(UTC).replace(microsecond=0)
    with AuditLogger(log_path, service="api") as audit:
        ids = [audit.log("login", user=f"u{i}", outcome="success",
                         timestamp=now - timedelta(minutes=30 - i)) for i in range(25)]
        # imported records can arrive out of order; CloudWatch must get them sorted
        late = audit.log("dataset.read", user="x", timestamp=now - timedelta(hours=1))
    sink = CloudWatchSink("/ai/audit", "api-1", region="eu-west-1", endpoint_url=moto_endpoint)
    stats = Shipper(log_path, sink, batch_records=10).run()
    assert stats.delivered == 26 and stats.rejected == 0
    events = _read_back(moto_endpoint, "/ai/audit", "api-1")
    got = [orjson.loads(e["message"])["event"]["id"] for e in events]
    assert got == [late, *ids]  # every event, in time order
    for event in events:
        stamp = orjson.loads(event["message"])["@timestamp"]
        assert event["timestamp"] == int(datetime.fromisoformat(stamp).timestamp() * 1000)


@pytest.mark.integration
def test_an_existing_group_and_stream_are_reused(moto_endpoint, aws_env, log_path):
    import boto3
    client = boto3.client("logs", region_name="eu-west-1", endpoint_url=moto_endpoint)
    client.create_log_group(logGroupName="/pre/existing")
    client.create_log_stream(logGroupName="/pre/existing", logStreamName="s")
    with AuditLogger(log_path) as audit:
        audit.log("login", user="alice")
    sink = CloudWatchSink("/pre/existing", "s", client=client)
    assert Shipper(log_path, sink).run().delivered == 1
    assert len(_read_back(moto_endpoint, "/pre/existing", "s")) == 1
