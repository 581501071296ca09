"""Train the default model shipped in models/: the demo's organisation, signed with Ed25519.

    python models/train_default.py --private-key /secure/default-model.pem

Writes ``models/default.joblib``, its model card ``models/default.md`` and the public key
``models/default.pub`` that verifies it (``--signing-key-file models/default.pub``). Without
``--private-key`` a fresh key pair is made and the private half is not kept, so the shipped
public key is the only way to check the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from analyzer.evaluation import evaluate
from analyzer.model import AuditModel
from analyzer.persistence import save_model
from analyzer.synth import SynthConfig, generate

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--private-key", type=Path, help="Ed25519 private key (PEM)")
    args = parser.parse_args()
    if args.private_key:
        pem = args.private_key.read_bytes()
        private = serialization.load_pem_private_key(pem, password=None)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    org = generate(SynthConfig())  # the demo's organisation: 60 people, 3 weeks
    model = AuditModel().fit(org.train_events)
    scores = model.score(org.test_events)
    figures = evaluate(scores, org.labels, alerts_per_day=10).to_dict()
    evaluation = {k: figures[k] for k in ("roc_auc", "pr_auc", "instances_caught",
                                          "instances_total") if k in figures}
    evaluation["note"] = "synthetic demo organisation, last week scored, 10 alerts/day"
    info = save_model(model, HERE / "default.joblib", key=pem, name="default",
                      evaluation=evaluation)
    (HERE / "default.pub").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    print(f"models/default.joblib: model {info.model_id}, {evaluation}")


if __name__ == "__main__":
    main()
