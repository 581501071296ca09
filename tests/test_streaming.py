"""A log read in chunks gives the same windows, model, scores and alerts as read whole (#17).

The chunked path (:mod:`analyzer.streaming`) holds one chunk of events at a time; these tests
cut logs in chunks smaller than a window, chunks that cut a window and the trailing day, and
compare the scores (CSV bytes, and frames exactly) and the alerts with the in-memory path.
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyzer.features import Failures, FeatureExtractor, chunk_stats, merge_stats
from analyzer.model import AuditModel
from analyzer.sources import read_events
from analyzer.streaming import frame_chunks, stream_windows
from analyzer.synth import SynthConfig, generate
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=8, days=8, attack_days=3, seed=5))


def _same(whole: pd.DataFrame, chunked: pd.DataFrame) -> None:
    """Byte for byte as CSV, and exactly as frames."""
    assert whole.to_csv(index=False) == chunked.to_csv(index=False)
    pd.testing.assert_frame_equal(whole, chunked, check_exact=True)


def _alerts(scores: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    rows = scores[scores["alert"]]
    return list(zip(rows["entity_type"].astype(str), rows["entity"],
                    rows["window_start"].astype(str), rows["incident"], strict=True))


def _hour_of_events(frame: pd.DataFrame) -> int:
    """The largest number of events in one UTC hour (a chunk below it is within a window)."""
    return int(frame["timestamp"].dt.floor("h").value_counts().max())


# sizes: below one hour's events (a window spread over several chunks), a few hours (chunks
# cut windows and every trailing day), about a day, and more than the log
@pytest.mark.parametrize("size", [53, 1_500, 10**7])
def test_training_and_scoring_in_chunks_match_the_whole_log(org, size):
    train, test = org.train_events, org.test_events
    assert size < _hour_of_events(train) or size > 24 * _hour_of_events(train) / 10
    whole = AuditModel(random_state=0).fit(train)
    chunked = AuditModel(random_state=0).fit_chunks(frame_chunks(train, size))
    assert chunked.metadata == whole.metadata
    for name in ("pairs_", "first_seen_", "last_seen_", "last_novel_", "typical_events_"):
        a, b = getattr(whole.extractor_, name), getattr(chunked.extractor_, name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(whole.extractor_.peers_, chunked.extractor_.peers_)
    scores = whole.score(test)
    _same(scores, chunked.score_chunks(frame_chunks(test, size)))
    # the model from chunks scores a whole frame the same, and the other way round
    _same(scores, chunked.score(test))
    _same(scores, whole.score_chunks(frame_chunks(test, size)))
    assert _alerts(scores)


@pytest.mark.parametrize("size", [97, 2_000])
def test_self_scoring_in_chunks_matches_the_whole_log(org, size):
    log = pd.concat([org.train_events, org.test_events], ignore_index=True)
    whole = AuditModel(random_state=0).fit_score(log)
    chunked = AuditModel(random_state=0).fit_score_chunks(frame_chunks(log, size))
    _same(whole, chunked)
    assert _alerts(whole) == _alerts(chunked) != []


@pytest.mark.parametrize("step", [None, "20min"])
def test_sliding_windows_in_chunks_match(org, step):
    train, test = org.train_events, org.test_events
    fx = FeatureExtractor(window="1h", step=step)
    whole = fx.fit_transform(train, details=True)
    scored = fx.transform(test)
    fx2 = FeatureExtractor(window="1h", step=step)
    _same(whole, stream_windows(fx2, frame_chunks(train, 350), fitting=True, details=True))
    _same(scored, stream_windows(fx2, frame_chunks(test, 350), fitting=False, details=True))


def _real(tmp_path: Path, *parts: str) -> pd.DataFrame:
    path = shared_data(*parts)
    return read_events(path).frame


@pytest.mark.parametrize("parts", [
    ("loghub", "OpenSSH_2k.log"),
    ("otrf", "windows_security_purplesharp_ad_playbook_I.jsonl"),
    ("otrf", "cloudtrail_ec2_proxy_s3_exfiltration.jsonl"),
])
@pytest.mark.parametrize("size", [11, 150])
def test_real_logs_in_chunks_match(tmp_path, parts, size):
    frame = _real(tmp_path, *parts)
    half = len(frame) // 2
    train, test = frame.iloc[:half], frame.iloc[half:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny logs: the forest warns about its sample
        _same(AuditModel(random_state=0).fit_score(frame),
              AuditModel(random_state=0).fit_score_chunks(frame_chunks(frame, size)))
        model = AuditModel(random_state=0).fit(train)
        _same(model.score(test), model.score_chunks(frame_chunks(test, size)))
        chunked = AuditModel(random_state=0).fit_chunks(frame_chunks(train, size))
        _same(model.score(test), chunked.score(test))


def test_statistics_merge_in_any_grouping(org):
    """Phase 1's merge is associative (a tree reduction gives the same statistics), and
    phase 2's blocks can be computed in any order: the windows are the same."""
    train = org.train_events
    fx = FeatureExtractor()
    spec = fx.stats_spec(fitting=True)
    parts = [chunk_stats(chunk, spec) for chunk in frame_chunks(train, 3_000)]
    stats = [p for p, _ in parts]
    linear = functools.reduce(merge_stats, stats)
    half = len(stats) // 2
    tree = merge_stats(functools.reduce(merge_stats, stats[:half]),
                       functools.reduce(merge_stats, stats[half:]))
    assert linear.n == tree.n and linear.bounds == tree.bounds
    for field, names in linear.names.items():
        assert names.tolist() == tree.names[field].tolist()
    assert list(linear.tables) == list(tree.tables)
    for name, table in linear.tables.items():
        np.testing.assert_array_equal(table.keys, tree.tables[name].keys)
        np.testing.assert_array_equal(table.values, tree.tables[name].values)
    ctx = fx.finalize_stats(tree, fitting=True)
    events = ctx.encode([e for _, e in parts])
    bounds = sorted({int(e.t.min() // ctx.step) for _, e in parts[1:]})
    edges = [None, *bounds, None]
    blocks = [fx.window_block(ctx, events, lo=lo, hi=hi,
                              failures=_failures_before(events, lo, ctx), details=True)
              for lo, hi in reversed(list(itertools.pairwise(edges)))]
    table = fx.finish_windows(ctx, blocks[::-1], details=True)
    _same(FeatureExtractor().fit_transform(train, details=True), table)


def _failures_before(events, lo, ctx) -> Failures:
    """The failed events before a block's first slot (what it needs for the trailing day)."""
    if lo is None:
        return Failures.none()
    source, user = events.codes["source_ip"], events.codes["user"]
    sel = (events.t // ctx.step < lo) & events.fail & (source >= 0) & (user >= 0)
    return Failures(events.t[sel], source[sel], user[sel])


def test_chunks_are_read_once_and_spilled_arrays_removed(org, tmp_path):
    reads = []

    def chunks():
        for chunk in frame_chunks(org.train_events, 2_000):
            reads.append(len(chunk))
            yield chunk

    spill = tmp_path / "spill"
    spill.mkdir()
    model = AuditModel(random_state=0).fit_chunks(chunks(), spill_dir=spill)
    assert sum(reads) == len(org.train_events)
    assert os.listdir(spill) == []
    assert model.metadata["n_events"] == len(org.train_events)


def test_no_chunks_is_nothing_to_train_on():
    from analyzer.errors import SchemaError

    with pytest.raises(SchemaError, match="nothing to train on"):
        AuditModel().fit_chunks(iter(()))


def test_reading_in_chunks_keeps_the_accounting_and_the_results(org, tmp_path):
    from analyzer.sources.chunks import read_chunks
    from analyzer.synth import write_audit_log

    events = org.train_events.iloc[:9_000]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_audit_log(events.iloc[:6_000], first)
    write_audit_log(events.iloc[6_000:], second)
    with open(first, "ab") as fh:
        fh.write(b'{"not json\n')
    whole = read_events([first, second])
    chunks = read_chunks([first, second], size=2_000)
    frames = list(chunks)
    assert len(frames) >= 3
    assert chunks.result is not None
    assert chunks.result.accounting() == whole.accounting()
    assert [r.line for r in chunks.result.rejected] == [r.line for r in whole.rejected]
    joined = pd.concat(frames).sort_values("timestamp", kind="stable", ignore_index=True)
    for column in ("timestamp", "user", "action", "source_ip", "resource"):
        assert joined[column].astype(str).tolist() == whole.frame[column].astype(str).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = read_chunks([first, second], size=2_000)
        scores = AuditModel(random_state=0).fit_score_chunks(again)
        _same(AuditModel(random_state=0).fit_score(whole.frame), scores)
    assert again.result is not None
    assert again.result.accounting() == whole.accounting()


def test_a_parquet_export_reads_in_row_groups(org, tmp_path):
    from analyzer.export import export_parquet
    from analyzer.sources.chunks import read_chunks
    from analyzer.synth import write_audit_log

    trail = tmp_path / "audit.jsonl"
    write_audit_log(org.train_events.iloc[:5_000], trail)
    export_parquet(trail, tmp_path / "copy")
    whole = read_events(tmp_path / "copy")
    chunks = read_chunks(tmp_path / "copy", size=700)
    frames = list(chunks)
    assert len(frames) >= 2 and max(len(f) for f in frames) < 2_000
    assert chunks.result is not None
    assert chunks.result.accounting() == whole.accounting()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _same(AuditModel(random_state=0).fit_score(whole.frame),
              AuditModel(random_state=0).fit_score_chunks(read_chunks(tmp_path / "copy",
                                                                      size=700)))


def test_a_web_scan_read_in_small_chunks_names_the_same_paths_and_tools():
    """Paths and tools are named in the order the log first shows them, chunks or not."""
    agents = ["sqlmap/1.5#stable", "curl/8.1", "Mozilla/5.0 Firefox/120.0", "nikto/2.5"]
    paths = ["/.env", "/.git/config", "/wp-admin/", "/backup.zip", "/server-status",
             "/search", "/.aws/credentials", "/db.sql"]
    rows = [{"timestamp": pd.Timestamp("2026-01-05 09:00", tz="UTC") + pd.Timedelta(seconds=37 * i),
             "user": "", "source_ip": f"203.0.113.{i % 3}", "action": "http.get",
             "outcome": "failure" if i % 4 else "success", "url_path": paths[(i * 5) % 8],
             "url_query": "q=1%27%20OR%201%3D1--" if i % 7 == 0 else "", "status": 404,
             "user_agent": agents[(i // 3) % 4], "resource": paths[(i * 5) % 8]}
            for i in range(240)]
    frame = pd.DataFrame(rows)
    whole = FeatureExtractor().fit_transform(frame, details=True)
    for size in (4, 25):
        _same(whole, stream_windows(FeatureExtractor(), frame_chunks(frame, size),
                                    fitting=True, details=True))
    assert (whole["d_sensitive_probes"] != "").any() and (whole["d_scanner"] != "").any()


def test_block_inputs_from_partitions_give_the_same_windows(org):
    """What another engine does per block (block_events, failures_before from the
    partitions' arrays) gives the windows of the whole log."""
    from analyzer.streaming import block_events, failures_before

    train = org.train_events
    fx = FeatureExtractor()
    spec = fx.stats_spec(fitting=True)
    parts = [chunk_stats(chunk, spec) for chunk in frame_chunks(train, 1_700)]
    ctx = fx.finalize_stats(functools.reduce(merge_stats, [p for p, _ in parts]), fitting=True)
    arrays = [e for _, e in parts]
    edges = [None, *sorted({int(e.t.min() // ctx.step) for e in arrays[1:]}), None]
    blocks = []
    for lo, hi in itertools.pairwise(edges):
        events = block_events(ctx, arrays, lo, hi)
        if events is not None:
            blocks.append(fx.window_block(ctx, events, lo=lo, hi=hi,
                                          failures=failures_before(ctx, arrays, lo)))
    _same(FeatureExtractor().fit_transform(train, details=True),
          fx.finish_windows(ctx, blocks, details=True))


def test_chunks_out_of_time_order_give_the_windows_of_their_concatenation(org):
    """A rotated series can end each file with a later record, and files may come in any
    order: a block reads every chunk holding events of its hours, so the windows are those of
    the chunks joined in the same order."""
    chunks = list(frame_chunks(org.train_events, 1_100))
    shuffled = [chunks[i] for i in (3, 0, 5, 1, 4, 2, *range(6, len(chunks)))]
    late = shuffled[0].iloc[:40].assign(
        timestamp=shuffled[0]["timestamp"].iloc[:40] + pd.Timedelta(days=2))
    shuffled[0] = pd.concat([shuffled[0], late], ignore_index=True)
    joined = pd.concat(shuffled, ignore_index=True)
    _same(FeatureExtractor().fit_transform(joined, details=True),
          stream_windows(FeatureExtractor(), iter(shuffled), fitting=True, details=True))
