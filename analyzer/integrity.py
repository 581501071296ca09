"""Tamper evidence: canonical encoding, the keyed hash chain, checkpoints and verification.

Each record's ``event.hash`` is ``HMAC-SHA256(key, prev_hash || "\\n" || canonical)`` when a
key is configured, ``SHA-256(prev_hash || "\\n" || canonical)`` otherwise, where ``canonical`` is
the record's JSON with sorted keys, no spaces, UTF-8 and without ``event.hash`` itself
(DESIGN contract 2). The first record of a chain links to :data:`GENESIS_HASH`.

The chain names its algorithm: its first record, and the ``audit.rotation`` record that opens
each rotated-in file, carry ``analyzer.chain.algorithm`` (``hmac-sha256`` or ``sha256``) and,
when keyed, ``analyzer.chain.key_id`` (:func:`key_id`: derived from the key, revealing nothing
of it). A writer refuses to continue a chain with another key or without one, and verification
refuses to call a keyed chain intact without its key. Logs written before the declaration
existed carry none ("legacy": the algorithm is unknown) and verify as before.

:func:`verify_log` streams a log once, in bounded memory, and names the first record that does
not hold and why: changed, missing, inserted, reordered, truncated, bad JSON, or not
canonical: a line must be exactly the canonical encoding of its record (with ``event.hash``
right after ``event.sequence``, where the logger puts it), so that a JSON-equivalent rewrite
(``"\\u0061lert"`` for ``"alert"``, spaces, another key order) or a repeated key, which
leave the chained content unchanged for one parser but not for every tool, is caught.

This module imports nothing of the project but :mod:`analyzer.errors` and the JSON codec
(:mod:`analyzer.events`, for the line limit and the repeated-key check).

>>> chain = ChainHasher(b"secret")
>>> h1 = chain.link(GENESIS_HASH, b'{"a":1}')
>>> h1 == ChainHasher(b"secret").link(GENESIS_HASH, b'{"a":1}')
True
>>> h1 == ChainHasher(None).link(GENESIS_HASH, b'{"a":1}')
False
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import hashlib
import hmac
import os
import stat
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from analyzer.errors import ConfigError, IntegrityError, SourceError
from analyzer.events import CANONICAL, MAX_LINE_BYTES, duplicate_key
from analyzer.files import PRIVATE, append_side

# The trail's file names are analyzer.series's; these three were always found here too.
from analyzer.series import ROTATED_STAMP, checkpoint_path, lock_path, split_rotated

__all__ = [
    "GENESIS_HASH",
    "MIN_KEY_BYTES",
    "ROTATED_STAMP",
    "ChainHasher",
    "Checkpoint",
    "Problem",
    "VerifyReport",
    "canonical_bytes",
    "chain_declaration",
    "chained_record",
    "check_key_strength",
    "checkpoint_path",
    "declaration_problem",
    "key_id",
    "load_key",
    "lock_path",
    "previous_of",
    "read_checkpoints",
    "verify_lines",
    "verify_log",
    "verify_series",
    "write_checkpoint",
]

GENESIS_HASH = "0" * 64
_KEY_ID_LABEL = b"audit-analyzer key id"


def key_id(key: bytes) -> str:
    """A short public name for an integrity key: 16 hex digits of HMAC(key, a fixed label).

    It tells which key a chain was written with without revealing anything of the key (a
    plain hash of a short key could be brute-forced; the HMAC makes the id as hard as the
    key itself).
    """
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


class ChainHasher:
    """Computes chain links; keyed (HMAC-SHA256) when given a key, plain SHA-256 otherwise.

    The HMAC's inner and outer states are prepared once, so a link costs two hash-object
    copies rather than a fresh key schedule: this is on the logger's per-event path.
    """

    __slots__ = ("_inner", "_outer", "key_id", "keyed")

    _inner: hashlib._Hash
    _outer: hashlib._Hash | None

    def __init__(self, key: bytes | None) -> None:
        self.keyed = bool(key)
        self.key_id = key_id(key) if key else None
        if key:
            block = 64
            if len(key) > block:
                key = hashlib.sha256(key).digest()
            key = key.ljust(block, b"\0")
            self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
            self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        else:
            self._inner = hashlib.sha256()
            self._outer = None

    def link(self, prev_hash: str, canonical: bytes) -> str:
        """The hash of a record whose canonical encoding is ``canonical``."""
        return self.link_parts(prev_hash.encode("ascii"), canonical).decode("ascii")

    def link_parts(self, prev_hash: bytes, *canonical: bytes) -> bytes:
        """:meth:`link` on bytes, the canonical record given in pieces (the writer's path:
        no joining, no str round trip)."""
        inner = self._inner.copy()
        inner.update(prev_hash)
        inner.update(b"\n")
        for piece in canonical:
            inner.update(piece)
        if self._outer is None:
            return inner.hexdigest().encode("ascii")
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest().encode("ascii")

    @property
    def algorithm(self) -> str:
        return "hmac-sha256" if self.keyed else "sha256"

    def declaration(self) -> dict[str, str]:
        """What the chain's first record and each rotation record say about this hasher."""
        if self.key_id is None:
            return {"algorithm": self.algorithm}
        return {"algorithm": self.algorithm, "key_id": self.key_id}


