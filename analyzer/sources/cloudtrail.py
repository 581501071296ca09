"""AWS CloudTrail records -> the normalized frame.

Two layouts are read, plain or gzip: the files CloudTrail delivers to S3 (one JSON document
``{"Records": [...]}``) and one record per line (what Athena exports, Firehose and most log
shippers write). Records go through pyarrow's JSON parser with an explicit schema that projects
only the fields the frame needs, so a clean file never runs Python code per record. A file
pyarrow refuses (a malformed line, a field of an unexpected type) is checked line by line: the
bad lines are set aside with their numbers and reasons and the rest is parsed again.

Mapping (the full table is in ``docs/formats.md``):

- user from ``userIdentity``: the ARN's name part (``alice`` for ``...:user/path/alice``,
  ``Role/session`` for an assumed role, ``root`` for the account root), else ``userName``,
  the invoking service (``invokedBy``) or ``principalId``.
- action ``eventSource:eventName`` (``s3.amazonaws.com:GetObject``); console sign-in
  (``signin.amazonaws.com:ConsoleLogin``) is ``login``, as elsewhere in this project.
- outcome failure when ``errorCode`` is set or a console sign-in says ``Failure``.
- resource the first ARN in ``resources`` (an ``ARNPrefix`` if that is all), else from the
  request parameters (S3 bucket and key, role, policy, user, group).
- source IP ``sourceIPAddress`` when it is an address (AWS services appear by name and give
  an empty IP); session the access key id; bytes the S3 bytes transferred.
- ``user_kind`` ``anonymous`` for an unsigned request (``Anonymous`` identity or the
  ``ANONYMOUS_PRINCIPAL`` account), ``machine`` for an AWS service (``AWSService``).

The OTRF Security-Datasets sample (MIT licence) this reader is tested on has ``@timestamp``
instead of ``eventTime``; both are accepted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.sources._base import (
    MAX_DOCUMENT_BYTES,
    ReadResult,
    Rejected,
    arrow_to_frame,
    within_time_range,
)
from analyzer.sources.generic import ip_or_empty, read_bytes
from analyzer.sources.jsonlines import JsonLinesParser, flatten, read_all

__all__ = ["FORMAT", "OPTIONS", "read", "sniff"]

logger = logging.getLogger(__name__)

FORMAT = "cloudtrail"
#: The :class:`~analyzer.sources.options.ReaderOptions` :func:`read` takes.
OPTIONS: frozenset[str] = frozenset()

_S = pa.string()
_SCHEMA = pa.schema([
    ("eventTime", _S), ("@timestamp", _S), ("eventSource", _S), ("eventName", _S),
    ("awsRegion", _S), ("sourceIPAddress", _S), ("userAgent", _S), ("errorCode", _S),
    ("errorMessage", _S), ("eventID", _S),
    ("userIdentity", pa.struct([
        ("type", _S), ("userName", _S), ("arn", _S), ("principalId", _S),
        ("accessKeyId", _S), ("invokedBy", _S), ("accountId", _S),
    ])),
    ("requestParameters", pa.struct([
        ("bucketName", _S), ("key", _S), ("roleArn", _S), ("policyArn", _S),
        ("userName", _S), ("roleName", _S), ("groupName", _S),
    ])),
    ("responseElements", pa.struct([("ConsoleLogin", _S)])),
    ("additionalEventData", pa.struct([
        ("bytesTransferredIn", pa.float64()), ("bytesTransferredOut", pa.float64()),
    ])),
    ("resources", pa.list_(pa.struct([("ARN", _S), ("ARNPrefix", _S)]))),
])
_PARSER = JsonLinesParser(_SCHEMA, max_line=32 << 20)  # records are KiB; requests can be big
_IDENTITY_PREFIX = (r"^arn:[^:]*:(?:iam|sts)::[^:]*:"
                    r"(?:user/(?:[^/]*/)*|assumed-role/|federated-user/)?")
_IAM_SOURCES = ("iam.amazonaws.com", "sts.amazonaws.com", "sso.amazonaws.com",
                "identitystore.amazonaws.com", "organizations.amazonaws.com")
#: What S3 writes as the account of a request nobody signed (``userIdentity.type`` is then
#: ``AWSAccount``, as for a named other account, so the type alone does not tell).
_ANONYMOUS = "ANONYMOUS_PRINCIPAL"
_S3_OBJECT_EVENTS = ("GetObject", "PutObject", "DeleteObject", "CopyObject", "DeleteObjects",
                     "HeadObject", "UploadPart", "CompleteMultipartUpload", "RestoreObject")


def sniff(head: bytes) -> bool:
    """True for a ``{"Records": [...]}`` document or JSON lines with CloudTrail's fields."""
    text = head.lstrip()
    if text.startswith(b"{") and text[1:40].lstrip().startswith(b'"Records"'):
        return True
    first = text.split(b"\n", 1)[0]
    try:
        doc = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and "eventSource" in doc and "eventName" in doc \
        and "userIdentity" in doc


