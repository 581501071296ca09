"""Events as compact integer arrays: what the feature code works on, and what is spilled or
shipped between the two phases of a chunked computation (see :mod:`analyzer.features._stats`).

:func:`prepare` turns a normalized frame into :class:`EventArrays` (about 60 bytes per event
instead of a pandas row). Codes are local to the arrays, with their names beside them;
:func:`concat_events` puts several time-ordered arrays into one vocabulary (the global one
of a :class:`~analyzer.features._stats.WindowContext`, or their sorted union).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analyzer.errors import SchemaError
from analyzer.events import REQUIRED_FRAME_COLUMNS
from analyzer.features import _evidence
from analyzer.features._table import privileged_mask, source_entities

#: The coded fields: entities (user, source_ip) and what they are profiled on.
FIELDS = ("user", "source_ip", "action", "resource", "country")
_EVIDENCE_CODED = (("phrase", "phrase_names"), ("path", "path_names"), ("agent", "agent_names"),
                   ("credential", "credential_names"))
_EVIDENCE_ROWS = ("sensitive", "remote", "status", "probe", "injection", "scanner")


@dataclasses.dataclass(slots=True)
class EventArrays:
    """The events as integer arrays: one entry per (non-alert) event, in time order of the
    frame they came from. ``names[f][codes[f]]`` is the text of field ``f``; codes below
    ``known[f]`` are values of the fitted vocabulary (all of them when fitting)."""

    t: np.ndarray
    codes: dict[str, np.ndarray]
    names: dict[str, np.ndarray]
    known: dict[str, int]
    fail: np.ndarray
    succ: np.ndarray
    nbytes: np.ndarray
    seq: np.ndarray | None
    priv: np.ndarray
    evidence: _evidence.Evidence

    @property
    def n(self) -> int:
        return len(self.t)

    def take(self, rows: np.ndarray | slice) -> EventArrays:
        """The events at ``rows`` (same vocabularies)."""
        ev = self.evidence
        evidence = dataclasses.replace(ev, **{
            f.name: getattr(ev, f.name)[rows] for f in dataclasses.fields(ev)
            if not f.name.endswith("_names")})
        return EventArrays(
            t=self.t[rows], codes={f: c[rows] for f, c in self.codes.items()},
            names=self.names, known=self.known, fail=self.fail[rows], succ=self.succ[rows],
            nbytes=self.nbytes[rows], seq=None if self.seq is None else self.seq[rows],
            priv=self.priv[rows], evidence=evidence)


def encode(series: pd.Series | None, n: int,
           vocab: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes for a string column against ``vocab`` (-1 for empty or missing).

    Values not in ``vocab`` get codes from ``len(vocab)`` on, so a code tells at once whether
    the value was seen in training. Returns codes, the extended names and ``len(vocab)``.
    """
    if series is None:
        base = np.empty(0, dtype=object) if vocab is None else vocab
        return np.full(n, -1, dtype=np.int64), base, len(base)
    cat = series if isinstance(series.dtype, pd.CategoricalDtype) else \
        series.astype("category")
    cats = np.asarray(cat.cat.categories.astype(str), dtype=object)
    cc = cat.cat.codes.to_numpy().astype(np.int64)
    nonempty = np.array([bool(c.strip()) for c in cats], dtype=bool) if len(cats) else \
        np.zeros(0, dtype=bool)  # one check per distinct value, not per event
    used = np.bincount(cc[cc >= 0], minlength=len(cats)) > 0
    if vocab is None:
        vocab = np.sort(cats[nonempty & used])
    mapping = pd.Index(vocab, dtype=object).get_indexer(cats).astype(np.int64)
    # Values new to the vocabulary are numbered in sorted order, and only those with rows:
    # the codes then do not depend on the column's category order (a whole file lists its
    # categories in order of first appearance, a day's partition only its own), so the same
    # events give the same windows, in the same order, however they were read.
    new = np.flatnonzero((mapping < 0) & nonempty & used)
    new = new[np.argsort(cats[new], kind="stable")]
    mapping[mapping < 0] = -1
    mapping[new] = len(vocab) + np.arange(len(new))
    mapping[~nonempty] = -1
    codes = np.where(cc >= 0, mapping[np.maximum(cc, 0)], -1) if len(cats) else \
        np.full(n, -1, dtype=np.int64)
    return codes, np.concatenate([vocab, cats[new]]).astype(object), len(vocab)


