from __future__ import annotations

import warnings

import orjson
import pytest

from analyzer.errors import ModelLoadError
from analyzer.persistence import MODEL_MAGIC, load_model, read_model_header, save_model


class Tiny:
    """A stand-in for a fitted model: persistence stores any picklable object."""

    def __init__(self):
        self.metadata = {"n_events": 10, "training_start": "2026-01-01T00:00:00+00:00",
                         "training_end": "2026-01-02T00:00:00+00:00", "n_windows": 3,
                         "params": {"alerts_per_day": 5.0}, "feature_names": {"user": ["a"]}}
        self.weights = list(range(100))


class Exploit:
    """Unpickling this would run code: a loader that unpickles before checking would fire it."""

    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/audit-analyzer-pwned",))


def test_round_trip_with_metadata_and_card(tmp_path):
    path = tmp_path / "models" / "acme.joblib"
    info = save_model(Tiny(), path, evaluation={"pr_auc": 0.9})
    model = load_model(path, trust_unsigned=True)
    assert model.weights == list(range(100))
    assert model.metadata["model_id"] == info.model_id and len(info.model_id) == 12
    header, _ = read_model_header(path)
    versions = header["metadata"]["versions"]
    assert {"analyzer", "scikit-learn", "numpy", "python"} <= set(versions)
    card = path.with_suffix(".md").read_text()
    assert "acme" in card and "2026-01-01" in card and "pr_auc" in card


def test_one_changed_byte_is_refused_before_unpickling(tmp_path):
    path = tmp_path / "m.joblib"
    save_model(Tiny(), path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="modified"):
        load_model(path)


def test_a_forged_payload_with_a_recomputed_digest_needs_the_signature(tmp_path):
    import hashlib
    import io

    import joblib

    path = tmp_path / "m.joblib"
    save_model(Tiny(), path, key=b"model-signing-key-1")
    header, _ = read_model_header(path)
    buffer = io.BytesIO()
    joblib.dump(Exploit(), buffer)
    payload = buffer.getvalue()
    header["digest"] = "sha256:" + hashlib.sha256(payload).hexdigest()
    path.write_bytes(MODEL_MAGIC + orjson.dumps(header) + b"\n" + payload)
    with pytest.raises(ModelLoadError, match="signature"):
        load_model(path, key=b"model-signing-key-1")
    with pytest.raises(ModelLoadError, match="signature"):
        load_model(path, key=b"another-signing-key")


def test_unsigned_model_refused_when_a_key_or_signature_is_required(tmp_path):
    path = tmp_path / "m.joblib"
    save_model(Tiny(), path)
    with pytest.raises(ModelLoadError, match="not signed"):
        load_model(path, key=b"model-signing-key-1")
    # the library refuses by default, as the CLI does: trusting a pickle is explicit
    with pytest.raises(ModelLoadError, match="is not signed; pass the key"):
        load_model(path)
    save_model(Tiny(), path, key=b"model-signing-key-1")
    with pytest.raises(ModelLoadError, match="is signed, but no key was given"):
        load_model(path)
    assert load_model(path, trust_unsigned=True).weights


def test_a_plain_pickle_is_never_unpickled(tmp_path):
    import joblib
    path = tmp_path / "evil.joblib"
    joblib.dump(Exploit(), path)
    with pytest.raises(ModelLoadError, match="not an audit-analyzer model"):
        load_model(path)


def test_version_drift_warns_but_loads(tmp_path):
    path = tmp_path / "m.joblib"
    save_model(Tiny(), path)
    header, offset = read_model_header(path)
    payload = path.read_bytes()[offset:]
    header["metadata"]["versions"]["scikit-learn"] = "0.1.0"
    path.write_bytes(MODEL_MAGIC + orjson.dumps(header) + b"\n" + payload)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_model(path, trust_unsigned=True).weights
    assert any("scikit-learn 0.1.0" in str(w.message) for w in caught)


def test_missing_or_malformed_files(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope.joblib")
    bad = tmp_path / "bad.joblib"
    bad.write_bytes(MODEL_MAGIC + b"{not json\n")
    with pytest.raises(ModelLoadError, match="malformed"):
        load_model(bad)


def test_ed25519_signed_models_verify_with_the_public_key_only(tmp_path):
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "m.joblib"
    save_model(Tiny(), path, key=pem)
    assert read_model_header(path)[0]["signature"].startswith("ed25519:")
    assert load_model(path, key=public).weights
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ModelLoadError, match="signature does not match"):
        load_model(path, key=other)
    with pytest.raises(ModelLoadError, match="signature does not match"):
        load_model(path, key=b"an hmac secret is not the public key")


def test_cli_refuses_unsigned_or_wrongly_signed_models_unless_trusted(tmp_path, capsys):
    from analyzer.cli import main
    from analyzer.logger import AuditLogger

    log = tmp_path / "audit.jsonl"
    with AuditLogger(log) as audit:
        for hour in range(30):
            for user in ("alice", "bob", "carol"):
                audit.log("login", user=user, outcome="success", source_ip="10.0.0.1",
                          timestamp=f"2026-01-{1 + hour // 24:02d}T{hour % 24:02d}:10:00Z")
    secret = tmp_path / "model.key"
    secret.write_text("model-signing-secret")
    secret.chmod(0o600)
    wrong = tmp_path / "wrong.key"
    wrong.write_text("another-signing-secret")
    wrong.chmod(0o600)
    unsigned, signed = tmp_path / "unsigned.joblib", tmp_path / "signed.joblib"
    from analyzer.model import AuditModel
    from analyzer.sources import read_events

    save_model(AuditModel(n_estimators=10).fit(read_events(log).frame), unsigned)
    assert main(["train", str(log), "--model", str(signed), "--signing-key-file", str(secret)]) == 0
    capsys.readouterr()
    score = ["score", str(log), "--no-write-back", "--model"]
    assert main([*score, str(unsigned)]) == 2
    assert "not signed" in capsys.readouterr().err
    assert main([*score, str(unsigned), "--trust-unsigned-model"]) == 0
    assert main([*score, str(signed), "--signing-key-file", str(wrong)]) == 2
    assert "signature does not match" in capsys.readouterr().err
    assert main([*score, str(signed), "--signing-key-file", str(secret)]) == 0
    # a trusted file that unpickles to something else is one line, not a traceback
    other = tmp_path / "other.joblib"
    save_model(Tiny(), other)
    capsys.readouterr()
    assert main([*score, str(other), "--trust-unsigned-model"]) == 2
    assert "holds a Tiny, not a model made by 'train'" in capsys.readouterr().err


def test_the_shipped_default_model_verifies_with_its_public_key_and_scores():
    pytest.importorskip("cryptography")
    from pathlib import Path

    from analyzer.synth import SynthConfig, generate

    models = Path(__file__).resolve().parents[1] / "models"
    model = load_model(models / "default.joblib", key=(models / "default.pub").read_bytes())
    org = generate(SynthConfig(users=12, days=3, attack_days=1, seed=9))
    scores = model.score(org.events)
    assert len(scores) and scores["score"].between(0, 1).all()
    assert "signed (Ed25519)" in (models / "default.md").read_text()