def chain_declaration(doc: Any) -> dict[str, str] | None:
    """The ``analyzer.chain`` algorithm (and key id) a record declares, or ``None`` (legacy)."""
    if not isinstance(doc, dict):
        return None
    chain = doc.get("analyzer")
    chain = chain.get("chain") if isinstance(chain, dict) else None
    if not isinstance(chain, dict) or not isinstance(chain.get("algorithm"), str):
        return None
    declared = {"algorithm": chain["algorithm"]}
    if isinstance(chain.get("key_id"), str):
        declared["key_id"] = chain["key_id"]
    return declared


def _describe_declared(declared: Mapping[str, str]) -> str:
    if "key_id" in declared:
        return f"{declared['algorithm']}, key id {declared['key_id']}"
    return declared["algorithm"]


def declaration_problem(declared: Mapping[str, str] | None,
                        hasher: ChainHasher) -> tuple[str, str] | None:
    """``(kind, why)`` when ``hasher`` cannot continue or check a chain declaring ``declared``.

    ``kind`` is ``"key needed"`` (a keyed chain, no key given) or ``"key mismatch"`` (another
    key, or a key for an unkeyed chain). ``None`` when they agree, or for a legacy chain.
    """
    if declared is None:
        return None
    algorithm = declared.get("algorithm")
    if algorithm == "hmac-sha256" and not hasher.keyed:
        return "key needed", f"this chain is keyed ({_describe_declared(declared)})"
    if algorithm == "sha256" and hasher.keyed:
        return "key mismatch", (f"this chain is unkeyed (sha256) but a key (key id "
                                f"{hasher.key_id}) was given: it was written, or rewritten, "
                                f"without the key, or this is another log")
    if algorithm == "hmac-sha256" and declared.get("key_id") not in (None, hasher.key_id):
        return "key mismatch", (f"this chain is keyed with key id {declared.get('key_id')}, "
                                f"the key given has key id {hasher.key_id}")
    if algorithm not in ("hmac-sha256", "sha256"):
        return "key mismatch", f"this chain declares an unknown algorithm {algorithm!r}"
    return None


def canonical_bytes(doc: Mapping[str, Any]) -> bytes:
    """The canonical encoding the chain covers: ``doc`` without ``event.hash``, sorted keys."""
    event = doc.get("event")
    if isinstance(event, Mapping) and "hash" in event:
        doc = {**doc, "event": {k: v for k, v in event.items() if k != "hash"}}
    return orjson.dumps(doc, option=CANONICAL)


def load_key(source: bytes | str | os.PathLike[str] | None) -> bytes | None:
    """Return key bytes from bytes, or from a key file's contents (trailing newline stripped).

    A key file readable by group or others is accepted here but flagged by the CLI; an empty
    key is refused because it would silently downgrade the chain to unkeyed.
    """
    if source is None:
        return None
    if isinstance(source, bytes):
        key = source
    else:
        path = Path(source)
        try:
            key = path.read_bytes().rstrip(b"\r\n")
        except FileNotFoundError:
            raise SourceError(f"{path}: key file not found") from None
        except OSError as exc:
            raise SourceError(f"{path}: cannot read key file: {exc.strerror}") from None
    if not key:
        raise ConfigError("integrity key is empty")
    check_key_strength(key, "integrity key" if isinstance(source, bytes) else f"{source}: key")
    return key


