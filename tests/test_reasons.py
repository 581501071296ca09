"""Reasons as objects: phrased in English exactly as before, translated from their fields.

``tests/data/reason_goldens.json`` holds the inputs of :func:`analyzer.detector.explain` and
what it said, frozen from the code before reasons became objects (when the report still
parsed the English text back with regular expressions to translate it): windows of the
synthetic organisation, of public logs, and one constructed window per feature and unit.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from analyzer.detector import explain
from analyzer.reasons import Reason, ReasonText, reasons_from_json
from analyzer.report.i18n import get_locale, split_reasons

GOLDENS = json.loads((Path(__file__).parent / "data" / "reason_goldens.json")
                     .read_text(encoding="utf-8"))
CASES = GOLDENS["cases"]


def _inputs(case: dict) -> tuple[pd.DataFrame, np.ndarray, list[str], pd.DataFrame | None]:
    names = GOLDENS["names"][case["names"]]
    row = {name: 0.0 for name in names}
    row.update(case["window"])
    windows = pd.DataFrame([row])
    windows["window_start"] = pd.to_datetime(windows["window_start"], utc=True)
    surprisal = np.array([[case["surprisal"].get(name, 0.0) for name in names]])
    typical = None
    if case["typical"] is not None:
        typical = pd.DataFrame([case["typical"]]) if case["typical"] else \
            pd.DataFrame(index=[0])
    return windows, surprisal, names, typical


@pytest.fixture(scope="module")
def explained() -> list[ReasonText]:
    """explain() of every golden case, once per module."""
    out = []
    for case in CASES:
        windows, surprisal, names, typical = _inputs(case)
        out.extend(explain(windows, surprisal, names, typical=typical,
                           min_surprisal=case["min_surprisal"]))
    return out


def test_english_reasons_are_unchanged(explained):
    kinds = {r.feature for text in explained for r in text.reasons}
    assert len(kinds) > 50  # every kind of reason is among the cases, and the combination
    assert "" in kinds
    wrong = [(case["source"], text, case["english"]) for case, text in zip(CASES, explained, strict=True)
             if text != case["english"]]
    assert not wrong, wrong[:5]
    # each reason phrases alone what it says within the window's text
    assert all(text == "; ".join(r.text for r in text.reasons) for text in explained)


@pytest.mark.parametrize("lang", ["de", "es"])
def test_reasons_translate_from_their_fields_as_before(explained, lang):
    loc = get_locale(lang)
    cases = [(case, text) for case, text in zip(CASES, explained, strict=True) if case[lang] is not None]
    assert len(cases) > 250
    wrong = [(text, case[lang]) for case, text in cases
             if [loc.reason(r) for r in text.reasons] != case[lang]]
    assert not wrong, wrong[:5]
    translated = sum(t != e for case, _ in cases
                     for t, e in zip(case[lang], split_reasons(case["english"]), strict=True))
    assert translated > 300  # the goldens say something in the language


@pytest.mark.parametrize("lang", ["de", "es"])
def test_english_text_alone_still_translates(lang):
    """A scores file or an older trail's alert holds only the text: it reads back."""
    loc = get_locale(lang)
    wrong = [(case["english"], case[lang]) for case in CASES if case[lang] is not None
             and [loc.reason(r) for r in split_reasons(case["english"])] != case[lang]]
    assert not wrong, wrong[:5]


def test_a_detail_holding_the_separator_stays_one_reason(explained):
    """The text splits such a reason in two; the object does not."""
    loc = get_locale("de")
    split = [(case, text) for case, text in zip(CASES, explained, strict=True) if case["de"] is None]
    assert split
    for _, text in split:
        assert len(text.reasons) < len(split_reasons(text))
        assert all("; " not in loc.reason(r) or r.detail for r in text.reasons)


def test_english_is_the_text_itself():
    en = get_locale("en")
    reason = Reason.of("n_failures", 83.0, typical=(0.0, 1.0), entity="alice")
    assert en.reason(reason) == reason.text == "83 failed events (typical for alice: 0-1)"
    assert en.reason("anything at all") == "anything at all"


def test_reasons_round_trip_through_json():
    reasons = (Reason.of("n_failures", 1.0, typical=None, entity="bob"),
               Reason.of("hour_rarity", 4.0, entity="bob", hour="03:00"),
               Reason.of("n_new_countries", 1.0, detail="RU", entity="bob"),
               Reason.combination(["n_failures", "n_ips"]), Reason("mystery_feature"))
    doc = orjson.loads(orjson.dumps([r.to_json() for r in reasons]))
    assert reasons_from_json(doc) == reasons
    assert doc[0] == {"feature": "n_failures", "value": 1.0, "entity": "bob"}