def read(path: str | os.PathLike[str]) -> ReadResult:
    """Read CloudTrail records (S3 delivery files or JSON lines, plain or gzip).

    Parameters
    ----------
    path
        A CloudTrail file. In a ``{"Records": [...]}`` document, the "line number" of a
        rejected record is its 1-based position in ``Records``.

    Returns
    -------
    ReadResult
        One row per record. Records without a readable time or ``eventName`` are rejected.

    Examples
    --------
    >>> import tempfile, pathlib, json
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "trail.json"
    >>> _ = log.write_text(json.dumps({"Records": [{
    ...     "eventTime": "2024-05-01T12:00:00Z", "eventSource": "s3.amazonaws.com",
    ...     "eventName": "GetObject", "sourceIPAddress": "198.51.100.7",
    ...     "userIdentity": {"type": "IAMUser", "userName": "alice",
    ...                      "arn": "arn:aws:iam::111122223333:user/alice"},
    ...     "requestParameters": {"bucketName": "reports", "key": "q1.csv"}}]}))
    >>> read(log).frame.loc[0, ["user", "action", "outcome", "resource"]].tolist()
    ['alice', 's3.amazonaws.com:GetObject', 'success', 'arn:aws:s3:::reports/q1.csv']
    """
    where, data = read_bytes(path, max_line=MAX_DOCUMENT_BYTES)
    rejected: list[Rejected] = []
    records = _records_document(data, where, rejected)
    if records is not None:
        data = records
    table, numbers = read_all(data, _PARSER, where, rejected)
    records = table.num_rows + len(rejected)  # what parsed, and what did not
    frame = _frame(table, numbers, where, rejected)
    rejected.sort(key=lambda r: r.line)
    return ReadResult(frame, tuple(rejected), records=records)


def _records_document(data: bytes, where: str, rejected: list[Rejected]) -> bytes | None:
    """Re-lay a ``{"Records": [...]}`` document as JSON lines; ``None`` if it is not one."""
    head = data[:64].lstrip()
    if not (head.startswith(b"{") and head[1:].lstrip().startswith(b'"Records"')):
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # not one document after all: read it as lines and report the bad ones
    records = doc.get("Records") if isinstance(doc, dict) else None
    if not isinstance(records, list):
        return None
    lines: list[bytes] = []
    for number, record in enumerate(records, start=1):
        if isinstance(record, dict):
            lines.append(orjson.dumps(record))
        else:
            # keep the numbering: an empty line holds the place and is skipped by the parser
            rejected.append(Rejected(where, number, "record is not a JSON object",
                                     orjson.dumps(record)[:4096]))
            lines.append(b"")
    return b"\n".join(lines) + b"\n"


def _frame(table: pa.Table, numbers: np.ndarray, where: str,
           rejected: list[Rejected]) -> pd.DataFrame:
    flat = flatten(table)

    def col(name: str) -> pa.Array:
        return flat.column(name).combine_chunks()

    n = flat.num_rows
    time_text = pc.coalesce(col("eventTime"), col("@timestamp"))
    timestamps = within_time_range(_timestamps(time_text))
    event_name = col("eventName")
    keep = np.ones(n, dtype=bool)
    for mask, reason in (
        (pc.is_null(event_name).to_numpy(zero_copy_only=False), lambda i: "eventName: missing"),
        (timestamps.isna().to_numpy(),
         lambda i: f"eventTime: unreadable {time_text[int(i)].as_py()!r:.60}"),
    ):
        for index in np.flatnonzero(mask & keep):
            rejected.append(Rejected(where, int(numbers[index]), reason(index)))
        keep &= ~mask

    source = pc.fill_null(col("eventSource"), "")
    name = pc.fill_null(event_name, "")
    console_login = pc.equal(name, "ConsoleLogin")
    action = pc.if_else(console_login, "login",
                        pc.binary_join_element_wise(source, name, ":"))
    failed = pc.or_(pc.not_equal(pc.fill_null(col("errorCode"), ""), ""),
                    pc.equal(pc.fill_null(col("responseElements.ConsoleLogin"), ""),
                             "Failure"))
    arn = pc.fill_null(col("userIdentity.arn"), "")
    user = _user(col, arn)
    columns = {
        "user": user, "action": action,
        "outcome": pc.if_else(failed, "failure", "success"),
        "source_ip": ip_or_empty(col("sourceIPAddress")), "resource": _resource(col),
        "session": col("userIdentity.accessKeyId"), "bytes": _bytes_moved(col),
        "category": _category(source, name, console_login),
        "kind": pa.array(["event"] * n, type=_S),
        "message": _message(col, name, pc.if_else(pc.equal(arn, ""), user, arn), failed),
        "event_id": col("eventID"), "user_kind": _user_kind(col),
    }
    return arrow_to_frame(columns, timestamps=timestamps, keep=keep)


