"""sshd, PAM, su and sudo lines in syslog (``/var/log/auth.log``, ``/var/log/secure``).

Every line is split into its syslog header (time, host, program, pid) and message by one
compiled regular expression run over the whole file at once (pyarrow's RE2 kernels), then each
message is matched against a short table of rules (:data:`RULES`), again column-wise. No Python
code runs per line except for lines set aside as malformed.

Mapping (the full table is in ``docs/formats.md``):

- ``Accepted <method> for U from IP`` -> ``login`` success; ``Failed <method> for [invalid
  user] U from IP`` -> ``login`` failure with the attempted user name; ``Invalid user U from
  IP`` -> ``invalid_user`` failure (as Filebeat's system module does).
- ``message repeated N times: [ ... ]`` becomes N events of the repeated message, at the
  time of the repeat line.
- PAM ``authentication failure`` for sshd -> ``login`` failure, ``session opened/closed`` ->
  ``session.start`` / ``session.end``; for su -> ``su`` failure / success. A PAM line is a
  second account of the same attempt when the same process (host, pid) also logged the
  program's own verdict with the same action; it is then not counted again. This is what
  lets one reader serve both modern OpenSSH logs (own verdict lines) and old ones where PAM
  is the only witness (``sshd(pam_unix)[pid]: authentication failure ...``).
- disconnects and closed connections -> ``disconnect`` (outcome unknown).
- ``sudo: U : ... USER=T ; COMMAND=C`` -> ``sudo`` by U on the run-as account T (failure
  when sudo names an error such as ``3 incorrect password attempts``), ``command`` C.
- account management by shadow-utils (``useradd``, ``userdel``, ``usermod``, ``groupadd``,
  ``groupdel``, ``gpasswd``, ``chpasswd``, ``passwd``) -> ``user.create``, ``user.delete``,
  ``user.change``, ``group.create``, ``group.delete``, ``group.member_add`` /
  ``group.member_remove`` (``group`` the group), ``password.change``; resource the account
  touched; the user the actor the line names, else ``root`` (the tools run as root).

``message`` keeps the whole syslog line, ``session`` is ``host:pid`` (one sshd process serves
one connection), ``host`` the syslog host.

Syslog lines that parse but are not authentication or account events (kernel, cron,
``check pass``, the reverse-DNS warning, ...) are counted in ``ReadResult.skipped`` by kind
and program, not turned into events. Lines without a syslog header are rejected with their
line number.

Loghub's ``OpenSSH_2k.log`` (logpai/loghub, cite: Zhu et al., Loghub, ISSRE 2023) is the
real sample this reader is tested on.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import ConfigError
from analyzer.sources._base import (
    MAX_LINE_BYTES,
    TIME_MAX,
    TIME_MIN,
    ReadResult,
    Rejected,
    arrow_to_frame,
    within_time_range,
)
from analyzer.sources.generic import ip_or_empty, line_pieces

__all__ = ["ACCOUNT", "FORMAT", "OPTIONS", "PROGRAMS", "RULES", "Rule", "read",
           "read_chunks", "sniff"]

FORMAT = "sshd"
#: The :class:`~analyzer.sources.options.ReaderOptions` :func:`read` takes.
OPTIONS: frozenset[str] = frozenset({"year", "tz"})

# Syslog header: BSD time ("Dec 10 06:55:46") or RFC 3339 time (rsyslog's high-precision
# template), host, then an optional tag "prog(sub)[pid]: ". The tag is optional so that
# lines such as "syslogd 1.4.1: restart." still parse as syslog rather than being rejected.
_HEADER = (
    r"^(?:(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)"
    r"|(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?))"
    r" (?P<host>\S+) (?:(?P<prog>[^\s\[\]():]+)(?:\((?P<sub>[^)]*)\))?(?:\[(?P<pid>\d+)\])?: ?)?"
    r"(?P<msg>.*)$"
)
_HEADER_PY = re.compile(_HEADER)
_MONTHS = pa.array(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                    "Nov", "Dec"])
# Day of year at the start of each month in a leap year, for comparing (month, day) pairs.
_MONTH_START = np.array([0, 0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335])
_REPEATED = r"^message repeated (?P<n>\d+) times: \[ ?(?P<inner>.*?)\]?\s*$"
_PAM_PREFIX = r"^(?P<mod>pam_\w+)\((?P<svc>[^:)]+):(?P<stage>\w+)\): (?P<rest>.*)$"


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One kind of message: where it comes from, its pattern and the event it becomes.

    Named groups of ``pattern`` fill the event: ``user`` (falling back to ``user2``),
    ``ip``, ``res`` (the resource; the host for sshd when absent), ``fail`` (a non-empty
    match turns the outcome to failure), ``n`` (the event stands for n events).
    """

    service: str | tuple[str, ...]
    pam: bool
    pattern: str
    action: str
    outcome: str
    category: str
    #: the user when the line names none: ``"root"`` for the shadow-utils tools, which only
    #: root may run (the person is on the ``sudo`` line before), or :data:`ACCOUNT` for
    #: ``passwd``, where the account touched is taken to be the one changing its password
    actor: str = ""

    @property
    def services(self) -> tuple[str, ...]:
        return (self.service,) if isinstance(self.service, str) else self.service


