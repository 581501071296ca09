"""Encryption at rest leaks nothing (issue 14, item 7): after the whole flow on an encrypted
trail, no user, address, resource or message of the input is in clear in any file beside it."""

from __future__ import annotations

import re

import orjson
import pandas as pd
import pytest

pytest.importorskip("cryptography", reason="encryption needs the cryptography extra")

from analyzer.alerts import existing_alert_ids
from analyzer.cli import main
from analyzer.errors import ConfigError
from analyzer.logger import AuditLogger
from analyzer.synth import SynthConfig, generate
from tests.services import EchoingRefuser

TOKEN = "tok-3f9c2a7d41e8b6"


def private(path, text):
    path.write_text(text)
    path.chmod(0o600)
    return path


def secrets_of(events: pd.DataFrame) -> set[str]:
    values = set()
    for column in ("user", "source_ip", "resource", "message"):
        values |= {str(v) for v in events[column].dropna().unique() if str(v)}
    # short names could turn up inside base64 ciphertext by chance; these cannot
    return {v for v in values if len(v) >= 10 or re.search(r"[^A-Za-z0-9+/=]", v)}


@pytest.fixture
def flow(tmp_path, key_file, capsys):
    trail, elsewhere = tmp_path / "trail", tmp_path / "elsewhere"
    trail.mkdir()
    elsewhere.mkdir()
    enc = private(elsewhere / "enc.key", "ab" * 32)
    signing = private(elsewhere / "model.key", "model-signing-secret")
    org = generate(SynthConfig(users=6, days=4, attack_days=1, seed=5))
    events = org.events.copy()
    events["message"] = "opened " + events["resource"].astype(str) + " for review"
    data = elsewhere / "input.csv"
    events.assign(timestamp=events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(
        data, index=False)
    log = trail / "audit.jsonl"
    common = ["--key-file", str(key_file), "--encryption-key-file", str(enc)]
    assert main(["ingest", str(data), "--log", str(log), *common]) == 0
    # score (self-fit) writes its alerts back into the trail
    assert main(["score", str(log), *common]) in (0, 1)
    alerts = sorted(existing_alert_ids(log))
    assert alerts, "the flow needs alerts to write back"
    assert main(["feedback", alerts[0], "--verdict", "malicious", "--log", str(log),
                 "--note", "confirmed with the data-owner team", "--analyst",
                 "analyst.quinn", *common]) == 0
    # watch: the library path the command runs, with the state file beside the log
    from analyzer.crypto import RecordCipher, load_encryption_key
    from analyzer.watch import Watcher, alert_writer

    def everything_alerts(frame: pd.DataFrame) -> pd.DataFrame:
        users = frame[frame["user"].astype(str) != ""].groupby("user").size()
        return pd.DataFrame({"entity_type": "user", "entity": users.index.astype(str),
                             "window_start": frame["timestamp"].min().floor("h"),
                             "window_end": frame["timestamp"].min().floor("h")
                             + pd.Timedelta("1h"),
                             "score": 0.99, "risk_score": 90.0, "alert": True,
                             "reasons": "watched"})

    key = load_encryption_key(enc)
    with AuditLogger(log, key=key_file, encryption_key=key, name="watch") as audit:
        watcher = Watcher(log, score_windows=everything_alerts,
                          on_alert=alert_writer(audit, model_id="m1"),
                          unseal=RecordCipher(keys=(key,)).unseal)
        watcher.poll()
        watcher.tick()
        watcher._save_state()
    # ship: a destination that echoes the request (token included) and refuses everything
    hook = EchoingRefuser()
    token = private(elsewhere / "token", TOKEN)
    assert main(["ship", str(log), "--to", "webhook", "--url", hook.url, "--once",
                 "--only", "alerts", "--token-file", str(token), *common]) == 1
    hook.shutdown()
    # a destination that is down: nothing delivered, nothing lost, nothing in clear
    assert main(["ship", str(log), "--to", "webhook", "--name", "down", "--once",
                 "--url", "http://127.0.0.1:9/hook", "--give-up-after", "0.2", *common]) == 2
    # train and promote: the promotion record names the actor
    models = elsewhere / "models"
    assert main(["train", str(log), "--register", "acme", "--models", str(models),
                 "--signing-key-file", str(signing), "--encryption-key-file", str(enc)]) == 0
    assert main(["models", "promote", "acme-1", "--models", str(models), "--log", str(log),
                 "--actor", "operator.rowan", *common]) == 0
    return trail, log, events, capsys.readouterr()


def test_nothing_of_the_input_is_in_clear_beside_an_encrypted_trail(flow, key_file):
    trail, log, events, output = flow
    files = [p for p in trail.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert any(n.endswith(".dead.jsonl") for n in names), names
    assert any(n.endswith(".watch-state") for n in names), names
    actions = [orjson.loads(x)["event"]["action"] for x in log.read_bytes().splitlines()]
    for action in ("anomaly.detected", "alert.feedback", "ship.rejected", "model.promote"):
        assert action in actions
    needles = secrets_of(events) | {"confirmed with the data-owner team", "analyst.quinn",
                                    "operator.rowan", TOKEN}
    assert len(needles) > 20
    for path in files:
        data = path.read_bytes()
        found = sorted(n for n in needles if n.encode() in data)
        assert not found, f"{path.name} holds in clear: {found[:5]}"
    assert TOKEN not in output.err and TOKEN not in output.out
    assert main(["verify", str(log), "--key-file", str(key_file)]) == 0


def test_a_writer_without_the_key_refuses_an_encrypted_trail(tmp_path, key, capsys):
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, key=key, encryption_key=bytes(range(32))) as audit:
        audit.log("login", user="zelda-secret-user")
    before = log.read_bytes()
    with pytest.raises(ConfigError, match="encrypted at rest"):
        AuditLogger(log, key=key)
    alert_id = "alert-x"
    assert main(["feedback", alert_id, "--verdict", "benign", "--log", str(log)]) == 2
    assert log.read_bytes() == before