def _user(col: Callable[[str], pa.Array], arn: pa.Array) -> pa.Array:
    """The ARN's name part (``alice`` for ``...:user/path/alice``, ``Role/session`` for an
    assumed role), else the user name, the invoking service or the principal id."""
    from_arn = pc.replace_substring_regex(arn, _IDENTITY_PREFIX, "")
    from_arn = pc.if_else(pc.starts_with(arn, "arn:"), from_arn, "")
    return _first_non_empty(from_arn, col("userIdentity.userName"),
                            col("userIdentity.invokedBy"), col("userIdentity.principalId"))


def _resource(col: Callable[[str], pa.Array]) -> pa.Array:
    """What was acted on: the first resource ARN, the S3 object, else the IAM object named
    in the request."""
    return _first_non_empty(_first_arn(col("resources"), "ARN"),
                            _first_arn(col("resources"), "ARNPrefix"),
                            _s3_arn(col("requestParameters.bucketName"),
                                    col("requestParameters.key")),
                            col("requestParameters.roleArn"),
                            col("requestParameters.policyArn"),
                            col("requestParameters.userName"),
                            col("requestParameters.roleName"),
                            col("requestParameters.groupName"))


def _bytes_moved(col: Callable[[str], pa.Array]) -> pa.Array:
    """Bytes transferred in and out (null where the record says neither)."""
    moved = pc.add(pc.fill_null(col("additionalEventData.bytesTransferredIn"), 0.0),
                   pc.fill_null(col("additionalEventData.bytesTransferredOut"), 0.0))
    has_bytes = pc.or_(pc.is_valid(col("additionalEventData.bytesTransferredIn")),
                       pc.is_valid(col("additionalEventData.bytesTransferredOut")))
    return pc.if_else(has_bytes, pc.cast(pc.round(moved), pa.int64()),
                      pa.scalar(None, pa.int64()))


def _category(source: pa.Array, name: pa.Array, console_login: pa.Array) -> pa.Array:
    category = pc.if_else(pc.is_in(source, value_set=pa.array(_IAM_SOURCES)), "iam", "api")
    category = pc.if_else(pc.and_(pc.equal(source, "s3.amazonaws.com"),
                                  pc.is_in(name, value_set=pa.array(_S3_OBJECT_EVENTS))),
                          "file", category)
    return pc.if_else(console_login, "authentication", category)


def _user_kind(col: Callable[[str], pa.Array]) -> pa.Array:
    identity_type = pc.fill_null(col("userIdentity.type"), "")
    anonymous = pc.or_(pc.equal(identity_type, "Anonymous"), pc.is_in(
        pc.fill_null(col("userIdentity.accountId"), ""), value_set=pa.array([_ANONYMOUS])))
    return pc.if_else(anonymous, "anonymous",
                      pc.if_else(pc.equal(identity_type, "AWSService"), "machine", ""))


def _message(col: Callable[[str], pa.Array], name: pa.Array, who: pa.Array,
             failed: pa.Array) -> pa.Array:
    """``<event> by <who> from <address> in <region>``, with the error of a failure."""
    message = pc.binary_join_element_wise(
        name, "by", who, "from", pc.fill_null(col("sourceIPAddress"), "-"),
        "in", pc.fill_null(col("awsRegion"), "-"), " ")
    error = pc.binary_join_element_wise(pc.fill_null(col("errorCode"), ""),
                                        pc.fill_null(col("errorMessage"), ""), ": ")
    return pc.if_else(failed, pc.binary_join_element_wise(
        message, pc.if_else(pc.equal(error, ": "), "Failure", error), " - "), message)


def _timestamps(text: pa.Array) -> pd.Series:
    try:
        return pd.Series(pc.cast(text, pa.timestamp("us", "UTC")).to_pandas())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pd.to_datetime(pd.Series(text.to_pandas(), dtype="object"), format="ISO8601",
                              utc=True, errors="coerce")


def _first_non_empty(*arrays: pa.Array) -> pa.Array:
    """Element-wise the first of ``arrays`` that is neither null nor empty."""
    cleaned = [pc.if_else(pc.equal(pc.fill_null(a, ""), ""), pa.scalar(None, _S), a)
               for a in arrays]
    return pc.fill_null(pc.coalesce(*cleaned), "")


def _first_arn(resources: pa.ListArray, field: str) -> pa.Array:
    """Per record, the first non-null ``field`` among its ``resources`` entries."""
    n = len(resources)
    values = pc.list_flatten(resources).field(field)
    parents = pc.list_parent_indices(resources).to_numpy()
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    positions = np.flatnonzero(valid)
    owners, first = np.unique(parents[positions], return_index=True)
    picked = np.full(n, -1, dtype=np.int64)
    picked[owners] = positions[first]
    index = pa.array(picked, mask=picked < 0)
    return values.take(index)


def _s3_arn(bucket: pa.Array, key: pa.Array) -> pa.Array:
    bucket = pc.fill_null(bucket, "")
    key = pc.fill_null(key, "")
    path = pc.if_else(pc.equal(key, ""), bucket,
                      pc.binary_join_element_wise(bucket, key, "/"))
    return pc.if_else(pc.equal(bucket, ""), pa.scalar(None, _S),
                      pc.binary_join_element_wise("arn:aws:s3:::", path, ""))