@pytest.mark.parametrize("bad", [
    "text", [{"value": 1}], [{"feature": "n_failures", "value": "7"}],
    [{"feature": "n_failures", "value": True}], [{"feature": "x", "typical": [1]}],
    [{"feature": "x", "detail": 3}], [{"feature": "x", "names": "ab"}], [None]])
def test_malformed_recorded_reasons_are_none(bad):
    assert reasons_from_json(bad) == ()


def test_reason_text_survives_the_frame_and_pickling():
    text = ReasonText([Reason.of("n_failures", 8.0, entity="203.0.113.9")])
    frame = pd.DataFrame({"reasons": pd.Series([text, ""], dtype=object), "k": [2, 1]})
    row = frame.sort_values("k").to_dict("records")[1]
    assert row["reasons"].reasons == text.reasons
    copy = pickle.loads(pickle.dumps(text))
    assert copy == text and copy.reasons == text.reasons


# -- through the scores frame, the trail and the report -----------------------------------------

def _scores(reasons: object) -> pd.DataFrame:
    start = pd.Timestamp("2025-03-04 10:00", tz="UTC")
    return pd.DataFrame({
        "entity_type": ["user"], "entity": ["bob"], "window_start": [start],
        "window_end": [start + pd.Timedelta(hours=1)], "score": [0.999], "alert": [True],
        "reasons": pd.Series([reasons], dtype=object), "risk_score": [60.0],
        "first_sequence": [None], "last_sequence": [None], "n_events": [1]})


# a resource named with the separator: the text reads as two reasons, the object as one
_ODD = ReasonText([Reason.of("n_new_resources", 1.0, detail="share/a; b", entity="bob"),
                   Reason.of("hour_rarity", 4.0, entity="bob", hour="03:00")])


def _report(tmp_path: Path, scores: pd.DataFrame | None = None, *, lang: str = "de",
            record: bool = False) -> tuple[str, ...]:
    from analyzer.alerts import alerts_from_scores, write_alerts
    from analyzer.logger import AuditLogger
    from analyzer.report import build_view, load_report_data

    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, name="audit.analyzer") as audit:
        audit.log("login", user="bob", outcome="success", source_ip="10.0.0.1",
                  timestamp=pd.Timestamp("2025-03-04 10:05", tz="UTC").to_pydatetime())
        if record:
            write_alerts(alerts_from_scores(scores), audit, model_id="m1",
                         model_version="2025-03-01T00:00:00Z")
    data = load_report_data(log, scores=None if record else scores)
    return build_view(data, lang=lang).alerts[0].reasons


def test_the_model_s_scores_carry_reason_objects_to_the_report(tmp_path):
    assert _report(tmp_path, _scores(_ODD), lang="en") == (
        "1 resource never touched before by bob (share/a; b)",
        "active at 03:00 UTC, unusual for bob")
    assert _report(tmp_path, _scores(_ODD)) == (
        "1 Ressourcen, die bob nie zuvor genutzt hat (share/a; b)",
        "aktiv um 03:00 UTC, ungewöhnlich für bob")
    # a scores file holds the text only: translated as far as the text can be read back
    assert len(_report(tmp_path, _scores(str(_ODD)))) == 3


def test_alerts_record_their_reasons_as_objects_in_the_trail(tmp_path):
    from analyzer.alerts import alerts_from_scores

    (alert,) = alerts_from_scores(_scores(_ODD))
    assert alert.reason_details == _ODD.reasons
    event = alert.to_event(model_id="m", model_version="v").to_ecs()
    details = event["analyzer"]["alert"]
    # the English stays where it always was; the objects are an additional field
    assert details["reasons"] == ["1 resource never touched before by bob (share/a", "b)",
                                  "active at 03:00 UTC, unusual for bob"]
    assert "(share/a; b); active at 03:00 UTC" in event["message"]
    assert reasons_from_json(details["reason_details"]) == _ODD.reasons
    assert _report(tmp_path, _scores(_ODD), record=True) == (
        "1 Ressourcen, die bob nie zuvor genutzt hat (share/a; b)",
        "aktiv um 03:00 UTC, ungewöhnlich für bob")


def test_an_older_trail_s_alert_without_objects_still_renders(tmp_path):
    older = _scores("8 failed events (no history for bob); bob never seen before")
    assert _report(tmp_path, older, lang="en", record=True) == (
        "8 failed events (no history for bob)", "bob never seen before")
    assert _report(tmp_path, older, record=True) == (
        "8 fehlgeschlagene Ereignisse (keine Vorgeschichte für bob)", "bob nie zuvor gesehen")
    log = tmp_path / "audit.jsonl"
    assert b"reason_details" not in log.read_bytes()