#: The shortest secret key accepted (integrity and model signing keys).
MIN_KEY_BYTES = 16


def check_key_strength(key: bytes, what: str = "key") -> None:
    """Refuse a secret key an attacker could guess: shorter than :data:`MIN_KEY_BYTES`,
    or one byte repeated (all zeros, ``"aaaa..."``)."""
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{what} is {len(key)} bytes; use at least {MIN_KEY_BYTES} random "
                          "bytes, e.g. python -c 'import secrets; print(secrets.token_hex(32))'")
    if len(set(key)) == 1:
        raise ConfigError(f"{what} is one byte repeated (e.g. all zeros); use random bytes")


# -- checkpoints ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """The head of the chain at one moment: kept elsewhere, it exposes truncation."""

    sequence: int
    hash: str
    time: str
    log: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self), option=CANONICAL)


def write_checkpoint(destination: str | os.PathLike[str], checkpoint: Checkpoint, *,
                     mode: int = PRIVATE) -> None:
    """Append one checkpoint line to ``destination`` (created with ``mode``; a symlink in
    its place is refused, see :mod:`analyzer.files`)."""
    append_side(destination, checkpoint.to_json() + b"\n", mode=mode)


def read_checkpoints(source: str | os.PathLike[str], *,
                     malformed: list[str] | None = None) -> list[Checkpoint]:
    """All checkpoints in a file, in order.

    A malformed line is an :class:`IntegrityError`, unless ``malformed`` is given: then it
    is described there (``"x.checkpoints:4: not a checkpoint record"``) and the good lines
    are still returned, so one garbage line does not stop a verification.
    """
    path = Path(source)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{path}: checkpoint file not found") from None
    result = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
            result.append(Checkpoint(sequence=int(doc["sequence"]), hash=str(doc["hash"]),
                                     time=str(doc.get("time", "")), log=str(doc.get("log", ""))))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            if malformed is None:
                raise IntegrityError(f"{path}:{number}: not a checkpoint record") from None
            malformed.append(f"{path}:{number}: not a checkpoint record")
    return result


def now_checkpoint(sequence: int, head: str, log: str) -> Checkpoint:
    stamp = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return Checkpoint(sequence=sequence, hash=head, time=stamp, log=log)


# -- verification --------------------------------------------------------------------------

