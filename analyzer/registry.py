"""The model registry: versioned artifacts in one folder, a ``current`` pointer, audited moves.

A registry is a folder (``models/`` by default) holding::

    models/
      acme-1.joblib   acme-1.md      one artifact and its model card per version
      acme-2.joblib   acme-2.md
      current                        plain text: the file name of the current artifact
      history.jsonl                  one line per promotion or rollback (artifact, digest)

:meth:`ModelRegistry.register` saves a fitted model as the next version of a name (through
:func:`analyzer.persistence.save_model`, which writes the model card: training period and
size, parameters, features, evaluation figures, versions). :meth:`ModelRegistry.promote`
makes a version current and :meth:`ModelRegistry.rollback` returns to the one current
before it; both are written to the audit trail through the :class:`~analyzer.logger.AuditLogger`
they are given (``model.promote`` / ``model.rollback``), before the pointer moves: a change
that cannot be audited does not happen. ``score`` uses the current model when ``--model`` is
omitted.

>>> import tempfile
>>> registry = ModelRegistry(tempfile.mkdtemp())
>>> registry.current() is None, registry.entries()
(True, [])
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from analyzer.errors import ConfigError, IntegrityError, ModelLoadError
from analyzer.files import append_side, atomic_write, mode_of
from analyzer.logger import AuditLogger
from analyzer.persistence import load_model, read_model_header, save_model

__all__ = ["CURRENT_FILE", "HISTORY_FILE", "ModelRegistry", "RegistryEntry"]

log = logging.getLogger(__name__)

CURRENT_FILE = "current"
HISTORY_FILE = "history.jsonl"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ARTIFACT = re.compile(r"^(?P<name>.+)-(?P<version>\d+)\.joblib$")
# evaluation figures worth a line in the model card (the per-instance list is not)
_CARD_FIGURES = ("windows", "positives", "days_scored", "alerts_per_day", "budget", "roc_auc",
                 "pr_auc", "precision_at_budget", "recall_at_budget", "instances_caught",
                 "instances_total")


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One versioned artifact of a registry (read from its header, nothing unpickled)."""

    artifact: Path
    name: str
    version: int
    model_id: str
    created: str
    training_start: str
    training_end: str
    n_events: int | None
    signed: bool
    current: bool
    evaluation: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """``<name>-<version>``."""
        return f"{self.name}-{self.version}"

    @property
    def card(self) -> Path:
        """The model card beside the artifact."""
        return self.artifact.with_suffix(".md")

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact.name, "name": self.name, "version": self.version,
                "model_id": self.model_id, "created": self.created,
                "training_start": self.training_start, "training_end": self.training_end,
                "n_events": self.n_events, "signed": self.signed, "current": self.current,
                "evaluation": self.evaluation}


