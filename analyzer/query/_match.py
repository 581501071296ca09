"""The record matcher: which rows of Arrow record columns a :class:`~analyzer.query.Filter`
keeps. One source of truth for the filter semantics of trails, Parquet exports and databases.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.query._filters import Filter

__all__ = ["as_bool", "match_columns"]


def as_bool(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An Arrow boolean array as a numpy one (null as False only where filled before)."""
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def match_columns(flt: Filter, col: dict[str, pa.ChunkedArray], stamps: pa.ChunkedArray,
                  outcome: pa.ChunkedArray) -> np.ndarray:
    """Which rows ``flt`` keeps, given the record columns as Arrow arrays (one source of
    truth for the filter semantics of files and databases)."""
    n = len(stamps)
    keep = np.ones(n, dtype=bool)
    if flt.users:
        keep &= as_bool(pc.fill_null(pc.is_in(col["user"], value_set=pa.array(flt.users)), False))
    if flt.actions:
        keep &= _values_where(col["action"], lambda v: any(
            fnmatch.fnmatchcase(v, p) for p in flt.actions))
    if flt.resources:
        keep &= _values_where(col["resource"], lambda v: any(
            fnmatch.fnmatchcase(v, p) for p in flt.resources))
    if flt.outcomes:
        keep &= as_bool(pc.is_in(outcome, value_set=pa.array(flt.outcomes)))
    if flt.levels:
        keep &= as_bool(pc.fill_null(pc.is_in(col["level"], value_set=pa.array(flt.levels)),
                                     False))
    if flt.kinds:
        kind = pc.fill_null(col["kind"], "event")
        keep &= as_bool(pc.is_in(kind, value_set=pa.array(flt.kinds)))
    if flt.source_ips:
        networks = [ipaddress.ip_network(v, strict=False) for v in flt.source_ips]
        keep &= _values_where(col["source_ip"], lambda v: _in_networks(v, networks))
    if flt.since is not None:
        keep &= as_bool(pc.fill_null(pc.greater_equal(stamps, pa.scalar(
            flt.since, pa.timestamp("us", "UTC"))), False))
    if flt.until is not None:
        keep &= as_bool(pc.fill_null(pc.less(stamps, pa.scalar(
            flt.until, pa.timestamp("us", "UTC"))), False))
    if flt.text:
        keep &= as_bool(pc.fill_null(pc.match_substring(col["message"], flt.text,
                                                        ignore_case=True), False))
    return keep


def _in_networks(value: str, networks: list[Any]) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return any(address.version == net.version and address in net for net in networks)


def _values_where(column: pa.ChunkedArray, test: Any) -> np.ndarray:
    """Rows whose value passes ``test``, testing each distinct value once."""
    encoded = column.combine_chunks().dictionary_encode()
    dictionary = encoded.dictionary.to_pylist()
    passing = np.fromiter((test(v) for v in dictionary), dtype=bool, count=len(dictionary))
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    valid = ~as_bool(encoded.is_null()) if encoded.null_count else np.ones(len(encoded), bool)
    result = np.zeros(len(encoded), dtype=bool)
    if len(dictionary):
        result[valid] = passing[indices[valid].astype(np.int64)]
    return result
