"""Reports: HTML and text from view-models; escaping, edge cases, languages, the CLI."""

from __future__ import annotations

import ast
import gettext
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd
import pytest

from analyzer.cli import main
from analyzer.errors import ConfigError
from analyzer.logger import AuditLogger
from analyzer.report import (
    build_view,
    load_report_data,
    render_html,
    render_text,
    write_reports,
)
from analyzer.report.i18n import LANGUAGES, get_locale, reason_templates, split_reasons

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
TEMPLATE = "{{ 7*7 }} {% raw %}"


def write_log(path: Path, *, key: bytes | None = None, hostile: bool = False) -> Path:
    """A small chained log: three people over two days, a burst of failures from one address,
    an export at night."""
    users = ["alice", "bob", SCRIPT if hostile else "carol"]
    with AuditLogger(path, key=key, service="test") as audit:
        for i in range(60):
            user = users[i % 3]
            audit.log("dataset.read" if i % 4 else "login", user=user, outcome="success",
                      source_ip=f"10.0.0.{i % 3 + 1}", country="DE",
                      resource=IMG if hostile and i % 5 == 0 else f"dataset/d{i % 4}",
                      message=TEMPLATE if hostile else f"{user} read",
                      timestamp=T0 + timedelta(minutes=37 * i))
        for j in range(8):
            audit.log("login", user=users[j % 3], outcome="failure", source_ip="203.0.113.9",
                      country="RU", level="warning", message="bad password",
                      timestamp=T0 + timedelta(days=1, hours=2, minutes=3 * j))
        audit.log("dataset.export", user=SCRIPT if hostile else "bob", outcome="success",
                  source_ip="198.51.100.4", country="BR", resource="dataset/customers",
                  level="warning", message=TEMPLATE if hostile else "",
                  timestamp=T0 + timedelta(days=1, hours=3, minutes=5))
    return path


def scores_for(*, hostile: bool = False) -> pd.DataFrame:
    """A scores frame (DESIGN contract 6 plus the model's extra columns) with two alerts."""
    start = pd.Timestamp(T0) + pd.Timedelta(days=1, hours=2)
    rows = [
        {"entity_type": "source_ip", "entity": "203.0.113.9", "window_start": start,
         "window_end": start + pd.Timedelta(hours=1), "score": 0.99999, "alert": True,
         "reasons": "8 failed events (no history for 203.0.113.9); 203.0.113.9 never seen "
                    "before; first time doing login",
         "risk_score": 100.0, "first_sequence": 61, "last_sequence": 68, "n_events": 8,
         "f_n_failures": 8.0, "c_n_failures": 9.2, "f_new_entity": 1.0, "c_new_entity": 4.1},
        {"entity_type": "user", "entity": SCRIPT if hostile else "bob",
         "window_start": start + pd.Timedelta(hours=1),
         "window_end": start + pd.Timedelta(hours=2), "score": 0.999, "alert": True,
         "reasons": (f"1 privileged actions never done before by {SCRIPT} ({IMG})"
                     if hostile else "1 privileged actions never done before by bob "
                                     "(1 dataset.export)"),
         "risk_score": 60.0, "first_sequence": 69, "last_sequence": 69, "n_events": 1,
         "f_n_failures": 0.0, "c_n_failures": 0.0, "f_new_entity": 0.0, "c_new_entity": 0.0},
    ]
    for k in range(10):
        rows.append({"entity_type": "user", "entity": "alice",
                     "window_start": pd.Timestamp(T0) + pd.Timedelta(hours=k),
                     "window_end": pd.Timestamp(T0) + pd.Timedelta(hours=k + 1),
                     "score": 0.1 * k, "alert": False, "reasons": "", "risk_score": 2.0 * k,
                     "first_sequence": None, "last_sequence": None, "n_events": 2,
                     "f_n_failures": 0.0, "c_n_failures": 0.0, "f_new_entity": 0.0,
                     "c_new_entity": 0.0})
    return pd.DataFrame(rows)


FIXED = "2000-01-01 00:00 UTC"


def view_of(path: Path, **options):
    lang = options.pop("lang", "en")
    return build_view(load_report_data(path, generated=FIXED, **options), lang=lang)


