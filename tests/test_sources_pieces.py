"""sshd/syslog, web access logs, Windows and Kubernetes JSON lines read in pieces (#17).

``read_chunks(path, rows=N)`` hands a large single file out in pieces; joined, the pieces are
what ``read`` gives for the whole file: the frame row for row, the rejected lines with their
numbers in the file, the records counted, the skips by why, the notes. Each reader is cut at
every size from one line to more than the file on hand-written files that put a boundary
where state crosses it (a year roll-over, a PAM echo of a verdict logged in the next piece,
an exec session still open, a pretty-printed object cut by a block), and at a few sizes on
the real logs of ../shared/data.
"""

from __future__ import annotations

import os
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import orjson
import pandas as pd
import pyarrow as pa
import pytest

from analyzer.sources import k8s, sshd, weblog, windows
from analyzer.sources._base import ReadResult, merge_skipped
from analyzer.sources.generic import json_records, json_stream
from tests.conftest import shared_data
from tests.test_cli_chunks import run_printed

DATA = Path(__file__).parent / "data"


def pieces_match(module: ModuleType, path: Path, rows: int, **options) -> list[ReadResult]:
    """Read ``path`` whole and in pieces of ``rows``; the pieces joined are the whole read.
    Returns the pieces."""
    whole = module.read(path, **options)
    pieces = list(module.read_chunks(path, rows=rows, **options))
    frame = pd.concat([p.frame for p in pieces], ignore_index=True)
    assert list(frame.columns) == list(whole.frame.columns)
    # categories differ piece to piece (each its own dictionary): compared as values
    assert frame.astype(str).equals(whole.frame.astype(str)), rows
    pd.testing.assert_series_equal(frame["timestamp"], whole.frame["timestamp"])
    assert tuple(r for p in pieces for r in p.rejected) == whole.rejected, rows
    assert sum(p.records for p in pieces) == whole.records, rows
    assert merge_skipped(*(p.skipped for p in pieces)) == whole.skipped, rows
    assert tuple(n for p in pieces for n in p.notes) == whole.notes, rows
    return pieces


def _first_lines(pieces: list[ReadResult], column: str = "message") -> list[str]:
    return [str(p.frame[column].iloc[0]) for p in pieces if len(p.frame)]


# -- sshd / syslog ---------------------------------------------------------------------------

AUTH_LOG = """\
Dec 30 23:58:01 web1 sshd[100]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=root
Dec 30 23:58:03 web1 sshd[100]: Failed password for root from 203.0.113.9 port 4022 ssh2
Dec 31 23:59:50 web1 sshd[101]: Accepted password for alice from 198.51.100.7 port 5000 ssh2
Dec 31 23:59:51 web1 sshd[101]: pam_unix(sshd:session): session opened for user alice by (uid=0)
Jan  1 00:00:02 web1 sshd[102]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=bob

this line has no syslog header
Jan  1 00:00:04 web1 sshd[102]: message repeated 3 times: [ Failed password for bob from 203.0.113.9 port 4023 ssh2]
Jan  1 00:00:05 web1 CRON[7]: pam_unix(cron:session): session opened for user root by (uid=0)
2025-01-01T00:00:06.5+01:00 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/cat /etc/shadow
2025-13-01T00:00:07 web1 sshd[103]: Accepted password for carol from 198.51.100.8 port 5001 ssh2
Jan  1 00:00:08 web2 sshd(pam_unix)[104]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=192.0.2.4  user=dave
Jan  1 00:00:09 web1 sshd[101]: pam_unix(sshd:session): session closed for user alice
Jan  1 00:00:10 web1 sshd[105]: Invalid user eve from 192.0.2.5 port 6000
Jan  1 00:00:11 web1 sshd[106]: PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.5  user=eve
Jan  1 00:00:12 web1 sshd[106]: Failed password for invalid user eve from 192.0.2.5 port 6000 ssh2
"""