#: :attr:`Rule.actor` for "the account touched is also the one acting".
ACCOUNT = "<account>"

_FROM = r"(?P<ip>\S+)(?: port \d+)?"
_USER_PREFIX = r"(?:(?:invalid |authenticating )?user (?P<user>\S+) )?"
_PAM_TAIL = (r"logname=(?P<user2>\S*) uid=\d+ euid=\d+ tty=\S* ruser=(?P<ruser>\S*) "
             r"rhost=(?P<ip>\S*)")

#: The message rules, tried in order; the first that matches a line wins.
RULES: tuple[Rule, ...] = (
    Rule("sshd", False, r"^Accepted (?P<method>\S+) for (?P<user>.*?) from " + _FROM
         + r"(?: ssh2)?(?::.*)?$", "login", "success", "authentication"),
    Rule("sshd", False, r"^Failed (?P<method>\S+) for (?:invalid user )?(?P<user>.*?) from "
         + _FROM + r"(?: ssh2)?(?::.*)?$", "login", "failure", "authentication"),
    Rule("sshd", False, r"^Invalid user (?P<user>.*?) from " + _FROM + r"\s*$",
         "invalid_user", "failure", "authentication"),
    Rule("sshd", False, r"^(?:error: )?Received disconnect from " + _FROM + r":\s?\d+:",
         "disconnect", "unknown", "session"),
    Rule("sshd", False, r"^Disconnected from " + _USER_PREFIX + _FROM
         + r"(?: \[preauth\])?\s*$", "disconnect", "unknown", "session"),
    Rule("sshd", False, r"^Connection (?:closed|reset) by " + _USER_PREFIX + _FROM
         + r"(?: \[preauth\])?\s*$", "disconnect", "unknown", "session"),
    Rule("sshd", False, r"^Disconnecting(?: (?:invalid |authenticating )?user (?P<user>\S+) "
         + _FROM + r")?: Too many authentication failures(?: for (?:invalid user )?"
         r"(?P<user2>\S+))?", "disconnect", "failure", "session"),
    Rule("sshd", False, r"^Did not receive identification string from " + _FROM + r"\s*$",
         "disconnect", "unknown", "session"),
    # sshd's own summary of further PAM failures: PAM's account, counted n times.
    Rule("sshd", True, r"^PAM (?P<n>\d+) more authentication failures?; " + _PAM_TAIL
         + r"(?:\s+user=(?P<user>\S+))?", "login", "failure", "authentication"),
    Rule("sshd", True, r"^authentication failure; " + _PAM_TAIL + r"(?:\s+user=(?P<user>\S+))?",
         "login", "failure", "authentication"),
    Rule("sshd", True, r"^session opened for user (?P<user>[^\s(]+)", "session.start",
         "success", "session"),
    Rule("sshd", True, r"^session closed for user (?P<user>[^\s(]+)", "session.end",
         "success", "session"),
    Rule("su", False, r"^\(to (?P<res>\S+)\) (?P<user>\S+) on \S+", "su", "success", "iam"),
    Rule("su", False, r"^FAILED SU \(to (?P<res>\S+)\) (?P<user>\S+) on \S+", "su", "failure",
         "iam"),
    Rule("su", False, r"^Successful su for (?P<res>\S+) by (?P<user>\S+)", "su", "success",
         "iam"),
    Rule("su", False, r"^FAILED su for (?P<res>\S+) by (?P<user>\S+)", "su", "failure", "iam"),
    # su's PAM failure: the person is ruser (or logname), the account wanted is user=.
    Rule("su", True, r"^authentication failure; " + _PAM_TAIL.replace("(?P<ruser>", "(?P<user>")
         + r"(?:\s+user=(?P<res>\S+))?", "su", "failure", "iam"),
    # "by (uid=0)": no name, the uid says who (0 is root by definition)
    Rule("su", True, r"^session opened for user (?P<res>[^\s(]+)(?:\(uid=\d+\))? by "
         r"(?P<user>[^\s(]*)(?:\(uid=(?P<uid>\d+)\))?", "su", "success", "iam"),
    # sudo: the invoking user acts on the run-as account (USER=), the command kept beside
    Rule("sudo", False, r"^\s*(?P<user>\S+) : (?:(?P<fail>[^;=]*?) ; )?TTY=\S* ; PWD=.*? ; "
         r"USER=(?P<res>\S+) ;(?: [A-Z]+=.*? ;)*? COMMAND=(?P<command>.*)$", "sudo",
         "success", "iam"),
    # shadow-utils account management: the tools run as root and do not name the person
    Rule(("useradd", "newusers"), False, r"^new user: name=(?P<res>[^,\s]+)", "user.create",
         "success", "iam", "root"),
    Rule(("useradd", "groupadd", "newusers"), False, r"^new group: name=(?P<res>[^,\s]+)",
         "group.create", "success", "iam", "root"),
    Rule("userdel", False, r"^delete user '(?P<res>[^']+)'", "user.delete", "success", "iam",
         "root"),
    Rule(("userdel", "groupdel"), False, r"^(?:removed group '(?P<res>[^']+)' owned by|"
         r"group '(?P<res2>[^']+)' removed$)", "group.delete", "success", "iam", "root"),
    Rule(("useradd", "usermod"), False, r"^add '(?P<res>[^']+)' to group '(?P<group>[^']+)'",
         "group.member_add", "success", "iam", "root"),
    Rule(("usermod", "userdel"), False, r"^delete '(?P<res>[^']+)' from group "
         r"'(?P<group>[^']+)'", "group.member_remove", "success", "iam", "root"),
    Rule("usermod", False, r"^change user '(?P<res>[^']+)' password", "password.change",
         "success", "iam", "root"),
    Rule("usermod", False, r"^(?:change|lock|unlock) user (?:name )?'(?P<res>[^']+)'",
         "user.change", "success", "iam", "root"),
    Rule("gpasswd", False, r"^user (?P<res>\S+) added by (?P<user>\S+) to group "
         r"(?P<group>\S+)", "group.member_add", "success", "iam"),
    Rule("gpasswd", False, r"^user (?P<res>\S+) removed by (?P<user>\S+) from group "
         r"(?P<group>\S+)", "group.member_remove", "success", "iam"),
    Rule("passwd", False, r"^password for '(?P<res>[^']+)' changed by '(?P<user>[^']+)'",
         "password.change", "success", "iam"),
    Rule("passwd", True, r"^password changed for (?P<res>\S+)", "password.change", "success",
         "iam", ACCOUNT),
    Rule("chpasswd", True, r"^password changed for (?P<res>\S+)", "password.change",
         "success", "iam", "root"),
)


