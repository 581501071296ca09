"""The ``report`` command: an HTML dashboard and/or a text report of an audit log."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analyzer.cli._common import (
    Progress,
    add_command,
    add_key_option,
    add_model_options,
    add_reader_options,
    check_writable,
    load_model_from_args,
    read_key_file,
    reader_options,
    report_read,
    say,
)
from analyzer.files import USER_OUTPUT, atomic_write


def register(sub: argparse._SubParsersAction) -> None:
    from analyzer.report.i18n import LANGUAGES

    p = add_command(
        sub, "report",
        help="write a self-contained HTML report and/or a text report of an audit log: "
             "integrity, alerts with evidence, activity, top entities, compliance",
        example="audit-analyzer report audit.jsonl --model models/acme.joblib "
                "--signing-key-file model.key --html report.html\n"
                "audit-analyzer report audit.jsonl --scores scores.csv --text\n"
                "audit-analyzer report audit.jsonl --html report.html --lang de\n"
                "audit-analyzer report --db sqlite:///audit.db --text")
    p.add_argument("log", type=Path, nargs="?",
                   help="the audit log (or another supported log file)")
    p.add_argument("--db", metavar="URL",
                   help="report on the trail stored in a database (sqlite:///audit.db, "
                        "postgresql://...) instead of a file")
    add_model_options(p, required=False)
    p.add_argument("--scores", type=Path, help="scores file from 'score --scores' (.csv or "
                                               ".parquet) instead of scoring here")
    p.add_argument("--html", type=Path, metavar="PATH", help="write the HTML report here")
    p.add_argument("--text", nargs="?", const="-", metavar="PATH",
                   help="write the text report here (no PATH: standard output; the default "
                        "when --html is not given)")
    p.add_argument("--lang", default="en", choices=LANGUAGES, help="report language")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="rows in each top table (default 10)")
    p.add_argument("--fail-on-alert", action="store_true", help="exit 1 when there are alerts")
    p.add_argument("--since", metavar="TIME",
                   help="report on records from this time on: ISO 8601 or a span back from "
                        "now (30m, 12h, 7d, 2w)")
    p.add_argument("--until", metavar="TIME", help="... and before this time (same forms)")
    add_key_option(p)
    add_reader_options(p, decrypt=True)
    from analyzer.cli.analysis import _chunk_size
    from analyzer.pipeline import DEFAULT_CHUNK_EVENTS

    p.add_argument("--chunk-events", type=_chunk_size, default=DEFAULT_CHUNK_EVENTS,
                   metavar="N",
                   help="count the log's events in chunks of about N as they are read, so "
                        "that memory holds one chunk and the counts, not the whole trail; the "
                        f"report is that of a whole read (default {DEFAULT_CHUNK_EVENTS:,}; "
                        "0: read the log whole; --model scores the chunks as they are read; a "
                        "trail over one chunk is read again to score it against itself, and "
                        "for the alerts' evidence unless --scores gives them)")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from analyzer.errors import ConfigError
    from analyzer.query import parse_time
    from analyzer.report import build_view, load_report_data, read_scores, render_html, render_text

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    if (args.log is None) == (args.db is None):
        raise ConfigError("report needs an audit log file, or --db URL (not both)")
    text_target = args.text if args.text is not None else (None if args.html else "-")
    for target in (args.html, None if text_target in (None, "-") else Path(text_target)):
        if target is not None:
            check_writable(target, "report")
    progress = Progress()
    model = scores = None
    if args.scores is not None:
        scores = read_scores(args.scores)
    elif args.model is not None:
        progress("loading the model...")
        model = load_model_from_args(args)
    progress("reading and verifying the log...")
    data = load_report_data(args.log, scores=scores, model=model,
                            model_path=args.model if model is None else None,
                            key=read_key_file(args.key_file), format=args.format,
                            read_options=reader_options(args, decrypt=True), db=args.db,
                            since=parse_time(args.since) if args.since else None,
                            until=parse_time(args.until) if args.until else None,
                            chunk_events=args.chunk_events or None)
    progress.done()
    args.inputs = [str(args.log)] if args.log is not None else []
    output = args.html if args.html is not None else (
        Path(text_target) if text_target not in (None, "-") else None)
    report_read("report", data.reading, args, output=output)
    progress("building the report...")
    view = build_view(data, top=args.top, lang=args.lang)
    progress.done()
    if args.html is not None:
        _write(args.html, render_html(view))
    if text_target == "-":
        sys.stdout.write(render_text(view))
    elif text_target is not None:
        _write(Path(text_target), render_text(view))
    if text_target != "-":
        written = [str(p) for p in (args.html, text_target) if p is not None]
        say(f"{len(view.alerts)} alert(s); integrity: {view.integrity.headline.lower()}; "
            f"report written to {' and '.join(written)}")
    if data.integrity.status == "broken":
        return 1
    return 1 if args.fail_on_alert and view.alerts else 0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"), mode=USER_OUTPUT, fsync=False)