class ModelRegistry:
    """A folder of versioned model artifacts with a ``current`` pointer.

    Parameters
    ----------
    root
        The folder (created on first :meth:`register`).
    """

    def __init__(self, root: str | os.PathLike[str] = "models") -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    @property
    def current_path(self) -> Path:
        return self.root / CURRENT_FILE

    @property
    def history_path(self) -> Path:
        return self.root / HISTORY_FILE

    # -- reading ------------------------------------------------------------------------

    def current(self) -> Path | None:
        """The current artifact, or ``None`` when nothing was promoted.

        Raises
        ------
        ModelLoadError
            The pointer names a file that is not in the registry.
        """
        try:
            text = self.current_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not text:
            return None
        if "/" in text or "\\" in text or text in (".", ".."):
            raise ModelLoadError(f"{self.current_path}: must name an artifact in "
                                 f"{self.root}, not a path: {text!r}")
        path = self.root / text
        if not path.is_file():
            raise ModelLoadError(f"{self.current_path} names {text}, which is not in "
                                 f"{self.root}")
        return path

    def entries(self) -> list[RegistryEntry]:
        """Every versioned artifact, by name then version."""
        if not self.root.is_dir():
            return []
        try:
            current = self.current()
        except ModelLoadError:
            current = None
        out = []
        for path in self.root.glob("*.joblib"):
            match = _ARTIFACT.match(path.name)
            if not match:
                continue
            try:
                header, _ = read_model_header(path)
            except ModelLoadError as exc:
                log.warning("%s", exc)
                continue
            meta = header["metadata"]
            out.append(RegistryEntry(
                artifact=path, name=match["name"], version=int(match["version"]),
                model_id=str(meta.get("model_id", "")), created=str(meta.get("created", "")),
                training_start=str(meta.get("training_start", "")),
                training_end=str(meta.get("training_end", "")),
                n_events=meta.get("n_events") if isinstance(meta.get("n_events"), int)
                else None,
                signed=bool(header.get("signature")),
                current=current is not None and path.name == current.name,
                evaluation=meta.get("evaluation")))
        return sorted(out, key=lambda e: (e.name, e.version))

    def resolve(self, name: str) -> Path:
        """The artifact a user means by ``name``: ``acme-3``, ``acme-3.joblib``, or ``acme``
        (its latest version).

        Raises
        ------
        ConfigError
            Nothing in the registry has that name.
        """
        text = name.strip()
        entries = self.entries()
        for entry in entries:
            if text in (entry.artifact.name, entry.label):
                return entry.artifact
        versions = [e for e in entries if e.name == text]
        if versions:
            return versions[-1].artifact
        known = ", ".join(e.label for e in entries) or "none"
        raise ConfigError(f"no model {name!r} in {self.root} (registered: {known})")

    def checked_current(self) -> Path:
        """The current artifact, checked against the registry's own record of promotions.

        ``current`` is a plain file: someone who edits it by hand, or copies another
        artifact (even one signed with the same key) over the current one, changes which
        model scores without an audit record. The pointer must name the artifact of the
        last promotion or rollback in ``history.jsonl``, and that artifact must still have
        the digest recorded then.

        Raises
        ------
        ModelLoadError
            No current model, or the pointer or the artifact differ from the record.
        """
        path = self.current()
        if path is None:
            raise ModelLoadError(f"{self.root}: no current model; promote one first")
        record = self._last_move()
        if record is None or record.get("artifact") != path.name:
            recorded = record.get("artifact") if record else "no promotion"
            raise ModelLoadError(
                f"{self.current_path} names {path.name}, but the registry's history records "
                f"{recorded}: the pointer was changed outside the registry; make a model "
                "current with 'audit-analyzer models promote' (which records it)")
        digest = record.get("digest")
        if digest is not None:
            header, _ = read_model_header(path)
            if not hmac.compare_digest(str(header["digest"]), str(digest)):
                raise ModelLoadError(
                    f"{path}: is not the artifact promoted as {path.name} (its digest "
                    "changed since the promotion: the file was replaced); promote the model "
                    "you mean explicitly")
        return path

    def load_current(self, *, key: bytes | None = None, trust_unsigned: bool = False) -> Any:
        """Load the current model, checked with :meth:`checked_current`, then as
        :func:`analyzer.persistence.load_model` does (signed with ``key``, or trusted
        explicitly with ``trust_unsigned``)."""
        return load_model(self.checked_current(), key=key, trust_unsigned=trust_unsigned)

    # -- changing -----------------------------------------------------------------------

    def register(self, model: Any, name: str, *, key: bytes | None = None,
                 evaluation: Any = None) -> RegistryEntry:
        """Save ``model`` as the next version of ``name``, with its model card.

        Parameters
        ----------
        model
            A fitted model.
        name
            Letters, digits, ``.``, ``_`` and ``-``.
        key
            Signing key (see :func:`analyzer.persistence.save_model`).
        evaluation
            An :class:`~analyzer.evaluation.EvaluationReport` or a dict of figures for the
            model card.
        """
        if not _NAME.match(name or ""):
            raise ConfigError(f"model name must be letters, digits, '.', '_' or '-' (up to 64), "
                              f"got {name!r}")
        existing = [e.version for e in self.entries() if e.name == name]
        version = max(existing, default=0) + 1
        path = self.root / f"{name}-{version}.joblib"
        figures = None
        if evaluation is not None:
            figures = evaluation.to_dict() if hasattr(evaluation, "to_dict") else \
                dict(evaluation)
            figures = {k: figures[k] for k in _CARD_FIGURES if k in figures} or figures
        save_model(model, path, key=key, name=f"{name}-{version}", evaluation=figures)
        log.info("registered %s", path)
        return next(e for e in self.entries() if e.artifact.name == path.name)

    def promote(self, name: str, *, audit: AuditLogger, actor: str | None = None,
                reason: str = "") -> RegistryEntry:
        """Make an artifact current, recording ``model.promote`` in the audit trail first.

        Raises
        ------
        ConfigError
            No such artifact, or it is already current.
        IntegrityError
            The artifact's payload does not match its digest (it was modified).
        """
        path = self.resolve(name)
        previous = self.current()
        if previous is not None and previous.name == path.name:
            raise ConfigError(f"{path.stem} is already the current model")
        _check_digest(path)
        entry = self._entry(path)
        before = previous.stem if previous is not None else "none"
        message = (f"model {entry.label} ({entry.model_id}) promoted to current, replacing "
                   f"{before}" + (f": {reason}" if reason else ""))
        self._audit(audit, "model.promote", entry, previous, actor, message, reason)
        self._point(path)
        self._remember("promote", path, previous)
        return self._entry(path)

    def rollback(self, *, audit: AuditLogger, actor: str | None = None,
                 reason: str = "") -> RegistryEntry:
        """Return to the model that was current before the current one was promoted.

        Raises
        ------
        ConfigError
            There is nothing to return to, or the pointer was changed by hand.
        """
        stack = self._stack()
        current = self.current()
        if current is None or not stack:
            raise ConfigError(f"{self.root}: no current model to roll back from")
        if stack[-1] != current.name:
            raise ConfigError(f"{self.current_path} was changed outside the registry (names "
                              f"{current.name}, history says {stack[-1]}); promote a model "
                              "explicitly instead")
        if len(stack) < 2:
            raise ConfigError(f"{current.stem} is the first model promoted; nothing to roll "
                              "back to")
        target = self.root / stack[-2]
        if not target.is_file():
            raise ConfigError(f"the previous model {stack[-2]} is no longer in {self.root}")
        _check_digest(target)
        entry = self._entry(target)
        message = (f"model rolled back from {current.stem} to {entry.label} "
                   f"({entry.model_id})" + (f": {reason}" if reason else ""))
        self._audit(audit, "model.rollback", entry, current, actor, message, reason)
        self._point(target)
        self._remember("rollback", target, current)
        return self._entry(target)

    # -- internals ----------------------------------------------------------------------

    def _entry(self, path: Path) -> RegistryEntry:
        for entry in self.entries():
            if entry.artifact.name == path.name:
                return entry
        raise ConfigError(f"{path} is not a versioned artifact of {self.root}")

    def _audit(self, audit: AuditLogger, action: str, entry: RegistryEntry,
               previous: Path | None, actor: str | None, message: str, reason: str) -> None:
        audit.log(action, user=actor or None, outcome="success", level="info",
                  message=message, category="configuration", resource=entry.artifact.name,
                  resource_type="model",
                  extra={"model": {"artifact": entry.artifact.name, "model_id": entry.model_id,
                                   "name": entry.name, "version": entry.version,
                                   "previous": previous.name if previous else None,
                                   "registry": str(self.root), "reason": reason}})
        audit.flush()  # recorded before the pointer moves

    def _point(self, path: Path) -> None:
        atomic_write(self.current_path, (path.name + "\n").encode("utf-8"),
                     mode=mode_of(self.current_path))

    def _remember(self, action: str, path: Path, previous: Path | None) -> None:
        header, _ = read_model_header(path)
        line = {"time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "action": action, "artifact": path.name, "digest": header["digest"],
                "previous": previous.name if previous else None}
        append_side(self.history_path, orjson.dumps(line) + b"\n", fsync=True)

    def _moves(self) -> list[dict[str, Any]]:
        """The promotions and rollbacks recorded in ``history.jsonl``, oldest first."""
        try:
            lines = self.history_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        moves = []
        for raw in lines:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("action") in ("promote", "rollback"):
                moves.append(doc)
        return moves

    def _last_move(self) -> dict[str, Any] | None:
        moves = self._moves()
        return moves[-1] if moves else None

    def _stack(self) -> list[str]:
        """Artifacts made current, oldest first, with rolled-back ones popped."""
        stack: list[str] = []
        for doc in self._moves():
            if doc.get("action") == "promote":
                stack.append(str(doc.get("artifact")))
            elif stack:
                stack.pop()
        return stack


def _check_digest(path: Path) -> None:
    """Refuse to make a modified artifact current (checked without unpickling)."""
    header, offset = read_model_header(path)
    digest = "sha256:" + hashlib.sha256(path.read_bytes()[offset:]).hexdigest()
    if not hmac.compare_digest(digest, str(header["digest"])):
        raise IntegrityError(f"{path}: model file was modified (digest does not match); "
                             "refusing to make it current")