#: The programs whose lines the rules read; the lines of others are counted and skipped.
PROGRAMS: tuple[str, ...] = tuple(sorted({p for rule in RULES for p in rule.services}))


def sniff(head: bytes) -> bool:
    """True if most of the first lines are syslog lines (BSD or RFC 3339 time, host, tag)."""
    lines = [ln for ln in head.decode("utf-8", "replace").splitlines()[:40] if ln.strip()]
    if len(lines) > 1:
        lines = lines[:-1]  # the last line of a 64 KiB head is usually cut short
    if not lines:
        return False
    syslog = sum(1 for ln in lines if _HEADER_PY.match(ln) and not ln.lstrip().startswith("{"))
    return syslog * 2 > len(lines)


def read(path: str | os.PathLike[str], *, year: int | None = None,
         tz: str = "UTC") -> ReadResult:
    """Read a syslog authentication log into the normalized frame.

    Parameters
    ----------
    path
        ``auth.log``, ``secure`` or any syslog file, plain or gzip.
    year
        The year of the first line. Syslog omits the year; by default it is chosen so that
        no line is later than the file's modification time (with a day of slack for time
        zones), and ``notes`` of the result say which year was assumed. A December ->
        January step inside the file moves to the next year either way.
    tz
        IANA time zone the (zone-less) syslog times are in; ``UTC`` by default. Lines with an
        RFC 3339 time carry their own offset and ignore this.

    Returns
    -------
    ReadResult
        One row per authentication or account-management event; lines without a syslog
        header are rejected; lines of other programs, messages no rule maps and PAM echoes
        of a verdict are counted in ``skipped``. ``records`` counts non-blank lines, a
        ``message repeated N times`` line (or ``PAM N more ...``) as the N it stands for.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "auth.log"
    >>> _ = log.write_text("Mar  1 10:00:00 web1 sshd[42]: Failed password for root "
    ...                    "from 203.0.113.9 port 5022 ssh2\\n")
    >>> frame = read(log, year=2024).frame
    >>> frame.loc[0, ["user", "action", "outcome", "source_ip"]].tolist()
    ['root', 'login', 'failure', '203.0.113.9']
    """
    # run to the end (one piece): the file closes there, not when the generator is collected
    (result,) = read_chunks(path, rows=None, year=year, tz=tz)
    return result


