"""Encryption at rest of each record's sensitive fields (AES-256-GCM).

Who and what (``user``, ``source``, ``resource``, ``session``, ``message`` and the record's
``analyzer`` details) are sealed into ``analyzer.encrypted``; time, level, action, outcome,
sequence and hash stay in clear for ordering, filtering and verification. The hash chain covers
the ciphertext as written, so ``verify`` needs only the integrity key, never this one.

Each record gets a fresh 96-bit nonce; the record's ``event.id`` is the associated data, so
a ciphertext moved onto another record does not decrypt. The key id in each record (the first
16 hex digits of the key's SHA-256) tells a reader which key to use, so keys can rotate:
readers accept several.

Requires the ``cryptography`` package (``pip install "audit-analyzer[encryption]"``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from binascii import b2a_base64
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from analyzer.errors import ConfigError, SchemaError, SourceError
from analyzer.events import ECS_COLUMNS, ecs_value

__all__ = ["ENVELOPE_KEYS", "ENVELOPE_PATH", "SEALED_COLUMNS", "SEALED_MARK",
           "SENSITIVE_FIELDS", "RecordCipher", "key_id", "load_encryption_key", "starts_sealed",
           "trail_is_sealed"]

#: Top-level record fields that are encrypted; everything else stays in clear.
SENSITIVE_FIELDS = ("analyzer", "message", "resource", "session", "source", "user")
#: Normalized columns whose values a sealed record holds in its envelope, and where in the
#: sealed fields (every column of :data:`~analyzer.events.ECS_COLUMNS` under a sensitive
#: field): what a reader opens to fill them.
SEALED_COLUMNS: Mapping[str, tuple[str, ...]] = {
    column: path for column, path in ECS_COLUMNS.items() if path[0] in SENSITIVE_FIELDS
}
#: Where a sealed record keeps its envelope, and the envelope's fields a reader needs.
ENVELOPE_PATH = ("analyzer", "encrypted")
ENVELOPE_KEYS = ("kid", "nonce", "ct")
ALGORITHM = "A256GCM"
#: How a sealed record's line shows it (the logger writes the envelope in canonical form).
SEALED_MARK = b'"encrypted":{"alg"'


def starts_sealed(path: str | os.PathLike[str], *, head: int = 1 << 16) -> bool:
    """Whether the first records of the log at ``path`` are encrypted at rest."""
    with open(path, "rb") as handle:
        return SEALED_MARK in handle.read(head)


def trail_is_sealed(path: str | os.PathLike[str], *, span: int = 1 << 16) -> bool:
    """Whether the log at ``path`` holds records encrypted at rest, at its start or its end.

    What a writer checks before appending: a trail that was encrypted stays encrypted, so a
    writer without the key must refuse rather than add records in clear.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if SEALED_MARK in handle.read(span):
                return True
            if size > span:
                handle.seek(max(span, size - span) - len(SEALED_MARK))
                return SEALED_MARK in handle.read()
    except FileNotFoundError:
        return False
    return False


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise ConfigError('encryption needs the cryptography package: '
                          'pip install "audit-analyzer[encryption]"') from None
    return AESGCM


def key_id(key: bytes) -> str:
    """The id written into each record: identifies the key without revealing it."""
    return hashlib.sha256(b"audit-analyzer key id\n" + key).hexdigest()[:16]


def load_encryption_key(source: bytes | str | os.PathLike[str]) -> bytes:
    """A 32-byte key from bytes, or from a file holding 32 raw bytes or 64 hex digits."""
    if isinstance(source, bytes):
        raw = source
    else:
        path = Path(source)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise SourceError(f"{path}: encryption key file not found") from None
        stripped = raw.strip()
        if len(stripped) == 64:
            with contextlib.suppress(UnicodeDecodeError, ValueError):
                raw = bytes.fromhex(stripped.decode("ascii"))
    if len(raw) != 32:
        raise ConfigError("an encryption key must be 32 bytes (or 64 hex digits in a file); "
                          "make one with: python -c 'import secrets; "
                          "print(secrets.token_hex(32))' > audit.enc.key")
    return raw