# -- content -----------------------------------------------------------------------------

def test_html_report_has_every_section_and_no_external_reference(tmp_path):
    log = write_log(tmp_path / "audit.jsonl")
    view = write_reports(log, scores=scores_for(), html_path=tmp_path / "r.html",
                         text_path=tmp_path / "r.txt")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    for section in ("alerts", "activity", "top", "scores", "compliance", "integrity"):
        assert f'id="{section}"' in html
    for chart in ("activity-level", "activity-outcome", "categories", "scores", "alert-1"):
        assert f'data-chart="{chart}"' in html
    # nothing is fetched: no links, sources or imports, and a policy that forbids them
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html
    assert len(view.alerts) == 2
    assert view.integrity.status == "verified"


def test_alerts_come_first_sorted_by_risk_with_reasons_and_evidence(tmp_path):
    log = write_log(tmp_path / "audit.jsonl")
    view = view_of(log, scores=scores_for())
    assert [a.entity for a in view.alerts] == ["203.0.113.9", "bob"]
    first = view.alerts[0]
    assert first.reasons == ("8 failed events (no history for 203.0.113.9)",
                             "203.0.113.9 never seen before", "first time doing login")
    # the evidence is the window's eight failed logins from that address, in the trail's order
    assert len(first.evidence.rows) == 8
    assert [row[0].text for row in first.evidence.rows] == [str(s) for s in range(61, 69)]
    assert {row[6].text for row in first.evidence.rows} == {"failure"}
    assert first.context is not None
    text = render_text(view)
    assert text.index("ALERTS") < text.index("ACTIVITY")
    assert "8 failed events (no history for 203.0.113.9)" in text


def test_top_tables_count_the_rest(tmp_path):
    log = write_log(tmp_path / "audit.jsonl")
    view = build_view(load_report_data(log, generated=FIXED), top=2)
    users = next(t for t in view.tops if t.id == "top-user")
    assert len(users.rows) == 2
    assert users.more == "and 1 more"
    resources = next(t for t in view.tops if t.id == "top-resource")
    assert resources.rows[0][0].text.startswith("dataset/")


def test_compliance_tables(tmp_path):
    log = write_log(tmp_path / "audit.jsonl")
    view = view_of(log)
    privileged, failed, new_places = view.compliance
    assert [(r[0].text, r[1].text) for r in privileged.rows] == [("bob", "dataset.export")]
    assert failed.rows[0][1].text == "203.0.113.9"
    assert failed.rows[0][3].text == "3"  # alice, bob and carol failed 3, 3 and 2 times
    new = {(r[0].text, r[1].text) for r in new_places.rows}
    assert ("bob", "198.51.100.4") in new and ("alice", "203.0.113.9") in new


# -- escaping ----------------------------------------------------------------------------

def test_strings_from_the_log_are_escaped_in_html(tmp_path):
    log = write_log(tmp_path / "audit.jsonl", hostile=True)
    view = view_of(log, scores=scores_for(hostile=True))
    html = render_html(view)
    body = html.split("<body>", 1)[1]
    # the only script is ours, at the end; no element was injected
    assert body.count("<script") == 1
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    # template syntax from the log is shown as written, never evaluated
    assert "{{ 7*7 }} {% raw %}" in html
    assert ">49<" not in html
    text = render_text(view)
    assert SCRIPT in text and TEMPLATE in text


def test_text_report_neutralises_terminal_control_sequences(tmp_path):
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log) as audit:
        audit.log("login", user="eve\x1b[2J\x1b[31m", outcome="failure", source_ip="10.0.0.1",
                  timestamp=T0)
    text = render_text(view_of(log))
    assert "\x1b" not in text
    assert "eve\\x1b[2J" in text


# -- edge cases --------------------------------------------------------------------------

def test_empty_log(tmp_path):
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    view = write_reports(log, html_path=tmp_path / "r.html", text_path=tmp_path / "r.txt")
    assert view.activity == ()
    text = (tmp_path / "r.txt").read_text()
    assert "Events:            0" in text or re.search(r"Events:\s+0\b", text)
    assert "No events in this log." in text
    assert "No alerts" in (tmp_path / "r.html").read_text()