def read_chunks(path: str | os.PathLike[str], *, rows: int | None, year: int | None = None,
                tz: str = "UTC") -> Iterator[ReadResult]:
    """:func:`read` in pieces of ``rows`` lines (``None``: one piece, the whole file), in the
    file's order, each with its own accounting; together they hold what a whole read holds.

    What crosses from line to line is carried: the line numbers, the year steps (a
    December -> January step between two pieces moves to the next year) and the verdicts
    PAM lines echo. Two things depend on the whole file, so a file longer than one piece
    is scanned once before it is read (header and rules, column-wise, piece by piece): the
    year of the first line when it is inferred (the latest line decides it), and the
    processes that logged their own verdicts (a PAM line is an echo if its process logs
    the same verdict anywhere in the file). Memory holds a piece and those processes'
    (host, pid, action), 8 bytes each, never the file.
    """
    zone = _zone(tz)
    where = str(Path(path))
    pieces = line_pieces(path, rows=rows, max_line=MAX_LINE_BYTES)
    first = next(pieces)
    second = next(pieces, None) if rows is not None else None
    pieces.close()
    mtime = os.stat(path).st_mtime
    if rows is None or second is None:  # the whole file in one piece: nothing crosses a cut
        yield _read_piece(where, first, 1, _Years(year, zone, mtime), None, note=year is None)
        return
    del first, second
    years, natives = _scan(path, rows, year, zone, mtime)
    number = 1
    for i, lines in enumerate(line_pieces(path, rows=rows, max_line=MAX_LINE_BYTES)):
        yield _read_piece(where, lines, number, years, natives, note=year is None and i == 0)
        number += len(lines)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {tz!r}") from exc


def _header(lines: pa.Array) -> tuple[dict[str, pa.Array], np.ndarray, np.ndarray]:
    """The syslog header fields of the lines that have one; which have one; which are
    blank."""
    header = pc.extract_regex(lines, _HEADER)
    parsed = header.is_valid().to_numpy(zero_copy_only=False)
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0) \
        .to_numpy(zero_copy_only=False)
    fields = {name: pc.fill_null(header.field(name).filter(pa.array(parsed)), "")
              for name in ("mon", "day", "hms", "iso", "host", "prog", "sub", "pid", "msg")}
    fields["line"] = lines.filter(pa.array(parsed))
    return fields, parsed, blank


def _scan(path: str | os.PathLike[str], rows: int, year: int | None, zone: ZoneInfo,
          mtime: float) -> tuple[_Years, _Natives]:
    """What a read in pieces needs of the whole file before its first piece: the years
    (the start year inferred from the latest line, and the span the note names) and the
    processes' own verdicts."""
    seen = _Years(0 if year is None else year, zone, mtime)
    natives = _Natives()
    for lines in line_pieces(path, rows=rows, max_line=MAX_LINE_BYTES):
        fields, _, _ = _header(lines)
        stamps = _timestamps(fields, years=seen, zone=zone)
        events, _, _, _ = _match(fields, usable=~np.isnat(stamps))
        natives.add(events, fields)
    natives.close()
    start = seen.inferred() if year is None else year
    years = _Years(start, zone, mtime)
    if seen.span is not None:  # the years the note names, known before the first piece
        years.span = (start + seen.low, start + seen.high)
    years.fixed = True
    return years, natives


def _read_piece(where: str, lines: pa.Array, number: int, years: _Years,
                natives: _Natives | None, *, note: bool) -> ReadResult:
    """The events of ``lines``, whose first is line ``number`` of the file; ``note``: say
    which years were assumed."""
    fields, parsed, blank = _header(lines)
    rejected = [Rejected(where, int(i) + number, "not a syslog line (no time and host)",
                         lines[int(i)].as_py().encode("utf-8", "replace")[:4096])
                for i in np.flatnonzero(~parsed & ~blank)]
    rows = np.flatnonzero(parsed)
    stamps = _timestamps(fields, years=years, zone=years.zone)
    bad_time = np.isnat(stamps)
    for i in np.flatnonzero(bad_time):
        rejected.append(Rejected(where, int(rows[i]) + number,
                                 f"unreadable time {fields['iso'][int(i)].as_py()!r}",
                                 lines[int(rows[i])].as_py().encode()[:4096]))
    rejected.sort(key=lambda r: r.line)
    events, weight, skipped = _events(fields, usable=~bad_time, natives=natives)
    notes: tuple[str, ...] = ()
    if note and years.span is not None:
        first, last = years.span
        which = f"year {first}" if first == last else f"years {first}-{last}"
        notes = (f"{where}: {which} assumed for syslog times (no year in the lines; none "
                 f"after the file's modification time, "
                 f"{datetime.fromtimestamp(years.mtime, years.zone):%Y-%m-%d}); set it with "
                 f"--year",)
    return ReadResult(_frame(events, fields, stamps), tuple(rejected),
                      records=len(rejected) + int(weight[~bad_time].sum()),
                      skipped=skipped, notes=notes)


