"""One duration grammar: every form the logger, ``--since``/``--until`` and ``watch`` read
before they shared :func:`analyzer.durations.parse_duration` still means the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from analyzer.durations import parse_duration
from analyzer.errors import ConfigError
from analyzer.query import parse_time

NOW = datetime(2026, 1, 10, 12, tzinfo=UTC)


# The logger's rotate_every took an integer and one of s, m, h, d (spaces around), or a
# timedelta.
@pytest.mark.parametrize(("text", "expected"), [
    ("45s", timedelta(seconds=45)), ("30m", timedelta(minutes=30)),
    ("6h", timedelta(hours=6)), ("1d", timedelta(days=1)), (" 2 h ", timedelta(hours=2)),
])
def test_the_loggers_rotation_forms(tmp_path, text, expected) -> None:
    from analyzer.logger import AuditLogger

    assert parse_duration(text) == expected
    with AuditLogger(tmp_path / "a.jsonl", rotate_every=text) as audit:
        assert audit._rotate_ns == expected.total_seconds() * 1e9
    with AuditLogger(tmp_path / "b.jsonl", rotate_every=expected) as audit:
        assert audit._rotate_ns == expected.total_seconds() * 1e9


@pytest.mark.parametrize("bad", ["1x", "d", "-1d", "1 fortnight"])
def test_the_logger_names_rotate_every_when_it_is_not_a_duration(tmp_path, bad) -> None:
    from analyzer.logger import AuditLogger

    with pytest.raises(ConfigError, match="rotate_every: not a duration"):
        AuditLogger(tmp_path / "a.jsonl", rotate_every=bad)
    with pytest.raises(ConfigError, match="rotate_every must be positive"):
        AuditLogger(tmp_path / "a.jsonl", rotate_every="0h")


# --since/--until took a number (decimals too) and s, m, h, d or w, in any case.
@pytest.mark.parametrize(("text", "back"), [
    ("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)),
    ("30M", timedelta(minutes=30)), ("12h", timedelta(hours=12)),
    ("1.5h", timedelta(hours=1.5)), ("7d", timedelta(days=7)), ("7D", timedelta(days=7)),
    ("2w", timedelta(weeks=2)), ("0.5 d", timedelta(hours=12)),
])
def test_the_query_spans_back_from_now(text, back) -> None:
    assert parse_time(text, now=NOW) == NOW - back


def test_a_clock_is_a_time_of_day_for_since_not_a_span() -> None:
    # "--since 10:00:00" was refused before; it must not now mean "ten hours ago"
    with pytest.raises(ConfigError, match="not a time"):
        parse_time("10:00:00", now=NOW)
    assert parse_time("2026-01-02T10:00:00Z") == datetime(2026, 1, 2, 10, tzinfo=UTC)


# watch read its window (the model's) as a pandas duration: every such form still means
# what pandas says it means.
@pytest.mark.parametrize("text", [
    "1h", "15min", "1H", "1D", "2W", "1.5h", "1h30m", "1 hour", "2 hours", "1 hours 30 minutes",
    "1days", "1 Day", "1hr", "1sec", "1second", "1minutes", "1Min", "1ms", "1MS", "1 ms",
    "1milli", "1millis", "1micro", "1us", "1\N{MICRO SIGN}s", "1d2h", "1 d 2 h", "1d, 2h",
    "2h 1 days", "5.h", "1 days 02:00:00", "0 days 01:00:00", "1 day, 02:00:00",
    "1 days 1:2:3", "1.5 days 02:00:00", "1 day 02:00:00.5", "02:00:00", "P1DT2H",
    "PT15M", "P1W", "P0DT0H0M0.5S",
])
@pytest.mark.filterwarnings("ignore:.*deprecated")  # pandas' own spellings of some units
def test_every_pandas_window_form_means_what_pandas_says(text) -> None:
    assert parse_duration(text) == pd.Timedelta(text).to_pytimedelta()


def test_the_watch_reads_its_window_with_the_same_grammar(tmp_path) -> None:
    from analyzer.watch import Watcher

    def score(frame):
        return frame

    watcher = Watcher(tmp_path / "audit.jsonl", score_windows=score, on_alert=print,
                      window="1h30m", state_file=False)
    assert watcher._window == pd.Timedelta(minutes=90)
    with pytest.raises(ConfigError, match="window: not a duration"):
        Watcher(tmp_path / "audit.jsonl", score_windows=score, on_alert=print,
                window="an hour", state_file=False)


@pytest.mark.parametrize("bad", ["", "h", "10", "-1h", "+1h", "1y", "1M ago", "P1M", "PT",
                                 "1h30", "1e3s", "tomorrow"])
def test_what_is_not_a_duration_is_refused_with_examples(bad) -> None:
    with pytest.raises(ConfigError, match=r"span: not a duration: .*\(90s, 30m"):
        parse_duration(bad, name="span")


def test_a_timedelta_passes_through() -> None:
    assert parse_duration(timedelta(minutes=5)) == timedelta(minutes=5)
    assert parse_duration(pd.Timedelta("1h")) == timedelta(hours=1)
