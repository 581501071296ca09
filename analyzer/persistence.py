"""The one place that saves and loads model artifacts (DESIGN contract 5).

A model file is a small header followed by a joblib payload::

    AUDIT-ANALYZER-MODEL 1\\n
    {"digest": "sha256:...", "signature": "hmac-sha256:..." | null, "metadata": {...}}\\n
    <joblib bytes>

The header is JSON, read without unpickling anything. Loading recomputes the payload's
SHA-256 and, when a key is given, its HMAC over the digest and the metadata, and refuses a
file that does not match *before* the payload is unpickled: unpickling runs code, so an
unchecked model file is an attack vector. A model made with other versions of scikit-learn,
numpy or this package loads with a warning, not a crash.

Beside each artifact, :func:`save_model` writes a short model card (``<name>.md``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import os
import platform
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import sklearn

from analyzer.errors import ConfigError, ModelLoadError
from analyzer.files import atomic_write
from analyzer.integrity import check_key_strength

__all__ = ["MODEL_MAGIC", "ModelInfo", "load_model", "read_model_header", "save_model"]

_log = logging.getLogger(__name__)

MODEL_MAGIC = b"AUDIT-ANALYZER-MODEL 1\n"
_MAX_HEADER = 1 << 20


def _versions() -> dict[str, str]:
    from analyzer import __version__

    return {"analyzer": __version__, "scikit-learn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


class ModelInfo(dict[str, Any]):
    """The header metadata of a model file (a plain dict with a few named accessors)."""

    @property
    def model_id(self) -> str:
        return str(self.get("model_id", ""))

    @property
    def created(self) -> str:
        return str(self.get("created", ""))


def _signed_message(digest: str, metadata: dict[str, Any]) -> bytes:
    return digest.encode() + b"\n" + orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS)


def _signature(key: bytes, digest: str, metadata: dict[str, Any]) -> str:
    """HMAC-SHA256 with a shared secret, or Ed25519 with a PEM private key."""
    message = _signed_message(digest, metadata)
    if _is_pem(key):
        private = _pem_key(key, private=True)
        return "ed25519:" + base64.b64encode(private.sign(message)).decode("ascii")
    try:
        check_key_strength(key, "model signing key")
    except ConfigError as exc:
        raise ModelLoadError(str(exc)) from None
    return "hmac-sha256:" + hmac.new(key, message, hashlib.sha256).hexdigest()


def _is_pem(key: bytes) -> bool:
    return key.lstrip().startswith(b"-----BEGIN")


def _pem_key(key: bytes, *, private: bool) -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ModelLoadError('Ed25519 model signatures need the cryptography package: '
                             'pip install "audit-analyzer[encryption]"') from None
    try:
        loaded = (serialization.load_pem_private_key(key, password=None) if private
                  else serialization.load_pem_public_key(key))
    except ValueError:
        kind = "private" if private else "public"
        raise ModelLoadError(f"not a PEM {kind} key") from None
    if private and isinstance(loaded, ed25519.Ed25519PrivateKey):
        return loaded
    if not private and isinstance(loaded, ed25519.Ed25519PublicKey):
        return loaded
    if private and hasattr(loaded, "public_key"):
        raise ModelLoadError("model signing keys in PEM must be Ed25519")
    raise ModelLoadError("model verification keys in PEM must be Ed25519 public keys")


def _signature_holds(key: bytes, signature: str, digest: str, metadata: dict[str, Any]) -> bool:
    if signature.startswith("ed25519:"):
        if not _is_pem(key):
            return False
        from cryptography.exceptions import InvalidSignature

        public = (_pem_key(key, private=True).public_key() if b"PRIVATE" in key
                  else _pem_key(key, private=False))
        try:
            public.verify(base64.b64decode(signature[8:]), _signed_message(digest, metadata))
        except (InvalidSignature, ValueError):
            return False
        return True
    if _is_pem(key):
        return False
    return hmac.compare_digest(signature, _signature(key, digest, metadata))


def save_model(model: Any, path: str | os.PathLike[str], *, key: bytes | None = None,
               name: str | None = None, evaluation: dict[str, Any] | None = None,
               card: bool = True) -> ModelInfo:
    """Write ``model`` (a fitted :class:`~analyzer.model.AuditModel`) to ``path``.

    Parameters
    ----------
    model
        The fitted model; its ``metadata`` dict is copied into the header.
    path
        Destination file (conventionally ``models/<name>.joblib``).
    key
        Signing key: a shared secret (HMAC-SHA256) or an Ed25519 private key in PEM (whose
        public key can then be shipped to verify the model elsewhere).
    name
        A name for the model card (default: the file's stem).
    evaluation
        Evaluation figures to record in the header and the card.
    card
        Whether to write the markdown model card beside the artifact.

    Returns
    -------
    ModelInfo
        The header metadata written, including ``model_id`` and ``digest``.
    """
    target = Path(path)
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=3)
    payload = buffer.getvalue()
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    metadata = dict(getattr(model, "metadata", {}) or {})
    metadata = orjson.loads(orjson.dumps(metadata, default=str))  # plain JSON values only
    metadata.update({
        "model_id": digest[7:19],
        "name": name or target.stem,
        "created": created,
        "versions": _versions(),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
    })
    if evaluation:
        metadata["evaluation"] = orjson.loads(orjson.dumps(evaluation, default=str))
    header = {"digest": digest, "signature": _signature(key, digest, metadata) if key else None,
              "metadata": metadata}
    target.parent.mkdir(parents=True, exist_ok=True)
    # 0600, through a temporary file with a random name: a model file is code to whoever
    # loads it, so no one else may write it, nor plant a link where it is written
    atomic_write(target, MODEL_MAGIC + orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
                 + b"\n" + payload)
    if card:
        signed = None if not key else ("Ed25519" if _is_pem(key) else "HMAC-SHA256")
        atomic_write(target.with_suffix(".md"),
                     model_card(metadata, digest, signed=signed).encode("utf-8"),
                     mode=0o644, fsync=False)
    return ModelInfo(metadata, digest=digest)


def read_model_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The parsed header of a model file and the offset of its payload (nothing unpickled)."""
    source = Path(path)
    try:
        with source.open("rb") as handle:
            magic = handle.read(len(MODEL_MAGIC))
            if magic != MODEL_MAGIC:
                raise ModelLoadError(f"{source}: not an audit-analyzer model file "
                                     "(missing header); refusing to unpickle it")
            line = handle.readline(_MAX_HEADER)
    except FileNotFoundError:
        raise ModelLoadError(f"{source}: model file not found") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{source}: is a directory, expected a model file") from None
    try:
        header = orjson.loads(line)
        if not isinstance(header, dict) or not isinstance(header.get("metadata"), dict) \
                or not str(header.get("digest", "")).startswith("sha256:"):
            raise ValueError
    except (orjson.JSONDecodeError, ValueError):
        raise ModelLoadError(f"{source}: model header is malformed; refusing to load") from None
    return header, len(MODEL_MAGIC) + len(line)


def load_model(path: str | os.PathLike[str], *, key: bytes | None = None,
               trust_unsigned: bool = False) -> Any:
    """Load a model file after checking its digest and signature, before unpickling.

    Parameters
    ----------
    path
        The model file.
    key
        Verification key: the shared secret, or the Ed25519 public key in PEM. The file
        must carry a valid signature made with it.
    trust_unsigned
        DANGEROUS: without a key, load the file anyway. A model file is a pickle: loading
        it runs the code inside it, so this is only for files you made yourself and kept
        where no one else can write. Without a key and without this, loading is refused.

    Raises
    ------
    ModelLoadError
        The file is missing, not a model file, modified, or wrongly signed or unsigned.
    """
    source = Path(path)
    header, offset = read_model_header(source)
    payload = source.read_bytes()[offset:]
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    if not hmac.compare_digest(digest, str(header["digest"])):
        raise ModelLoadError(f"{source}: model file was modified (digest does not match); "
                             "refusing to load it")
    metadata = header["metadata"]
    signature = header.get("signature")
    if key is not None:
        if not signature:
            raise ModelLoadError(f"{source}: model file is not signed; refusing to load it "
                                 "with a verification key")
        if not _signature_holds(key, str(signature), digest, metadata):
            raise ModelLoadError(f"{source}: model signature does not match the key; "
                                 "refusing to load it")
    elif not trust_unsigned:
        state = "is signed, but no key was given to check it" if signature else "is not signed"
        raise ModelLoadError(f"{source}: model {state}; pass the key it was signed with "
                             "(key=, --signing-key-file), or trust it explicitly "
                             "(trust_unsigned=True, --trust-unsigned-model) if you made it")
    _warn_on_version_drift(source, metadata.get("versions", {}))
    try:
        model = joblib.load(io.BytesIO(payload))
    except Exception as exc:  # the digest matched, so this is an environment problem
        raise ModelLoadError(f"{source}: cannot load the model: {exc}") from exc
    model.metadata = dict(getattr(model, "metadata", {}) or {}, **{
        k: metadata[k] for k in ("model_id", "name", "created", "versions") if k in metadata})
    return model


def _warn_on_version_drift(source: Path, recorded: dict[str, str]) -> None:
    current = _versions()
    drift = [f"{name} {recorded[name]} (now {current[name]})" for name in
             ("scikit-learn", "numpy", "analyzer")
             if recorded.get(name) and recorded[name] != current[name]]
    if drift:
        warnings.warn(f"{source}: model was made with {', '.join(drift)}; scores may differ "
                      "slightly. Retrain to remove this warning.", UserWarning, stacklevel=3)


def model_card(metadata: dict[str, Any], digest: str, *, signed: str | None) -> str:
    """A short markdown model card from a model's header metadata."""
    params = metadata.get("params", {})
    versions = metadata.get("versions", {})
    features = metadata.get("feature_names", {})
    lines = [
        f"# Model card: {metadata.get('name', 'model')}",
        "",
        f"- **Model id**: `{metadata.get('model_id', '')}` (digest `{digest}`)",
        f"- **Created**: {metadata.get('created', '')}; "
        f"{f'signed ({signed})' if signed else 'not signed'}",
        f"- **Kind**: {metadata.get('model_class', '')}: per-entity windowed features, "
        "rarity-weighted IsolationForest per entity type, calibrated percentiles and an "
        "alert budget",
        f"- **Training data**: {metadata.get('training_start', '?')} to "
        f"{metadata.get('training_end', '?')}; {metadata.get('n_events', '?'):,} events, "
        f"{metadata.get('n_windows', '?'):,} windows"
        if isinstance(metadata.get("n_events"), int) else "- **Training data**: unknown",
        f"- **Entities**: {metadata.get('n_entities', {})}",
        f"- **Parameters**: {', '.join(f'{k}={v!r}' for k, v in params.items())}",
        f"- **Versions**: {', '.join(f'{k} {v}' for k, v in versions.items())}",
        "",
        "## Features",
        "",
    ]
    for etype, names in features.items():
        lines.append(f"- {etype}: {', '.join(names)}")
    evaluation = metadata.get("evaluation")
    if evaluation:
        lines += ["", "## Evaluation", ""]
        for k, v in evaluation.items():
            lines.append(f"- {k}: {v}")
    lines += ["", "## Intended use and limits", "",
              "Flags unusual access in audit trails relative to each entity's own past and "
              "its peers, for a person to review. It is not a verdict: alerts carry their "
              "reasons, and known-benign patterns should be suppressed, not ignored. Retrain "
              "when the organisation changes (new teams, systems or working patterns).", ""]
    return "\n".join(lines)