def _timestamps(fields: dict[str, pa.Array], *, years: _Years, zone: ZoneInfo) -> np.ndarray:
    """UTC times as ``datetime64[ns]`` (NaT where a time cannot be read)."""
    n = len(fields["msg"])
    out = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    month = pc.index_in(fields["mon"], value_set=_MONTHS)
    bsd = month.is_valid().to_numpy(zero_copy_only=False)
    if bsd.any():
        keep = pa.array(bsd)
        m = month.filter(keep).to_numpy() + 1
        d = pc.cast(fields["day"].filter(keep), pa.int64()).to_numpy()
        hms = fields["hms"].filter(keep)
        secs = sum(pc.cast(pc.utf8_slice_codeunits(hms, a, a + 2), pa.int64()).to_numpy() * w
                   for a, w in ((0, 3600), (3, 60), (6, 1)))
        year = years.of(m, d)
        months = ((year - 1970) * 12 + m - 1).astype("datetime64[M]")
        local = (months.astype("datetime64[D]") + (d - 1)).astype("datetime64[s]") + secs
        index = pd.DatetimeIndex(local.astype("datetime64[ns]"))
        if zone.key != "UTC":
            # Ambiguous wall times (the repeated hour when clocks go back) are read as the
            # first of the two; times that do not exist (clocks forward) move forward.
            index = index.tz_localize(zone.key, ambiguous=np.ones(len(index), dtype=bool),
                                      nonexistent="shift_forward").tz_convert("UTC") \
                .tz_localize(None)
        out[bsd] = index.to_numpy()
    iso = ~bsd & (pc.utf8_length(fields["iso"]).to_numpy() > 0)
    if iso.any():
        out[iso] = _iso_times(fields["iso"].filter(pa.array(iso)), zone)
    return out


def _iso_times(iso: pa.Array, zone: ZoneInfo) -> np.ndarray:
    """RFC 3339 times as UTC ``datetime64[ns]`` (NaT where unreadable); a time without an
    offset is in ``zone``."""
    text = pd.Series(iso.to_pandas())
    has_offset = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True)
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    # a time the ns frame cannot hold (year 5996) is unreadable, not a crash
    if has_offset.any():
        parsed[has_offset] = within_time_range(pd.to_datetime(
            text[has_offset], format="ISO8601", utc=True, errors="coerce"))
    if (~has_offset).any():
        naive = pd.to_datetime(text[~has_offset], format="ISO8601", errors="coerce")
        naive = naive.mask((naive < TIME_MIN.tz_localize(None))
                           | (naive > TIME_MAX.tz_localize(None)))
        parsed[~has_offset] = naive.dt.tz_localize(zone.key, ambiguous="NaT",
                                                   nonexistent="shift_forward")
    return parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")