@pytest.fixture
def auth_log(tmp_path: Path) -> Path:
    """A year roll-over between lines 4 and 5; PAM's failure for pid 102 on line 5 echoing
    the verdict sshd logs on line 8 (two pieces apart at small sizes) and pid 106's on line
    15 echoing line 16; a session of pid 101 opened on line 4 and closed on line 13; a
    PAM-only witness (web2, old style); a blank line, a line without a header and an RFC
    3339 time that cannot be read, set aside."""
    path = tmp_path / "auth.log"
    path.write_text(AUTH_LOG)
    stamp = datetime(2025, 1, 2, 12, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))  # the inferred year: 2024 for December, 2025 for January
    return path


@pytest.mark.parametrize("year", [None, 2030])
def test_an_auth_log_in_pieces_of_every_size_is_the_whole_read(auth_log, year):
    whole = sshd.read(auth_log, year=year)
    assert [r.line for r in whole.rejected] == [7, 11]
    assert whole.skipped["PAM echo of a logged verdict"] == {"sshd": 2}
    assert "web2" in set(whole.frame["host"])  # the PAM-only witness is an event
    if year is None:
        assert whole.notes and "years 2024-2025 assumed" in whole.notes[0]
    n_lines = len(AUTH_LOG.splitlines())
    for rows in range(1, n_lines + 2):
        pieces = pieces_match(sshd, auth_log, rows, year=year)
        assert len(pieces) == max(1, -(-n_lines // rows))
    # cut exactly at the roll-over: December ends one piece, January starts the next
    pieces = pieces_match(sshd, auth_log, 4, year=year)
    first_year = 2024 if year is None else year
    assert pieces[0].frame["timestamp"].dt.year.tolist()[-1] == first_year
    assert pieces[1].frame["timestamp"].dt.year.tolist()[0] == first_year + 1
    # cut inside pid 101's session and between PAM's line 5 and the verdict it echoes
    pieces = pieces_match(sshd, auth_log, 5, year=year)
    assert "session opened" in pieces[0].frame["message"].iloc[-1]
    # line 5 is an echo of the verdict on line 8, in the next piece
    assert pieces[0].skipped["PAM echo of a logged verdict"] == {"sshd": 2}
    assert not pieces[0].frame["message"].str.contains("sshd\\[102\\]").any()


def test_an_auth_log_in_pieces_keeps_the_accounting_and_the_gzip(auth_log, tmp_path):
    import gzip

    packed = tmp_path / "auth.log.1.gz"
    packed.write_bytes(gzip.compress(auth_log.read_bytes()))
    os.utime(packed, (auth_log.stat().st_mtime,) * 2)
    for rows in (1, 3, 100):
        pieces_match(sshd, packed, rows)


@pytest.mark.parametrize("name", ["OpenSSH_2k.log", "Linux_2k.log"])
@pytest.mark.parametrize("rows", [150, 999, 5000])
def test_loghub_logs_in_pieces_are_the_whole_read(name, rows):
    path = shared_data("loghub", name)
    pieces = pieces_match(sshd, path, rows)
    assert len(pieces) == -(-2000 // rows)
    pieces_match(sshd, path, rows, year=2015, tz="Europe/Paris")


# -- web access logs -------------------------------------------------------------------------

def test_a_web_log_in_pieces_of_every_size_is_the_whole_read():
    """The hand-written scanner log: wrapped lines, CRLF, a line of another shape, clients
    named by host (the note counts them over the whole file, given once)."""
    path = DATA / "apache_scanner_quoted_crlf.log"
    whole = weblog.read(path)
    assert whole.notes and [r.line for r in whole.rejected] == [7]
    for rows in range(1, 15):
        pieces = pieces_match(weblog, path, rows)
        assert [bool(p.notes) for p in pieces] == [False] * (len(pieces) - 1) + [True]


# -- Windows ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def otrf_windows(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("otrf")
    files = [shared_data("otrf", "windows_security_purplesharp_ad_playbook_I.jsonl")]
    for name in ("empire_shell_rubeus_asktgt_ptt.zip", "empire_mimikatz_logonpasswords.zip",
                 "empire_shell_samr_EnumDomainUsers.zip",
                 "empire_shell_dcerpc_smb_service_dll_hijack.zip"):
        with zipfile.ZipFile(shared_data("otrf", name)) as zf:
            (member,) = [m for m in zf.namelist() if not m.endswith("/")]
            files.append(Path(zf.extract(member, folder)))
    return files


@pytest.mark.parametrize("rows", [1, 7, 300, 10**6])
def test_otrf_windows_exports_in_pieces_are_the_whole_read(otrf_windows, rows):
    # a piece costs some milliseconds of pandas: pieces of one on the smaller exports only
    for path in otrf_windows[:3] if rows == 1 else otrf_windows:
        pieces = pieces_match(windows, path, rows)
        assert max(len(p.frame) for p in pieces) <= rows


def _event(i: int) -> dict:
    return {"EventID": 4624 + (i % 2), "Channel": "Security", "Hostname": "DC1.corp.local",
            "@timestamp": f"2020-10-22T08:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
            "TargetUserName": f"user{i % 9}", "IpAddress": f"10.0.{i % 3}.{i % 250}",
            "LogonType": "3", "Message": "An account was logged on.\r\nmore"}


@pytest.fixture
def pretty_export(tmp_path: Path) -> Path:
    """Over 64 KiB (a block of the reader) of Windows records, most on one line, every
    seventh pretty-printed over lines, one of them longer than a block (so that a block
    cuts it), with bad ones among
    them: not JSON, no event id, an unreadable time, an object that never closes, an
    unmapped id and a Sysmon record (counted as skipped)."""
    parts = []
    for i in range(700):
        doc = _event(i)
        if i == 350:  # over a block (64 KiB) on its own: a block boundary cuts it
            doc.update({f"Field{k}": "x" * 20 for k in range(3_000)})
            parts.append(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        elif i % 7 == 3:
            parts.append(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        elif i == 100:
            parts.append("{not json")
        elif i == 200:
            parts.append(orjson.dumps({**doc, "EventID": None}).decode())
        elif i == 300:
            parts.append(orjson.dumps({**doc, "@timestamp": "yesterday"}).decode())
        elif i == 400:
            parts.append('{\n  "EventID": 4624,\n  "Channel": "Security",')  # never closes
        elif i == 500:
            parts.append(orjson.dumps({**doc, "EventID": 4658}).decode())
        elif i == 600:
            parts.append(orjson.dumps({**doc, "Channel": "Microsoft-Windows-Sysmon/"
                                       "Operational", "EventID": 1}).decode())
        else:
            parts.append(orjson.dumps(doc).decode())
    path = tmp_path / "security.json"
    path.write_text("\n".join(parts) + "\n")
    assert path.stat().st_size > 3 * (64 << 10)
    return path


def test_pretty_printed_records_cut_by_blocks_stream_as_a_whole_read(pretty_export):
    rejected_whole: list = []
    whole = list(json_records(str(pretty_export), pretty_export.read_bytes(),
                              rejected_whole))
    rejected: list = []
    streamed = list(json_stream(pretty_export, rejected, rows=1))
    assert streamed == whole and rejected == rejected_whole
    assert len(rejected) >= 3  # not JSON, and the object that never closes (two lines)
    for rows in (3, 50, 10**6):
        pieces = pieces_match(windows, pretty_export, rows)
        assert max(len(p.frame) for p in pieces) <= rows
    assert {r.reason for r in windows.read(pretty_export).rejected} >= {
        "no EventID", "unreadable time 'yesterday'"}


def test_a_json_array_export_is_read_whole_and_cut(tmp_path):
    path = tmp_path / "array.json"
    path.write_bytes(b"  \n" + orjson.dumps([_event(i) for i in range(30)] + [5]))
    whole = windows.read(path)
    assert len(whole.frame) == 30 and [r.line for r in whole.rejected] == [31]
    for rows in (1, 4, 100):
        pieces_match(windows, path, rows)


# -- Kubernetes ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def falco_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Falco's 47 captures in one file, in name order: one Event a line, except the
    pretty-printed one (kept over its lines) and the record of another kind."""
    folder = shared_data("falco-k8s-audit")
    path = tmp_path_factory.mktemp("falco") / "audit.log"
    with path.open("wb") as out:
        for capture in sorted(folder.glob("*.json")):
            out.write(capture.read_bytes().rstrip() + b"\n")
    return path


@pytest.mark.parametrize("rows", [1, 5, 100])
def test_falco_captures_in_pieces_are_the_whole_read(falco_log, rows):
    whole = k8s.read(falco_log)
    assert len(whole.frame) == 51 and not whole.rejected
    pieces_match(k8s, falco_log, rows)


def _k8s(audit_id: str, stage: str, second: int, *, subresource: str = "exec",
         verb: str | None = "create") -> dict:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": audit_id, "stage": stage, "verb": verb,
            "requestURI": f"/api/v1/namespaces/a/pods/p/{subresource}?command=sh",
            "user": {"username": "alice"}, "sourceIPs": ["10.0.0.1"],
            "objectRef": {"resource": "pods", "namespace": "a", "name": "p",
                          "subresource": subresource},
            "responseStatus": {"code": 101},
            "stageTimestamp": f"2024-05-01T10:00:{second:02d}.000000Z"}


def test_a_streaming_request_keeps_its_place_across_pieces(tmp_path):
    """An exec logged at ResponseStarted on line 2 and ResponseComplete on line 6 is one row,
    at line 2's place, whatever piece each line falls in; so is a port-forward logged at
    three stages (lines 12, 14, 17), whose last record's time cannot be read: it is set
    aside as line 17, after line 16 (not an object), as a whole read orders them. An attach
    never closed (line 10) is its own row. Bad lines are set aside with their numbers."""
    docs = [_k8s("a0", "ResponseComplete", 0, subresource="log"),
            _k8s("x1", "ResponseStarted", 1),
            _k8s("a2", "ResponseComplete", 2, subresource="log"),
            _k8s("a3", "ResponseComplete", 3, subresource="log", verb=None),
            _k8s("a4", "RequestReceived", 4, subresource="log"),
            _k8s("x1", "ResponseComplete", 5),
            _k8s("a6", "ResponseComplete", 6, subresource="log"),
            {"kind": "EventList", "items": [_k8s("a7", "ResponseComplete", 7,
                                                 subresource="log"), 3]},
            _k8s("x8", "ResponseStarted", 8, subresource="attach"),
            _k8s("a9", "ResponseComplete", 9, subresource="log"),
            _k8s("y1", "RequestReceived", 10, subresource="portforward"),
            _k8s("a11", "ResponseComplete", 11, subresource="log"),
            _k8s("y1", "ResponseStarted", 12, subresource="portforward"),
            _k8s("a13", "ResponseComplete", 13, subresource="log"),
            {**_k8s("y1", "ResponseComplete", 14, subresource="portforward"),
             "stageTimestamp": "soon"},
            _k8s("a15", "ResponseComplete", 15, subresource="log")]
    lines = [orjson.dumps(d).decode() for d in docs]
    lines.insert(6, "{not json")
    lines.insert(15, "[1, 2]")
    path = tmp_path / "audit.log"
    path.write_text("\n".join(lines) + "\n")
    whole = k8s.read(path)
    assert [r.line for r in whole.rejected] == [4, 7, 16, 17]
    assert whole.frame["timestamp"].dt.second.tolist() == [0, 5, 2, 6, 7, 8, 9, 11, 13, 15]
    assert whole.frame["action"].tolist()[1] == "create:pods/exec"
    assert whole.skipped == {"other stage": {"RequestReceived": 2, "ResponseStarted": 2},
                             "not an audit Event": {"kind 'int'": 1}}
    for rows in range(1, 19):
        pieces = pieces_match(k8s, path, rows)
        assert max(len(p.frame) for p in pieces) <= rows


# -- through the command line ----------------------------------------------------------------

@pytest.fixture(scope="module")
def smb_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OTRF export of some thousand records over several channels."""
    folder = tmp_path_factory.mktemp("smb")
    with zipfile.ZipFile(shared_data("otrf", "empire_shell_dcerpc_smb_service_dll_hijack.zip")
                         ) as zf:
        (member,) = [m for m in zf.namelist() if not m.endswith("/")]
        return Path(zf.extract(member, folder))


@pytest.mark.parametrize("which", ["sshd", "windows", "k8s"])
def test_score_in_small_chunks_writes_the_scores_of_a_whole_read(which, smb_export,
                                                                  falco_log, tmp_path, capsys):
    log = {"sshd": lambda: shared_data("loghub", "OpenSSH_2k.log"),
           "windows": lambda: smb_export, "k8s": lambda: falco_log}[which]()
    runs = {}
    for size in ("0", "7", "300"):
        out = tmp_path / size
        out.mkdir()
        printed = run_printed(["score", str(log), "--no-write-back", "--scores",
                               str(out / "scores.csv"), "--chunk-events", size], capsys, out)
        runs[size] = ((out / "scores.csv").read_bytes(), printed)
    assert runs["0"][0].count(b"\n") > 2  # windows scored, beside the header
    assert runs["7"] == runs["0"]
    assert runs["300"] == runs["0"]


# -- memory ----------------------------------------------------------------------------------

def _auth_lines(n: int) -> Iterator[str]:
    """``n`` lines of a busy sshd host: one connection (a process) every four lines, its
    PAM failure, its verdict, a disconnect; a login and its session now and then; the
    months run on, past a year's end."""
    for i in range(n // 4):
        day = pd.Timestamp("2024-11-01") + pd.Timedelta(seconds=37 * i)
        stamp = f"{day:%b} {day.day:2d} {day:%H:%M:%S}"
        pid, ip = 1000 + i % 30000, f"203.0.{i % 200}.{i % 251}"
        user = f"user{i % 50}"
        yield (f"{stamp} host{i % 3} sshd[{pid}]: pam_unix(sshd:auth): authentication "
               f"failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={user}")
        if i % 10:
            yield f"{stamp} host{i % 3} sshd[{pid}]: Failed password for {user} from {ip} " \
                  f"port {4000 + i % 999} ssh2"
        else:
            yield f"{stamp} host{i % 3} sshd[{pid}]: Accepted password for {user} from {ip} " \
                  f"port {4000 + i % 999} ssh2"
        yield f"{stamp} host{i % 3} sshd[{pid}]: pam_unix(sshd:session): session opened " \
              f"for user {user} by (uid=0)"
        yield f"{stamp} host{i % 3} sshd[{pid}]: Received disconnect from {ip} port 4000:11: " \
              f"bye [preauth]"


def _peak(run: Callable[[], None]) -> int:
    """The peak bytes held while ``run`` runs: Python's and numpy's (tracemalloc) and
    Arrow's (its memory pool, which tracemalloc does not see), added."""
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    before = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] + pool.max_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(before)


def test_an_auth_log_read_in_pieces_holds_a_piece_not_the_file(tmp_path):
    small, large = tmp_path / "auth.log", tmp_path / "auth4.log"
    small.write_text("\n".join(_auth_lines(20_000)) + "\n")
    large.write_text("\n".join(_auth_lines(80_000)) + "\n")

    def in_pieces(path: Path) -> None:
        events = 0
        for piece in sshd.read_chunks(path, rows=2_000, year=2024):
            events += len(piece.frame)
        assert events > 0

    def whole(path: Path) -> None:
        assert len(sshd.read(path, year=2024).frame) > 0

    chunked = [_peak(lambda p=p: in_pieces(p)) for p in (small, large)]
    held = [_peak(lambda p=p: whole(p)) for p in (small, large)]
    # four times the lines cost about the same in pieces; read whole, the peak grows with
    # the file (so the measure sees what it should)
    assert chunked[1] < 1.25 * chunked[0], chunked
    assert held[1] - held[0] > 5 * max(chunked[1] - chunked[0], 1 << 20), (held, chunked)
    assert held[1] > 5 * chunked[1], (held, chunked)


def test_reports_of_logs_read_in_pieces_are_the_whole_reports(falco_log, auth_log):
    """``report --chunk-events`` hands these formats' pieces over as it reads (the sshd
    and Windows logs of test_report_chunks go the same way)."""
    from tests.test_report_chunks import assert_same_in_chunks

    assert_same_in_chunks(DATA / "apache_scanner_quoted_crlf.log", (1, 4))
    assert_same_in_chunks(falco_log, (5,))
    assert_same_in_chunks(auth_log, (3,))