class RecordCipher:
    """Seals and opens the sensitive part of records.

    Parameters
    ----------
    key
        The key new records are sealed with (32 bytes), or ``None`` to only open.
    keys
        Further keys accepted when opening (older keys after a rotation).
    """

    def __init__(self, key: bytes | None = None, *, keys: Iterable[bytes] = ()) -> None:
        aesgcm = _aesgcm()
        self._sealer = aesgcm(key) if key is not None else None
        self.key_id = key_id(key) if key is not None else None
        self._kid_bytes = (self.key_id or "").encode()
        self._fixed, self._counter = os.urandom(8), 0
        self._openers = {key_id(k): aesgcm(k) for k in (*keys, *([key] if key else []))}

    def seal(self, sensitive: Mapping[str, Any], event_id: str) -> dict[str, str]:
        """The ``analyzer.encrypted`` envelope for ``sensitive`` fields of record ``event_id``."""
        return self.seal_json(orjson.dumps(sensitive), event_id)

    def seal_json(self, plain: bytes, event_id: str) -> dict[str, str]:
        """Like :meth:`seal`, for fields already encoded as one JSON object."""
        return orjson.loads(self.seal_envelope(plain, event_id))

    def seal_envelope(self, plain: bytes, event_id: str) -> bytes:
        """The envelope as canonical JSON bytes (the logger's per-event path)."""
        if self._sealer is None:
            raise ConfigError("this cipher has no key to encrypt with")
        nonce = self._next_nonce()
        sealed = self._sealer.encrypt(nonce, plain, event_id.encode())
        return b'{"alg":"A256GCM","ct":"%s","kid":"%s","nonce":"%s"}' % (
            b2a_base64(sealed, newline=False), self._kid_bytes, b2a_base64(nonce, newline=False))

    def _next_nonce(self) -> bytes:
        # NIST SP 800-38D 8.2.1: a fixed field random per cipher object and an invocation
        # counter, so nonces never repeat within one writer and collide across writers only
        # with probability ~2^-64; a fresh fixed field is drawn before the counter wraps.
        self._counter += 1
        if self._counter >= 1 << 32:
            self._fixed, self._counter = os.urandom(8), 1
        return self._fixed + self._counter.to_bytes(4, "big")

    def open(self, envelope: Mapping[str, Any], event_id: str) -> dict[str, Any]:
        """The sensitive fields back, or :class:`SchemaError` saying why not."""
        kid = str(envelope.get("kid", ""))
        opener = self._openers.get(kid)
        if opener is None:
            raise SchemaError(f"record {event_id} is encrypted with key id {kid!r}, which was "
                              "not given")
        try:
            plain = opener.decrypt(base64.b64decode(str(envelope["nonce"])),
                                   base64.b64decode(str(envelope["ct"])), event_id.encode())
        except Exception:  # InvalidTag, bad base64, missing fields: all mean "not authentic"
            raise SchemaError(f"record {event_id}: encrypted fields fail authentication "
                              "(modified, or moved from another record)") from None
        return orjson.loads(plain)

    def open_columns(self, envelopes: Iterable[tuple[Any, Any, Any]], event_ids: Sequence[Any],
                     values: Mapping[str, list[Any]]) -> tuple[set[int], list[tuple[int, str]]]:
        """Open the sealed records of a batch of rows into their columns.

        ``envelopes`` gives each row's ``(kid, nonce, ct)`` (``ct`` None: a clear row, left
        as it is); ``values`` holds one list per column of :data:`SEALED_COLUMNS`, and each
        opened row's values are written into them in place. Rows are opened one at a time:
        each has its own nonce and associated data. Returns the rows opened and the rows
        that fail, with the reason (the caller sets them aside).
        """
        opened: set[int] = set()
        failed: list[tuple[int, str]] = []
        for index, (kid, nonce, ct) in enumerate(envelopes):
            if ct is None:
                continue
            try:
                doc = self.open({"kid": kid, "nonce": nonce, "ct": ct}, str(event_ids[index]))
            except SchemaError as exc:
                failed.append((index, str(exc)))
                continue
            opened.add(index)
            for name, column in values.items():
                column[index] = ecs_value(doc, SEALED_COLUMNS[name])
        return opened, failed

    def unseal(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The record as it was before sealing (``doc`` itself when it is not sealed).

        The chain covers the sealed form: an unsealed record is for reading and shipping,
        never for verifying.
        """
        analyzer = dict(doc.get("analyzer") or {})
        envelope = analyzer.pop("encrypted", None)
        if not isinstance(envelope, Mapping):
            return dict(doc)
        found = doc.get("event")
        event = found if isinstance(found, Mapping) else {}
        sealed = self.open(envelope, str(event.get("id", "")))
        plain = {k: v for k, v in doc.items() if k != "analyzer"}
        plain.update({k: v for k, v in sealed.items() if k != "analyzer"})
        if isinstance(sealed.get("analyzer"), Mapping):
            analyzer.update(sealed["analyzer"])
        if analyzer:
            plain["analyzer"] = analyzer
        return plain

    def split(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Move the sensitive fields of ``doc`` into an envelope, in place; return ``doc``."""
        sensitive = {k: doc.pop(k) for k in SENSITIVE_FIELDS if k in doc and doc[k] != ""}
        if sensitive:
            doc["analyzer"] = {"encrypted": self.seal(sensitive, str(doc["event"]["id"]))}
        return doc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