class _Years:
    """The year of BSD-dated lines (syslog writes none), piece after piece: a start year,
    given or inferred, plus the year steps counted from the first line (a drop of six
    months or more is a new year, Dec -> Jan; a rise of as much is a late line from the
    year before, so the count comes back down)."""

    def __init__(self, start: int | None, zone: ZoneInfo, mtime: float) -> None:
        #: the year of the first BSD line; ``None``: inferred from the lines of the first
        #: call, which are then all the file's
        self.start = start
        self.zone, self.mtime = zone, mtime
        self.month: int | None = None  # the last BSD line's month, for the next step
        self.offset = 0  # year steps up to that line
        self.low = self.high = 0  # the fewest and the most steps
        self.latest = (-1, 0, 0)  # the latest line: (steps * 400 + day of year, steps, day)
        self.span: tuple[int, int] | None = None  # the first and last year given
        self.fixed = False  # ``span`` is the whole file's, known beforehand

    def of(self, month: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The years of the next BSD lines (months 1-12, days of the month)."""
        before = [] if self.month is None else [self.month]
        step = np.diff(np.concatenate([before, month]).astype(np.int64))
        moves = np.cumsum((step <= -6).astype(np.int64) - (step >= 6).astype(np.int64))
        offset = self.offset + (moves if before else np.concatenate([[0], moves]))
        self.month, self.offset = int(month[-1]), int(offset[-1])
        self.low, self.high = min(self.low, int(offset.min())), max(self.high,
                                                                    int(offset.max()))
        # the latest line, in year-step then calendar order (not always the last line)
        order = offset * 400 + _MONTH_START[month] + day
        latest = int(np.argmax(order))
        if order[latest] > self.latest[0]:
            self.latest = (int(order[latest]), int(offset[latest]),
                           int(order[latest] - offset[latest] * 400))
        if self.start is None:
            self.start = self.inferred()
        if not self.fixed:
            self.span = (self.start + self.low, self.start + self.high)
        return self.start + offset

    def inferred(self) -> int:
        """The year of the first line that puts the latest line no later than the file's
        modification time, give or take a day for time zones."""
        ref = datetime.fromtimestamp(self.mtime, self.zone)
        ref_doy = _MONTH_START[ref.month] + ref.day
        _, steps, doy = self.latest
        return (ref.year if doy <= ref_doy + 1 else ref.year - 1) - steps


def _events(fields: dict[str, pa.Array], *, usable: np.ndarray, natives: _Natives | None
            ) -> tuple[pa.Table, np.ndarray, dict[str, dict[str, int]]]:
    """Match messages against :data:`RULES`; one table row per event (before repeats), PAM
    echoes left out: of the lines' own processes (``natives`` None: the lines are the whole
    file) or of ``natives``, the whole file's.

    Also returns how many events each line stands for (its repeat count, or the mapped
    event's count) and the skipped lines by kind and program, counted with that weight.
    """
    events, weight, skipped, service = _match(fields, usable=usable)
    if not len(events):
        return events, weight, skipped
    echo = _pam_echoes(events, fields) if natives is None else natives.echoes(events, fields)
    if echo.any():
        echoes = np.zeros(len(weight), dtype=bool)
        echoes[events["row"].to_numpy()[echo]] = True
        _tally(skipped, "PAM echo of a logged verdict", service, echoes, weight)
        events = events.filter(pa.array(~echo))
    return events, weight, skipped


def _match(fields: dict[str, pa.Array], *, usable: np.ndarray
           ) -> tuple[pa.Table, np.ndarray, dict[str, dict[str, int]], pa.Array]:
    """:func:`_events` before PAM echoes are left out, in line order; and each line's
    service (the PAM service, else the program)."""
    msg = fields["msg"]
    repeat = pc.extract_regex(msg, _REPEATED)
    repeated = repeat.is_valid()
    count = pc.cast(pc.if_else(repeated, repeat.field("n"), "1"), pa.int64())
    text = pc.if_else(repeated, repeat.field("inner"), msg)
    pam = pc.extract_regex(text, _PAM_PREFIX)
    pam_prefixed = pam.is_valid()
    is_pam = pc.or_(pam_prefixed, pc.starts_with(fields["sub"], "pam_"))
    service = pc.if_else(pam_prefixed, pam.field("svc"), fields["prog"])
    service = pc.replace_substring_regex(service, r"^(su|sudo)-.*$", r"\1")
    text = pc.if_else(pam_prefixed, pam.field("rest"), text)

    weight = count.to_numpy(zero_copy_only=False).copy()
    service_np = service.to_numpy(zero_copy_only=False)
    is_pam_np = is_pam.to_numpy(zero_copy_only=False)
    assigned = ~usable
    candidate = usable & np.isin(service_np, PROGRAMS)
    pieces: list[pa.Table] = []
    for rule in RULES:
        scope = candidate & ~assigned & np.isin(service_np, rule.services) \
            & (is_pam_np == rule.pam)
        idx = np.flatnonzero(scope)
        if not len(idx):
            continue
        found = pc.extract_regex(text.take(pa.array(idx)), rule.pattern)
        hit = found.is_valid().to_numpy(zero_copy_only=False)
        if not hit.any():
            continue
        idx = idx[hit]
        found = found.filter(pa.array(hit))
        assigned[idx] = True
        piece = _piece(rule, idx, found, count.take(pa.array(idx)))
        weight[idx] = piece["count"].to_numpy()
        pieces.append(piece)
    skipped: dict[str, dict[str, int]] = {}
    # named as the syslog tag has it (CRON), not by the PAM service inside (cron)
    _tally(skipped, "other program", fields["prog"], usable & ~candidate, weight)
    _tally(skipped, "unmapped message", service, candidate & ~assigned, weight)
    if not pieces:
        return _EMPTY_EVENTS, weight, skipped, service
    events = pa.concat_tables(pieces)
    events = events.take(pa.array(np.argsort(events["row"].to_numpy(), kind="stable")))
    return events, weight, skipped, service


def _tally(into: dict[str, dict[str, int]], kind: str, names: pa.Array, mask: np.ndarray,
           weight: np.ndarray) -> None:
    """Add the weights of the ``mask`` lines, by name, to ``into[kind]`` (column-wise)."""
    if not mask.any():
        return
    keep = pa.array(mask)
    table = pa.table({"name": names.filter(keep), "n": pa.array(weight).filter(keep)})
    sums = table.group_by("name").aggregate([("n", "sum")])
    detail = into.setdefault(kind, {})
    for name, n in zip(sums["name"].to_pylist(), sums["n_sum"].to_pylist(), strict=True):
        key = name or "(no program name)"
        detail[key] = detail.get(key, 0) + int(n)


_EVENT_SCHEMA = pa.schema([("row", pa.int64()), ("user", pa.string()), ("ip", pa.string()),
                           ("res", pa.string()), ("action", pa.string()),
                           ("outcome", pa.string()), ("category", pa.string()),
                           ("pam", pa.bool_()), ("count", pa.int64()),
                           ("command", pa.string()), ("group", pa.string())])
_EMPTY_EVENTS = _EVENT_SCHEMA.empty_table()


def _piece(rule: Rule, idx: np.ndarray, found: pa.StructArray, count: pa.Array) -> pa.Table:
    names = {f.name for f in found.type}
    k = len(idx)

    def group(name: str) -> pa.Array:
        if name in names:
            return pc.utf8_trim_whitespace(found.field(name))
        return pa.array([""] * k, type=pa.string())

    def fallback(value: pa.Array, other: pa.Array) -> pa.Array:
        return pc.if_else(pc.equal(value, ""), other, value)

    user = group("user")
    if "user2" in names:
        user = fallback(user, group("user2"))
    res = group("res")
    if "res2" in names:
        res = fallback(res, group("res2"))
    if "uid" in names:
        # PAM's "by (uid=0)": no name, but uid 0 is root; another uid is kept as "uid=N"
        uid = group("uid")
        named = pc.if_else(pc.equal(uid, "0"), "root", pc.if_else(
            pc.equal(uid, ""), "", pc.binary_join_element_wise("uid=", uid, "")))
        user = fallback(user, named)
    if rule.actor:
        user = fallback(user, res if rule.actor == ACCOUNT
                        else pa.array([rule.actor] * k, type=pa.string()))
    outcome: pa.Array = pa.array([rule.outcome] * k, type=pa.string())
    if "fail" in names:
        # sudo: an error phrase before TTY= means the command was refused
        outcome = pc.if_else(pc.equal(group("fail"), ""), "success", "failure")
    if "n" in names:
        n = pc.cast(pc.if_else(pc.equal(group("n"), ""), "1", group("n")), pa.int64())
        count = pc.multiply(count, n)
    return pa.table({
        "row": pa.array(idx, type=pa.int64()), "user": user, "ip": ip_or_empty(group("ip")),
        "res": res, "action": pa.array([rule.action] * k, type=pa.string()),
        "outcome": outcome, "category": pa.array([rule.category] * k, type=pa.string()),
        "pam": pa.array(np.full(k, rule.pam)), "count": count,
        "command": group("command"), "group": group("group"),
    }, schema=_EVENT_SCHEMA)


def _pam_echoes(events: pa.Table, fields: dict[str, pa.Array]) -> np.ndarray:
    """Which PAM events echo a verdict their process also logged, with the same action."""
    pam = events["pam"].to_numpy()
    if not pam.any() or pam.all():
        return np.zeros(len(pam), dtype=bool)
    rows = events["row"]
    key = pc.binary_join_element_wise(fields["host"].take(rows), fields["pid"].take(rows),
                                      events["action"], "\x1f")
    pid_known = pc.not_equal(fields["pid"].take(rows), "").to_numpy(zero_copy_only=False)
    native_keys = key.filter(pa.array(~pam & pid_known))
    echo = pc.is_in(key, value_set=native_keys.combine_chunks()
                    if isinstance(native_keys, pa.ChunkedArray) else native_keys)
    return pam & pid_known & echo.to_numpy(zero_copy_only=False)


#: The actions of PAM lines: a process's own verdict with another action echoes none.
_PAM_ACTIONS = pa.array(sorted({rule.action for rule in RULES if rule.pam}))
#: A pid written as its value (no leading zero, at most nine digits): coded as that value.
_PLAIN_PID = r"^(?:0|[1-9][0-9]{0,8})$"
_OTHER_PIDS = 1_000_000_000  # the codes of other pids are numbered from here


class _Natives:
    """The verdicts processes logged themselves in a whole file, read in pieces, as exact
    (host, pid, action) codes: what makes a PAM line of any piece an echo (as
    :func:`_pam_echoes` finds within one piece that is the whole file).

    A code is ``(host number * 8 + action number) << 31 | pid``: hosts are numbered as they
    come (a file names few), a pid is its value, and a pid written otherwise (leading zeros,
    ten digits or more) is numbered as it comes; so equal codes are equal triples, never a
    hash collision. Memory: 8 bytes a process (host, pid) and action, not a line.
    """

    def __init__(self) -> None:
        self._hosts: dict[str, int] = {}
        self._pids: dict[str, int] = {}
        self._parts: list[np.ndarray] = []  # codes not merged into ``codes`` yet
        self._held = 0
        self.codes = np.empty(0, dtype=np.int64)  # sorted, unique

    def add(self, events: pa.Table, fields: dict[str, pa.Array]) -> None:
        """Count the native verdicts among a piece's ``events`` (from :func:`_match`)."""
        codes, coded = self._code(events, fields)
        mine = coded & ~events["pam"].to_numpy()
        self._parts.append(np.unique(codes[mine]))
        self._held += len(self._parts[-1])
        if self._held > 2 * max(len(self.codes), 1 << 16):
            self.close()

    def close(self) -> None:
        """Merge what was counted (before the first look-up)."""
        if self._parts:
            self.codes = np.unique(np.concatenate([self.codes, *self._parts]))
            self._parts, self._held = [], 0

    def echoes(self, events: pa.Table, fields: dict[str, pa.Array]) -> np.ndarray:
        """Which PAM events echo a verdict their process logged anywhere in the file."""
        pam = events["pam"].to_numpy()
        if not pam.any() or not len(self.codes):
            return np.zeros(len(pam), dtype=bool)
        codes, coded = self._code(events, fields)
        at = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        return pam & coded & (self.codes[at] == codes)

    def _code(self, events: pa.Table, fields: dict[str, pa.Array]
              ) -> tuple[np.ndarray, np.ndarray]:
        """Each event's code, and which events have one (a pid, an action of PAM's)."""
        rows = pa.array(events["row"].to_numpy())
        pid = fields["pid"].take(rows)
        action = pc.index_in(events["action"], value_set=_PAM_ACTIONS)
        coded = pc.and_(pc.not_equal(pid, ""), action.is_valid()) \
            .to_numpy(zero_copy_only=False)
        plain = pc.match_substring_regex(pid, _PLAIN_PID).to_numpy(zero_copy_only=False)
        value = pc.cast(pc.if_else(pa.array(plain), pid, "0"), pa.int64()).to_numpy()
        other = coded & ~plain
        if other.any():  # rare: numbered once per distinct spelling, not per line
            value[other] = _OTHER_PIDS + self._numbers(self._pids, pid.filter(pa.array(other)))
        host = self._numbers(self._hosts, fields["host"].take(rows))
        kind = pc.fill_null(action, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        return ((host * 8 + kind) << 31) | value, coded

    @staticmethod
    def _numbers(known: dict[str, int], values: pa.Array) -> np.ndarray:
        """The number of each value in ``known``, numbering new ones (per distinct value)."""
        encoded = pc.dictionary_encode(values)
        lookup = np.array([known.setdefault(v, len(known))
                           for v in encoded.dictionary.to_pylist()] or [0], dtype=np.int64)
        return lookup[encoded.indices.to_numpy(zero_copy_only=False)]


def _frame(events: pa.Table, fields: dict[str, pa.Array], stamps: np.ndarray) -> pd.DataFrame:
    counts = events["count"].to_numpy()
    if len(counts) and (counts != 1).any():
        events = events.take(pa.array(np.repeat(np.arange(len(counts)), counts)))
    rows = events["row"]
    host = fields["host"].take(rows)
    pid = fields["pid"].take(rows)
    is_sshd = pc.equal(events["action"], "login")
    for name in ("session.start", "session.end", "invalid_user", "disconnect"):
        is_sshd = pc.or_(is_sshd, pc.equal(events["action"], name))
    # For sshd events the thing acted on is the machine logged into.
    resource = pc.if_else(pc.and_(is_sshd, pc.equal(events["res"], "")), host, events["res"])
    session = pc.if_else(pc.equal(pid, ""), pa.scalar(None, pa.string()),
                         pc.binary_join_element_wise(host, pid, ":"))
    columns = {
        "user": events["user"], "action": events["action"], "outcome": events["outcome"],
        "source_ip": events["ip"], "resource": resource, "host": host, "session": session,
        "category": events["category"], "kind": pa.array(["event"] * len(events)),
        "message": fields["line"].take(rows), "command": events["command"],
        "group": events["group"],
    }
    timestamps = pd.Series(stamps[rows.to_numpy()]).dt.tz_localize("UTC")
    return arrow_to_frame(columns, timestamps=timestamps)