class Problem(enum.StrEnum):
    """Why a record does not hold."""

    CHANGED = "changed"
    MISSING = "missing"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    BAD_JSON = "bad JSON"
    KEY_NEEDED = "key needed"
    KEY_MISMATCH = "key mismatch"
    NOT_CANONICAL = "not canonical"


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify_log` found."""

    path: str
    records: int
    head_sequence: int
    head_hash: str
    ok: bool
    problem: Problem | None = None
    line: int | None = None
    sequence: int | None = None
    detail: str = ""
    checkpoint_checked: bool = False
    #: Things a person should know that do not break the chain (one line each), e.g. a
    #: series that starts mid-chain with no recorded retention deletion.
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for a person."""
        if self.ok:
            extra = " and matches the checkpoints" if self.checkpoint_checked else ""
            return (f"{self.path}: OK, {self.records:,} records, chain intact{extra} "
                    f"(head sequence {self.head_sequence})")
        where = f"line {self.line}" if self.line is not None else "end of log"
        seq = f", sequence {self.sequence}" if self.sequence is not None else ""
        return (f"{self.path}: BROKEN at {where}{seq}: {self.problem}: {self.detail} "
                f"({self.records:,} records verified before it)")


_LOOKAHEAD = 1000


@dataclasses.dataclass(slots=True)
class _Record:
    line: int
    raw: bytes
    doc: dict[str, Any] | None
    sequence: int | None
    hash: str | None
    canonical: bytes
    #: the line is exactly the canonical encoding, as the logger writes it
    exact: bool = False


def _parse(number: int, raw: bytes | None) -> _Record:
    if raw is None:  # a line over the limit, never held whole
        return _Record(number, b"", None, None, None, b"")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _Record(number, raw, None, None, None, b"")
    if not isinstance(doc, dict):
        return _Record(number, raw, None, None, None, b"")
    event = doc.get("event")
    seq = hash_ = None
    if isinstance(event, dict):
        seq = event.get("sequence")
        hash_ = event.get("hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(hash_, str):
        return _Record(number, raw, doc, None, None, b"")
    canonical = canonical_bytes(doc)
    return _Record(number, raw, doc, seq, hash_, canonical,
                   raw == stored_line(canonical, seq, hash_))


def stored_line(canonical: bytes, sequence: int, hash_: str) -> bytes:
    """The one line the logger writes for a record: its canonical encoding with
    ``"hash":"..."`` right after ``"sequence":N`` (found from the end, as the writer does).

    >>> stored_line(b'{"event":{"id":"a","sequence":7},"x":1}', 7, "ab")
    b'{"event":{"id":"a","sequence":7,"hash":"ab"},"x":1}'
    """
    number = b'"sequence":%d' % sequence
    cut = len(canonical)
    while True:
        cut = canonical.rfind(number, 0, cut)
        if cut == -1:
            return b""  # no such spelling: nothing stored can equal it
        end = cut + len(number)
        if canonical[end:end + 1] in (b",", b"}"):
            return b'%s,"hash":"%s"%s' % (canonical[:end], hash_.encode("utf-8", "replace"),
                                          canonical[end:])


def _open(path: Path) -> IO[bytes]:
    """A log file for reading: rotated generations may have been compressed (``.gz``)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _lines(path: Path) -> Iterator[tuple[int, bytes | None, bool]]:
    """Yield (line number, bytes without newline, complete?) lazily, in bounded memory.

    A line longer than :data:`MAX_LINE_BYTES` is never held whole: it is read past to its
    newline and yielded as ``None``. Only the newline is taken off a line: a ``\\r`` or a
    space before it is part of what is compared with the canonical encoding.
    """
    limit = MAX_LINE_BYTES + 1
    try:
        with _open(path) as handle:
            number = 0
            while raw := handle.readline(limit):
                number += 1
                if len(raw) == limit and not raw.endswith(b"\n"):
                    yield number, None, _skip_line(handle)
                    continue
                complete = raw.endswith(b"\n")
                yield number, raw[:-1] if complete else raw, complete
    except (EOFError, gzip.BadGzipFile) as exc:  # a truncated or non-gzip ".gz"
        raise SourceError(f"{path}: cannot read it as gzip: {exc}") from None


def _skip_line(handle: IO[bytes]) -> bool:
    """Read past the rest of an over-long line; whether it ended in a newline."""
    while chunk := handle.readline(1 << 16):
        if chunk.endswith(b"\n"):
            return True
    return False


def _check_file(log_path: Path) -> None:
    if not log_path.exists():
        raise SourceError(f"{log_path}: no such file")
    if log_path.is_dir():
        raise SourceError(f"{log_path}: is a directory, expected an audit log file")
    if not stat.S_ISREG(log_path.stat().st_mode):  # a FIFO or /dev/zero never ends
        raise SourceError(f"{log_path}: is not a regular file (a FIFO or a device); "
                          "give an audit log file")


def previous_of(doc: Any) -> dict[str, Any] | None:
    """The ``analyzer.chain.previous`` (file, sequence, hash) a rotation record carries, if
    ``doc`` (a parsed line) is one."""
    event = doc.get("event") if isinstance(doc, dict) else None
    if not isinstance(event, dict) or event.get("action") != "audit.rotation":
        return None
    details = doc.get("analyzer")
    chain = details.get("chain") if isinstance(details, dict) else None
    previous = chain.get("previous") if isinstance(chain, dict) else None
    if isinstance(previous, dict) and type(previous.get("sequence")) is int \
            and isinstance(previous.get("hash"), str):
        return previous
    return None


def chained_record(line: bytes) -> tuple[int, str] | None:
    """``(event.sequence, event.hash)`` of a line that is a chained audit record, else
    ``None``."""
    try:
        doc = orjson.loads(line)
        seq, head = doc["event"]["sequence"], doc["event"]["hash"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if type(seq) is not int or not isinstance(head, str) or len(head) != len(GENESIS_HASH):
        return None
    return seq, head


CheckpointsArg = Checkpoint | Iterable[Checkpoint] | None


def _checkpoint_table(checkpoint: CheckpointsArg) -> dict[int, list[Checkpoint]]:
    """Checkpoints by sequence: every one is compared, not just the newest."""
    if checkpoint is None:
        return {}
    given = [checkpoint] if isinstance(checkpoint, Checkpoint) else list(checkpoint)
    table: dict[int, list[Checkpoint]] = {}
    for point in given:
        table.setdefault(point.sequence, []).append(point)
    return table


def verify_log(path: str | os.PathLike[str], *, key: bytes | None = None,
               checkpoint: CheckpointsArg = None) -> VerifyReport:
    """Recompute the chain of ``path`` and report the first record that does not hold.

    Parameters
    ----------
    path
        The audit log (JSON lines written by :class:`analyzer.logger.AuditLogger`). A file
        rotated in mid-chain starts with an ``audit.rotation`` record naming where the chain
        comes from; it is verified from there (use :func:`verify_series` for the whole set).
    key
        The integrity key the log was written with, or ``None`` for an unkeyed log.
    checkpoint
        Checkpoints kept elsewhere (one, or several): the log must hold each one's sequence
        with the same hash; a log that ends before the newest has been truncated.
    """
    log_path = Path(path)
    _check_file(log_path)
    table = _checkpoint_table(checkpoint)
    report = _verify_file(log_path, ChainHasher(key), None, table, set())
    return _checkpoint_verdict(report, table)


def verify_lines(path: str | os.PathLike[str], lines: Iterable[tuple[int, bytes | None, bool]],
                 *, key: bytes | None = None) -> VerifyReport:
    """:func:`verify_log` over lines another reader gives, in the pass it makes anyway
    (:func:`analyzer.sources.read_events` with a ``tap``): ``(number, bytes without the
    newline or None when over the limit, ended with a newline?)``. Stops at the first
    record that does not hold; the caller reads the rest for its own purpose."""
    return _verify_file(Path(path), ChainHasher(key), None, {}, set(), iter(lines))


def verify_series(paths: Iterable[str | os.PathLike[str]], *, key: bytes | None = None,
                  checkpoint: CheckpointsArg = None) -> VerifyReport:
    """Verify rotated files as one chain: in order, none missing, none truncated.

    Files are put in order by their first sequence number; each must continue exactly where
    the one before it ended, and the rotation record that opens it must name that file.
    A series that starts mid-chain with no recorded retention deletion of the file before
    it, or that ends with a rotated file (its active file absent), is intact but noted.
    """
    files = [Path(p) for p in paths]
    for file in files:
        _check_file(file)
    hasher = ChainHasher(key)
    table = _checkpoint_table(checkpoint)
    ordered = sorted(files, key=_first_sequence)
    state: VerifyReport | None = None
    total = 0
    deleted: set[int] = set()  # last sequences of files retention recorded deleting
    for index, file in enumerate(ordered):
        if state is not None:
            problem = _boundary_problem(state, file, ordered[index - 1], ordered[index + 1:])
            if problem is not None:
                return dataclasses.replace(problem, records=total)
        state = _verify_file(file, hasher, state, table, deleted)
        total += state.records
        if not state.ok:
            return dataclasses.replace(state, records=total)
    if state is None:
        raise SourceError("no audit log files to verify")
    return _checkpoint_verdict(dataclasses.replace(
        state, path=f"{len(ordered)} files ({ordered[0].name} .. {ordered[-1].name})",
        records=total, notes=_series_notes(ordered, deleted)), table)


def _series_notes(ordered: list[Path], deleted: set[int]) -> tuple[str, ...]:
    """What an intact series does not prove: its missing start, its missing end."""
    notes = []
    with _open(ordered[0]) as handle:
        claimed = previous_of(_parse(1, handle.readline().rstrip(b"\r\n")).doc)
    if claimed is not None and claimed["sequence"] not in deleted:
        notes.append(
            f"the series starts mid-chain, after sequence {claimed['sequence']} "
            f"({claimed.get('file')}), and no retention deletion of that file is recorded in "
            f"it: the oldest files may have been removed")
    last = ordered[-1]
    rotated = split_rotated(last.name)
    base = rotated[0] if rotated is not None else ""
    if base and not any(p.name == base for p in ordered):
        notes.append(
            f"the series ends with the rotated file {last.name}, without its active file "
            f"{base}: records written after it cannot be checked here (compare with a "
            f"checkpoint kept elsewhere)")
    return tuple(notes)


def _first_sequence(path: Path) -> int:
    with _open(path) as handle:
        record = _parse(1, handle.readline(MAX_LINE_BYTES).rstrip(b"\r\n"))
    return record.sequence if record.sequence is not None else -1


def _boundary_problem(before: VerifyReport, file: Path, previous_file: Path,
                      later: list[Path]) -> VerifyReport | None:
    """Does ``file`` continue the chain exactly where ``previous_file`` ended?"""
    with _open(file) as handle:
        first = _parse(1, handle.readline(MAX_LINE_BYTES).rstrip(b"\r\n"))
    claimed = previous_of(first.doc)

    def broken(problem: Problem, detail: str) -> VerifyReport:
        return VerifyReport(str(file), 0, before.head_sequence, before.head_hash, False,
                            problem, 1, first.sequence, detail)

    if claimed is None:
        return None  # the per-line check reports whatever is wrong with it
    if claimed["sequence"] > before.head_sequence:
        return broken(Problem.MISSING, (
            f"{previous_file.name} ends at sequence {before.head_sequence} but {file.name} "
            f"continues from {claimed['sequence']} ({claimed.get('file')}): records "
            f"{before.head_sequence + 1}-{claimed['sequence']} are missing (a file removed "
            f"or truncated)"))
    if claimed["sequence"] < before.head_sequence or claimed["hash"] != before.head_hash:
        return broken(Problem.REORDERED, (
            f"{file.name} continues from sequence {claimed['sequence']} of "
            f"{claimed.get('file')}, not from the end of {previous_file.name}"))
    if claimed.get("file") not in (None, previous_file.name) and any(
            p.name == claimed.get("file") for p in later):
        return broken(Problem.REORDERED, (
            f"{file.name} says it follows {claimed.get('file')}, which comes later here"))
    return None


def _verify_file(log_path: Path, hasher: ChainHasher, start: VerifyReport | None,
                 checkpoints: dict[int, list[Checkpoint]], deleted: set[int],
                 lines: Iterator[tuple[int, bytes | None, bool]] | None = None
                 ) -> VerifyReport:
    """Stream one file; ``start`` is where the previous file of a series ended.

    ``deleted`` collects the last sequences of files whose retention deletion is recorded.
    """
    prev_hash = GENESIS_HASH if start is None else start.head_hash
    prev_seq = 0 if start is None else start.head_sequence
    records = 0
    checked = start.checkpoint_checked if start is not None else False
    if lines is None:
        lines = _lines(log_path)

    def broken(problem: Problem, rec_line: int | None, seq: int | None,
               detail: str) -> VerifyReport:
        return VerifyReport(str(log_path), records, prev_seq, prev_hash, False, problem,
                            rec_line, seq, detail, checked)

    for number, raw, complete in lines:
        record = _parse(number, raw)
        if record.doc is None:
            if raw is None:
                what = f"line longer than the limit of {MAX_LINE_BYTES:,} bytes"
            elif not complete:
                what = "incomplete last line (torn write)"
            else:
                what = "not a JSON object"
            return broken(Problem.BAD_JSON, number, None, what)
        if record.sequence is None:
            return broken(Problem.BAD_JSON, number, None,
                          "record has no integer event.sequence and string event.hash")
        if number == 1:
            claimed = previous_of(record.doc)
            if claimed is not None and start is None:  # a rotated-in file verified on its own
                prev_seq, prev_hash = claimed["sequence"], claimed["hash"]
            if claimed is not None or record.sequence == 1:
                refused = declaration_problem(chain_declaration(record.doc), hasher)
                if refused is not None:
                    return broken(Problem(refused[0]), number, record.sequence, refused[1])
        expected = prev_seq + 1
        if record.sequence == expected and hasher.link(prev_hash, record.canonical) == record.hash:
            if not record.exact:
                return broken(Problem.NOT_CANONICAL, number, record.sequence,
                              _not_canonical(record.raw, record.doc))
            prev_hash, prev_seq = record.hash, record.sequence
            records += 1
            if prev_seq in checkpoints:
                if any(point.hash != prev_hash for point in checkpoints[prev_seq]):
                    return broken(Problem.CHANGED, number, prev_seq,
                                  "chain is consistent but does not match the checkpoint: "
                                  "the log was rewritten from here or earlier")
                checked = True
            if b"audit.retention.delete" in record.raw:  # only saves parsing: decided on fields
                gone = _deleted_sequence(record.doc)
                if gone is not None:
                    deleted.add(gone)
            continue
        problem, detail = _diagnose(record, lines, hasher, prev_hash, expected, records)
        return broken(problem, number, record.sequence, detail)
    return VerifyReport(str(log_path), records, prev_seq, prev_hash, True,
                        checkpoint_checked=checked)


def _deleted_sequence(doc: dict[str, Any]) -> int | None:
    """The last sequence of the file an ``audit.retention.delete`` record says went."""
    if doc.get("event", {}).get("action") != "audit.retention.delete":
        return None
    analyzer = doc.get("analyzer")
    if not isinstance(analyzer, dict):
        return None
    chain = analyzer.get("chain")
    # analyzer.chain.deleted stays in clear in an encrypted trail; analyzer.retention is the
    # older spelling, kept for logs written before it
    for holder in (chain.get("deleted") if isinstance(chain, dict) else None,
                   analyzer.get("retention")):
        last = holder.get("last_sequence") if isinstance(holder, dict) else None
        if type(last) is int:  # not a bool, which is an int too
            return last
    return None


def _not_canonical(raw: bytes, doc: dict[str, Any] | None) -> str:
    """Why a line whose content holds is still refused: parsers may read it differently."""
    repeated = duplicate_key(raw, doc)
    if repeated is not None:
        return (f"duplicate key {repeated}: parsers disagree on which value counts (the chain "
                f"covers the last)")
    return ("the line is not the canonical encoding of its record (an escape, a space, a "
            "number or key order rewritten): its content holds, but the bytes were changed "
            "after writing, and tools that search them may see another record")


def _checkpoint_verdict(report: VerifyReport,
                        checkpoints: dict[int, list[Checkpoint]]) -> VerifyReport:
    newest = max(checkpoints, default=None)
    if (report.ok and newest is not None and newest > report.head_sequence):
        checkpoint = checkpoints[newest][-1]
        return dataclasses.replace(
            report, ok=False, problem=Problem.TRUNCATED, line=None,
            sequence=report.head_sequence + 1,
            detail=(f"log ends at sequence {report.head_sequence} but the checkpoint of "
                    f"{checkpoint.time or 'unknown time'} records sequence "
                    f"{checkpoint.sequence}"))
    return report


def _diagnose(record: _Record, lines: Iterator[tuple[int, bytes | None, bool]],
              hasher: ChainHasher,
              prev_hash: str, expected: int, verified: int) -> tuple[Problem, str]:
    """Say why ``record`` breaks the chain, looking a bounded distance ahead."""
    ahead: deque[_Record] = deque()
    for _, (number, raw, _complete) in zip(range(_LOOKAHEAD), lines, strict=False):
        ahead.append(_parse(number, raw))
    nxt = ahead[0] if ahead else None
    moved_up = record.sequence is not None and record.sequence > expected
    if (nxt is not None and nxt.sequence == expected and not moved_up
            and hasher.link(prev_hash, nxt.canonical) == nxt.hash):
        # The chain resumes right after this record, which claims a place it never had.
        return Problem.INSERTED, (f"a record that is not part of the chain was inserted before "
                                  f"sequence {expected}")
    if record.sequence == expected:
        if verified == 0 and hasher.keyed is False and record.sequence == 1:
            hint = " (or the log is keyed: pass its key)"
        elif hasher.keyed and hasher.link(prev_hash, record.canonical) != record.hash:
            hint = " (or it was re-signed with another key)"
        else:
            hint = ""
        return Problem.CHANGED, f"content or hash does not match the chain{hint}"
    if any(r.sequence == expected for r in ahead):
        return Problem.REORDERED, (f"expected sequence {expected} here, found {record.sequence}; "
                                   f"sequence {expected} appears later")
    if record.sequence is not None and record.sequence > expected:
        gap = record.sequence - expected
        span = f"{expected}" if gap == 1 else f"{expected}-{record.sequence - 1}"
        return Problem.MISSING, f"record(s) {span} deleted ({gap} missing)"
    return Problem.REORDERED, (f"sequence {record.sequence} appears after {expected - 1}: "
                               f"out of order or duplicated")


def require_intact(report: VerifyReport) -> None:
    """Raise :class:`IntegrityError` with the report's summary unless it is intact."""
    if not report.ok:
        raise IntegrityError(report.summary())