def test_log_with_one_event(tmp_path):
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log) as audit:
        audit.log("login", user="alice", outcome="success", source_ip="10.0.0.1", timestamp=T0)
    view = write_reports(log, html_path=tmp_path / "r.html", text_path=tmp_path / "r.txt")
    assert view.integrity.status == "verified"
    assert {f.label: f.value for f in view.facts}["Events"] == "1"
    assert len(view.activity) == 2


def test_log_with_only_alerts_shows_the_recorded_alerts(tmp_path):
    from analyzer.alerts import alerts_from_scores, write_alerts

    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, name="audit.analyzer") as audit:
        write_alerts(alerts_from_scores(scores_for()), audit, model_id="m1",
                     model_version="2025-03-01T00:00:00Z")
    view = write_reports(log, html_path=tmp_path / "r.html", text_path=tmp_path / "r.txt")
    assert [a.entity for a in view.alerts] == ["203.0.113.9", "bob"]
    assert view.alerts[0].reasons[0] == "8 failed events (no history for 203.0.113.9)"
    assert view.alerts[0].evidence.rows == ()
    assert "recorded in the audit trail" in view.alerts_intro
    assert {f.label: f.value for f in view.facts}["Events"] == "0"


def test_broken_chain_is_named_with_the_record(tmp_path):
    log = write_log(tmp_path / "audit.jsonl")
    lines = log.read_bytes().splitlines(keepends=True)
    doc = orjson.loads(lines[4])
    doc["user"]["name"] = "mallory"
    lines[4] = orjson.dumps(doc) + b"\n"
    log.write_bytes(b"".join(lines))
    view = write_reports(log, html_path=tmp_path / "r.html", text_path=tmp_path / "r.txt")
    assert view.integrity.status == "broken"
    assert view.integrity.headline == "Broken at record 5"
    assert "changed" in view.integrity.detail
    assert "Broken at record 5" in (tmp_path / "r.txt").read_text()
    assert 'class="verdict verdict-broken"' in (tmp_path / "r.html").read_text()


def test_log_without_chain_is_not_chained(tmp_path):
    log = tmp_path / "plain.jsonl"
    log.write_text('{"@timestamp": "2025-03-03T08:00:00.000000Z", "event": {"action": '
                   '"login", "outcome": "success"}, "user": {"name": "alice"}}\n')
    view = view_of(log)
    assert view.integrity.status == "not_chained"
    assert view.integrity.headline == "Not chained"


def test_keyed_chain_verifies_with_its_key(tmp_path, key):
    log = write_log(tmp_path / "audit.jsonl", key=key)
    assert view_of(log, key=key).integrity.status == "verified"
    assert view_of(log).integrity.status == "broken"


# -- determinism and golden files --------------------------------------------------------

def _scrub(text: str, tmp_path: Path) -> str:
    text = text.replace(str(tmp_path), "TMP")
    text = re.sub(r"audit-analyzer \d+\.\d+\.\d+\S*", "audit-analyzer VERSION", text)
    return text.replace(FIXED, "GENERATED")


@pytest.mark.parametrize(("name", "render"), [("report.txt", render_text),
                                              ("report.html", render_html)])