def prepare(frame: pd.DataFrame, vocab: dict[str, np.ndarray] | None,
            patterns: Sequence[str]) -> EventArrays:
    """The frame's events (alerts left out) as arrays coded against ``vocab`` (None: the
    frame's own sorted values)."""
    missing = [c for c in REQUIRED_FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"events frame: missing required column(s): {', '.join(missing)}")
    if "kind" in frame.columns:
        # the analyzer never scores its own alerts as activity
        keep = ~(frame["kind"] == "alert").fillna(False).to_numpy(dtype=bool)
        if not keep.all():
            frame = frame.loc[keep]
    n = len(frame)
    ts = frame["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        try:
            ts = pd.to_datetime(ts, utc=True)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"events frame: timestamp is not a time: {exc}") from None
    t = ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]")
    if n and np.isnat(t).any():
        raise SchemaError("events frame: timestamp has missing values")
    codes: dict[str, np.ndarray] = {}
    names: dict[str, np.ndarray] = {}
    known: dict[str, int] = {}
    for field in FIELDS:
        column = source_entities(frame) if field == "source_ip" else \
            frame[field] if field in frame.columns else None
        codes[field], names[field], known[field] = encode(
            column, n, None if vocab is None else vocab[field])
    outcome = frame["outcome"]
    fail = (outcome == "failure").fillna(False).to_numpy(dtype=bool)
    succ = (outcome == "success").fillna(False).to_numpy(dtype=bool)
    if "bytes" in frame.columns:
        nbytes = pd.to_numeric(frame["bytes"], errors="coerce").astype("float64") \
            .fillna(0.0).clip(lower=0).to_numpy()
    else:
        nbytes = np.zeros(n)
    seq = None
    if "sequence" in frame.columns:
        seq = pd.to_numeric(frame["sequence"], errors="coerce").astype("float64") \
            .fillna(-1).to_numpy().astype(np.int64)
    action_priv = privileged_mask(names["action"], patterns)
    a = codes["action"]
    priv = np.where(a >= 0, action_priv[np.maximum(a, 0)], False) if len(action_priv) else \
        np.zeros(n, dtype=bool)
    evidence = _evidence.gather(frame, user_codes=codes["user"], user_names=names["user"],
                                action_codes=a, action_names=names["action"])
    return EventArrays(t=t.view(np.int64), codes=codes, names=names, known=known, fail=fail,
                       succ=succ, nbytes=nbytes, seq=seq, priv=priv, evidence=evidence)


def recode(codes: np.ndarray, names: np.ndarray, target: np.ndarray | pd.Index) -> np.ndarray:
    """``codes`` over ``names`` as codes over ``target`` (-1 where absent); ``target`` may
    be a ``pd.Index`` of the names, kept to look up many arrays."""
    if not len(names):
        return np.full(len(codes), -1, dtype=np.int64)
    index = target if isinstance(target, pd.Index) else pd.Index(target, dtype=object)
    mapping = index.get_indexer(names).astype(np.int64)
    return np.where(codes >= 0, mapping[np.maximum(codes, 0)], -1)


def union_names(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The sorted distinct names of ``parts``."""
    if not parts:
        return np.empty(0, dtype=object)
    joined = np.concatenate([np.asarray(p, dtype=object) for p in parts]).astype(str)
    return np.unique(joined).astype(object)


def concat_events(parts: Sequence[EventArrays], names: dict[str, np.ndarray],
                  known: dict[str, int], indexes: dict[str, pd.Index]) -> EventArrays:
    """Time-ordered arrays in one vocabulary: ``names`` for the coded fields (and the
    credentials, paths and agents), ``known`` of them fitted, ``indexes`` their
    ``pd.Index``; phrases over the sorted union of the parts' (their codes only order and
    count)."""
    if len(parts) == 1 and all(parts[0].names[f] is names[f] for f in FIELDS):
        return parts[0]
    codes = {f: np.concatenate([p.codes[f] if p.names[f] is names[f] else
                                recode(p.codes[f], p.names[f], indexes[f]) for p in parts])
             for f in FIELDS}
    ev: dict[str, np.ndarray] = {}
    for code, label in _EVIDENCE_CODED:
        labels = [getattr(p.evidence, label) for p in parts]
        field = label.removesuffix("_names")
        if field in names:  # the log's vocabulary (credentials, paths, agents)
            target, index = names[field], indexes[field]
        elif all(x is labels[0] for x in labels):
            target = index = labels[0]
        else:
            target = union_names(labels)
            index = pd.Index(target, dtype=object)
        ev[code] = np.concatenate([getattr(p.evidence, code) if x is target else
                                   recode(getattr(p.evidence, code), x, index)
                                   for p, x in zip(parts, labels, strict=True)])
        ev[label] = target
    for name in _EVIDENCE_ROWS:
        ev[name] = np.concatenate([getattr(p.evidence, name) for p in parts])
    seqs = [p.seq for p in parts]
    seq = None if all(s is None for s in seqs) else np.concatenate(
        [np.full(p.n, -1, dtype=np.int64) if p.seq is None else p.seq for p in parts])
    return EventArrays(
        t=np.concatenate([p.t for p in parts]), codes=codes, names=names, known=known,
        fail=np.concatenate([p.fail for p in parts]),
        succ=np.concatenate([p.succ for p in parts]),
        nbytes=np.concatenate([p.nbytes for p in parts]), seq=seq,
        priv=np.concatenate([p.priv for p in parts]), evidence=_evidence.Evidence(**ev))
