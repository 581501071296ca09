from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyzer.errors import SchemaError
from analyzer.events import (
    AuditEvent,
    Level,
    Outcome,
    decode_record,
    encode_record,
    format_timestamp,
    parse_timestamp,
)

T0 = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def test_timestamp_is_utc_with_microseconds_and_z():
    assert format_timestamp(T0) == "2026-03-04T05:06:07.890123Z"
    plus2 = T0.astimezone(timezone(timedelta(hours=2)))
    assert format_timestamp(plus2) == "2026-03-04T05:06:07.890123Z"
    assert format_timestamp(datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("text", ["2026-03-04T05:06:07.890123Z", "2026-03-04T07:06:07.890123+02:00",
                                  "1772600767.890123"])
def test_parse_timestamp_accepts_iso_offsets_and_epoch(text):
    assert abs(parse_timestamp(text) - T0) < timedelta(milliseconds=1)


def test_parse_timestamp_rejects_garbage():
    with pytest.raises(SchemaError, match="unparseable"):
        parse_timestamp("yesterday")


def test_event_validates_its_fields():
    with pytest.raises(SchemaError, match="source.ip"):
        AuditEvent("login", timestamp=T0, source_ip="not-an-ip")
    with pytest.raises(SchemaError, match="outcome"):
        AuditEvent("login", timestamp=T0, outcome="maybe")
    with pytest.raises(SchemaError, match="event.category"):
        AuditEvent("login", timestamp=T0, category="nonsense")
    with pytest.raises(SchemaError, match="unknown event field"):
        AuditEvent("login", timestamp=T0, colour="red")
    with pytest.raises(SchemaError, match="resource.bytes"):
        AuditEvent("login", timestamp=T0, bytes="12")


def test_event_is_frozen():
    ev = AuditEvent("login", timestamp=T0)
    with pytest.raises(AttributeError):
        ev.user = "mallory"  # type: ignore[misc]


def test_levels_order_and_parse():
    assert Level.parse("warn") is Level.WARNING
    assert Level.parse(35) is Level.WARNING  # between stdlib levels rounds down
    assert Level.DEBUG < Level.INFO < Level.WARNING < Level.ERROR < Level.CRITICAL
    assert [lvl.label for lvl in Level] == ["debug", "info", "warning", "error", "critical"]


def test_outcome_synonyms():
    assert Outcome.parse("FAILED") is Outcome.FAILURE
    assert Outcome.parse(True) is Outcome.SUCCESS
    assert Outcome.parse(None) is Outcome.UNKNOWN


def test_encoder_refuses_unknown_types_rather_than_repr():
    with pytest.raises(SchemaError, match="cannot encode"):
        encode_record({"x": object()})


def test_newlines_and_control_characters_stay_on_one_line():
    doc = AuditEvent("login", timestamp=T0, user="eve\nINJECTED\r\x00\x1b[2J",
                     message="a\nb").to_ecs()
    line = encode_record(doc)
    assert b"\n" not in line and b"\r" not in line and b"\x00" not in line
    assert decode_record(line)["user"]["name"] == "eve\nINJECTED\r\x00\x1b[2J"


_text = st.text(min_size=1, max_size=20)
_opt = st.none() | _text
events = st.builds(
    AuditEvent,
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=20),
    timestamp=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                           timezones=st.just(UTC)),
    level=st.sampled_from(list(Level)),
    message=st.text(max_size=50),
    outcome=st.sampled_from(list(Outcome)),
    user=_opt,
    roles=st.lists(_text, max_size=3).map(tuple),
    source_ip=st.none() | st.ip_addresses().map(str),
    country=_opt, city=_opt, resource=_opt, resource_type=_opt,
    bytes=st.none() | st.integers(0, 2**62),
    session=_opt, host=_opt, service=_opt,
    pid=st.none() | st.integers(0, 2**31),
    origin_line=st.none() | st.integers(0, 10**6),
    id=_opt,
    sequence=st.none() | st.integers(1, 2**62),
)


@given(events)
def test_ecs_round_trip_preserves_every_field(event):
    line = encode_record(event.to_ecs())
    assert AuditEvent.from_ecs(decode_record(line)) == event
