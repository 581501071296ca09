"""Every field the logger can write is an ECS field of the right type, or a listed extension."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson

from analyzer.events import ECS_FIELD_NAMES, EXTENSION_FIELDS, AuditEvent
from analyzer.logger import AuditLogger
from tests.conftest import shared_data

ECS_TYPES = {  # python type of a JSON value -> ECS types it may carry
    str: {"keyword", "wildcard", "match_only_text", "text", "date", "ip", "constant_keyword"},
    int: {"long", "integer", "float", "scaled_float", "double"},
    float: {"float", "scaled_float", "double"},
    bool: {"boolean"},
}


def flatten(doc, prefix=""):
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not name.startswith("analyzer"):
            yield from flatten(value, name + ".")
        else:
            yield name, value


def is_extension(name: str) -> bool:
    return name in EXTENSION_FIELDS or any(
        e.endswith(".*") and (name.startswith(e[:-1]) or name == e[:-2])
        for e in EXTENSION_FIELDS)


def every_field_record(tmp_path):
    """One logger record and one alert-shaped event with every field set."""
    path = tmp_path / "all.jsonl"
    with AuditLogger(path, service="svc", geo=lambda ip: ("DE", "Berlin")) as audit:
        audit.log("model.download", user="bob", roles=["ml"], outcome="success",
                  source_ip="10.0.0.1", resource="m", resource_type="model", bytes=5,
                  session="s1", category="api", extra={"details": {"k": 1}})
        t = datetime(2026, 1, 1, tzinfo=UTC)
        audit.log_event(AuditEvent(
            "anomaly.detected", timestamp=t, kind="alert", level="critical", user="bob",
            start=t, end=t, risk_score=97.5, rule_name="r", rule_id="i", rule_version="1",
            category="intrusion_detection", analyzer={"reasons": ["x"]}))
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_every_written_field_is_ecs_or_a_listed_extension(tmp_path):
    ecs = json.loads(shared_data("ecs", "ecs_fields.json").read_text())["fields"]
    seen = set()
    for record in every_field_record(tmp_path):
        for name, value in flatten(record):
            seen.add(name)
            if is_extension(name):
                continue
            assert name in ecs, f"{name} is neither ECS nor a listed extension"
            spec = ecs[name]
            if "array" in spec.get("normalize", []):
                assert isinstance(value, list), f"{name} must be an array in ECS"
                values = value
            else:
                values = [value]
            for v in values:
                allowed = ECS_TYPES[type(v)]
                assert spec["type"] in allowed, f"{name}: {type(v).__name__} for {spec['type']}"
                if "allowed" in spec:
                    assert v in spec["allowed"], f"{name}: {v!r} not an allowed ECS value"
    # the table the codec uses is fully exercised by this test
    covered = {n for n in ECS_FIELD_NAMES.values() if n != "analyzer"}
    assert covered <= seen, f"fields never written here: {sorted(covered - seen)}"