def test_output_matches_the_golden_file(tmp_path, name, render, request):
    log = write_log(tmp_path / "audit.jsonl")
    view = view_of(log, scores=scores_for())
    output = _scrub(render(view), tmp_path)
    assert render(view_of(log, scores=scores_for())) == render(view), "not deterministic"
    golden = GOLDEN / name
    if request.config.getoption("--update-goldens"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(output, encoding="utf-8")
        pytest.skip(f"golden file {golden} written")
    # a missing golden file is a failure, not a pass: a clone that lost it checks nothing
    assert golden.exists(), f"{golden} is missing; write it with --update-goldens"
    assert output == golden.read_text(encoding="utf-8"), (
        f"{name} differs from {golden}; if the change is intended, run the test with "
        "--update-goldens and review the diff")


# -- languages ---------------------------------------------------------------------------

def test_german_and_spanish_reports(tmp_path):
    log = write_log(tmp_path / "audit.jsonl")
    de = view_of(log, scores=scores_for(), lang="de")
    es = view_of(log, scores=scores_for(), lang="es")
    assert de.title == "Prüfbericht" and de.alerts_title == "Alarme"
    assert es.title == "Informe de auditoría"
    assert de.alerts[0].reasons[0] == \
        "8 fehlgeschlagene Ereignisse (keine Vorgeschichte für 203.0.113.9)"
    assert es.alerts[0].reasons[1] == "203.0.113.9 nunca visto antes"
    html = render_html(de)
    assert '<html lang="de">' in html and "Integrität" in html
    assert {f.label: f.value for f in de.facts}["Ereignisse"] == "69"


def test_unknown_reason_and_missing_translation_fall_back_to_english():
    de = get_locale("de")
    assert de.reason("something the detector said") == "something the detector said"
    assert de.gettext("a message no catalog has") == "a message no catalog has"
    with pytest.raises(ConfigError, match="available: en, de, es"):
        get_locale("xx")


def _locale_file(lang: str, suffix: str) -> Path:
    return (Path(__file__).parents[1] / "analyzer" / "locale" / lang / "LC_MESSAGES" /
            f"audit_analyzer.{suffix}")


def _mo_catalog(lang: str) -> dict:
    with _locale_file(lang, "mo").open("rb") as handle:
        return gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]


def _po_catalog(lang: str) -> tuple[dict, set[str]]:
    """(msgid or (msgid, n) -> msgstr, msgid_plurals) of a .po file (one-line strings)."""
    entries: dict = {}
    plurals: set[str] = set()
    msgid = None
    for line in _locale_file(lang, "po").read_text(encoding="utf-8").splitlines():
        keyword, _, rest = line.partition(" ")
        if not rest.startswith('"'):
            continue
        value = ast.literal_eval(rest)
        if keyword == "msgid":
            msgid = value
        elif keyword == "msgid_plural":
            plurals.add(value)
        elif keyword == "msgstr" and msgid:
            entries[msgid] = value
        elif keyword.startswith("msgstr[") and msgid:
            entries[(msgid, int(keyword[7:-1]))] = value
    return entries, plurals


def _source_messages() -> set[str]:
    """Every message id the report code and template mark for translation."""
    import jinja2

    root = Path(__file__).parents[1] / "analyzer"
    found: set[str] = set()
    for path in [*(root / "report").glob("*.py"), root / "cli" / "reporting.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                    node.func, "attr", "")) in ("_", "N_", "gettext", "ngettext"):
                args = [a.value for a in node.args
                        if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                found.update(args[:2])
    env = jinja2.Environment(extensions=["jinja2.ext.i18n"])
    source = (root / "templates" / "report.html.j2").read_text(encoding="utf-8")
    for _, _, message in env.extract_translations(source):
        found.update(m for m in ([message] if isinstance(message, str) else message) if m)
    return found


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_every_message_and_reason_template_is_translated(lang):
    entries, plurals = _po_catalog(lang)
    wanted = _source_messages() | set(reason_templates())
    missing = sorted(m for m in wanted if m not in plurals and not entries.get(m)
                     and not entries.get((m, 0)))
    assert not missing, f"{lang}: {len(missing)} untranslated: {missing[:10]}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_compiled_catalogs_match_their_sources(lang):
    entries, _ = _po_catalog(lang)
    compiled = {k: v for k, v in _mo_catalog(lang).items() if k != ""}
    assert compiled == {k: v for k, v in entries.items() if v}, (
        f"{_locale_file(lang, 'mo')} is stale: run msgfmt -o audit_analyzer.mo "
        "audit_analyzer.po in its folder")


def test_reasons_split_on_the_separator_no_template_contains():
    from analyzer.features import FEATURES

    assert not [f.reason for f in FEATURES if "; " in f.reason]
    assert split_reasons("a; first time doing model.download, role.grant; b") == (
        "a", "first time doing model.download, role.grant", "b")


# -- command line ------------------------------------------------------------------------

def test_cli_text_on_stdout_and_html_file(tmp_path, capsys):
    log = write_log(tmp_path / "audit.jsonl")
    scores = tmp_path / "scores.csv"
    scores_for().to_csv(scores, index=False)
    assert main(["report", str(log), "--scores", str(scores), "--text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Audit report:") and "203.0.113.9" in out
    html = tmp_path / "r.html"
    assert main(["report", str(log), "--scores", str(scores), "--html", str(html),
                 "--lang", "es"]) == 0
    assert "report written to" in capsys.readouterr().out
    assert '<html lang="es">' in html.read_text()
    assert main(["report", str(log), "--scores", str(scores), "--text", "--fail-on-alert"]) == 1


def test_cli_exit_codes_for_findings_and_bad_input(tmp_path, capsys):
    log = write_log(tmp_path / "audit.jsonl")
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:3] + lines[4:]))  # a record deleted
    assert main(["report", str(log), "--html", str(tmp_path / "r.html")]) == 1
    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["report", str(log), "--scores", str(tmp_path / "nope.csv")]) == 2
    assert main(["report", str(log), "--top", "0"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["report", str(log), "--lang", "xx"])
    assert exc.value.code == 2


def test_a_stale_model_is_flagged_in_the_report(tmp_path):
    from analyzer.model import AuditModel
    from analyzer.report import build_view, load_report_data, render_text
    from analyzer.synth import SynthConfig, generate, write_audit_log

    org = generate(SynthConfig(users=10, days=8, attack_days=2, seed=5))
    model = AuditModel(alerts_per_day=5).fit(org.train_events)
    later = org.test_events.copy()
    later["timestamp"] = later["timestamp"] + pd.Timedelta(days=90)  # months after training
    log = tmp_path / "later.jsonl"
    write_audit_log(later, log)
    text = render_text(build_view(load_report_data(log, model=model)))
    assert "the model looks stale" in text


def test_report_on_a_database_verifies_its_rows(tmp_path, capsys):
    import sqlite3

    from analyzer.sinks.shipper import Shipper
    from analyzer.sinks.sqlite import SqliteSink

    log = write_log(tmp_path / "audit.jsonl")
    db = tmp_path / "audit.db"
    sink = SqliteSink(db)
    Shipper(log, sink).run(follow=False)
    sink.close()
    assert main(["report", "--db", f"sqlite:///{db}", "--text"]) == 0
    assert "verified" in capsys.readouterr().out.lower()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE audit_events SET record = replace(record, 'alice', 'mallory') "
                    "WHERE sequence = 1")
    assert main(["report", "--db", f"sqlite:///{db}", "--text"]) == 1
    assert "broken" in capsys.readouterr().out.lower()


def test_report_without_a_model_scores_the_log_against_itself_and_says_so(tmp_path, capsys):
    # as 'score' does without --model, instead of "no model or scores were given"
    log = write_log(tmp_path / "audit.jsonl")
    assert main(["report", str(log), "--text"]) == 0
    text = capsys.readouterr().out
    assert "No model was given: each window was scored against the log's own earlier" in \
        " ".join(text.split())
    assert "no model or scores were given" not in text
    assert "203.0.113.9" in text.split("Alerts", 1)[1]  # the failure burst is an alert
    # a one-event log cannot teach what is usual: said, not a crash
    tiny = tmp_path / "tiny.jsonl"
    with AuditLogger(tiny) as audit:
        audit.log("login", user="alice", outcome="success", timestamp=T0)
    assert main(["report", str(tiny), "--text"]) == 0
    assert "too little activity" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("lang", ["de", "es"])
@pytest.mark.parametrize(("suffix", "render"), [("txt", render_text), ("html", render_html)])
def test_translated_output_matches_its_golden_file(tmp_path, lang, suffix, render, request):
    """Every section in another language, as the report said it before its view was split."""
    log = write_log(tmp_path / "audit.jsonl")
    output = _scrub(render(view_of(log, scores=scores_for(), lang=lang)), tmp_path)
    golden = GOLDEN / f"report.{lang}.{suffix}"
    if request.config.getoption("--update-goldens"):
        golden.write_text(output, encoding="utf-8")
        pytest.skip(f"golden file {golden} written")
    assert golden.exists(), f"{golden} is missing; write it with --update-goldens"
    assert output == golden.read_text(encoding="utf-8"), (
        f"{golden.name} differs; if the change is intended, run the test with "
        "--update-goldens and review the diff")
