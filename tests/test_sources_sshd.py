"""The sshd/PAM syslog adapter on loghub's real samples and on hand-written lines.

Expected numbers are computed here from the files with plain string code, so that each can
be checked by hand with grep (the equivalent command is in the comment). The loghub samples
are from logpai/loghub (Zhu et al., Loghub, ISSRE 2023); see ../shared/data/loghub/LICENSE.
"""

from __future__ import annotations

import gzip
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from analyzer.errors import ConfigError, SourceError
from analyzer.events import REQUIRED_FRAME_COLUMNS
from analyzer.sources import sshd

DATA = Path(__file__).parents[2] / "shared" / "data"
OPENSSH = DATA / "loghub" / "OpenSSH_2k.log"
LINUX = DATA / "loghub" / "Linux_2k.log"
needs_data = pytest.mark.skipif(not OPENSSH.exists(),
                                reason="real samples in ../shared/data/loghub are absent")


def write(tmp_path: Path, text: str, name: str = "auth.log") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def openssh() -> pd.DataFrame:
    result = sshd.read(OPENSSH, year=2017)
    assert result.rejected == ()
    return result.frame


@pytest.fixture(scope="module")
def openssh_lines() -> list[str]:
    return OPENSSH.read_text().splitlines()


def _pid(line: str) -> str:
    return re.search(r"sshd\[(\d+)\]", line).group(1)


@needs_data
def test_openssh_login_failures_match_grep(openssh, openssh_lines):
    # grep -c ': Failed ' (not the "message repeated" lines) + the N of each
    # grep 'message repeated' line, + PAM failures from processes that logged no verdict.
    native = [ln for ln in openssh_lines if ": Failed " in ln]
    repeats = [int(re.search(r"repeated (\d+) times", ln).group(1))
               for ln in openssh_lines if "message repeated" in ln and "Failed" in ln]
    verdict_pids = {_pid(ln) for ln in openssh_lines if ": Failed " in ln or ": Accepted " in ln}
    pam_only = [ln for ln in openssh_lines
                if "pam_unix(sshd:auth): authentication failure" in ln
                and _pid(ln) not in verdict_pids]
    failures = openssh[(openssh.action == "login") & (openssh.outcome == "failure")]
    assert len(failures) == len(native) + sum(repeats) + len(pam_only)
    assert len(pam_only) == 1  # the last line of the sample: its verdict is cut off


@needs_data
def test_openssh_successes_invalid_users_and_ips(openssh, openssh_lines):
    # grep -c ': Accepted ' ; grep -c ': Invalid user '
    accepted = [ln for ln in openssh_lines if ": Accepted " in ln]
    invalid = [ln for ln in openssh_lines if ": Invalid user " in ln]
    logins = openssh[openssh.action == "login"]
    assert (logins.outcome == "success").sum() == len(accepted) == 1
    assert (openssh.action == "invalid_user").sum() == len(invalid)
    # grep -o 'Failed .* from [0-9.]*' | awk '{print $NF}' | sort -u | wc -l
    ips = {re.search(r" from (\S+) port", ln).group(1) for ln in openssh_lines
           if ": Failed " in ln or "repeated" in ln}
    failed_ips = set(logins.loc[logins.outcome == "failure", "source_ip"].astype(str))
    assert ips <= failed_ips
    # every login event names its source, so that sources can be ranked
    assert (logins.source_ip.astype(str) != "").all()


@needs_data
def test_openssh_exact_mapping_of_chosen_lines(openssh):
    # line 2: Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186
    first = openssh.iloc[0]
    assert first.timestamp == pd.Timestamp("2017-12-10 06:55:46", tz="UTC")
    assert (first.user, first.action, first.outcome, first.source_ip) == \
        ("webmaster", "invalid_user", "failure", "173.234.31.186")
    assert (first.host, first.session, first.resource, first.category) == \
        ("LabSZ", "LabSZ:24200", "LabSZ", "authentication")
    # line 6: Failed password for invalid user webmaster ... -> login failure for webmaster
    second = openssh.iloc[1]
    assert (second.user, second.action, second.outcome) == ("webmaster", "login", "failure")
    assert second.message.endswith("Failed password for invalid user webmaster from "
                                   "173.234.31.186 port 38926 ssh2")
    # line 30: message repeated 5 times: [ Failed password for root from 5.36.59.76 ...]
    repeated = openssh[openssh.message.str.contains("message repeated 5 times")
                       & openssh.message.str.contains("5.36.59.76")]
    assert len(repeated) == 5
    assert set(repeated.user) == {"root"} and set(repeated.outcome) == {"failure"}
    assert set(repeated.timestamp) == {pd.Timestamp("2017-12-10 07:13:56", tz="UTC")}
    # the one accepted login
    ok = openssh[openssh.outcome == "success"]
    ok = ok[ok.action == "login"].iloc[0]
    assert (ok.user, ok.source_ip) == ("fztu", "119.137.62.142")


@needs_data
def test_openssh_frame_has_contract_dtypes(openssh):
    assert list(openssh.columns[:6]) == list(REQUIRED_FRAME_COLUMNS)
    assert str(openssh.timestamp.dtype) == "datetime64[ns, UTC]"
    assert list(openssh.outcome.cat.categories) == ["success", "failure", "unknown"]
    assert openssh.timestamp.is_monotonic_increasing


@needs_data
def test_linux_pam_only_log():
    lines = LINUX.read_text().splitlines()
    result = sshd.read(LINUX, year=2005)
    frame = result.frame
    assert result.rejected == ()
    # grep 'sshd(pam_unix)' Linux_2k.log | grep -c 'authentication failure'
    pam_failures = [ln for ln in lines
                    if "sshd(pam_unix)" in ln and "authentication failure" in ln]
    failures = frame[(frame.action == "login") & (frame.outcome == "failure")]
    assert len(failures) == len(pam_failures)
    # grep 'sshd(pam_unix)' | grep -o 'user=[a-z]*' | sort -u  -> guest, root, test
    assert set(failures.user.astype(str)) - {""} == {"root", "guest", "test"}
    # grep 'su(pam_unix)' | grep -c 'session opened'
    su_opened = [ln for ln in lines if "su(pam_unix)" in ln and "session opened" in ln]
    su = frame[frame.action == "su"]
    assert len(su) == len(su_opened)
    assert set(su.resource.astype(str)) == {"news", "cyrus"}
    # rhost=218.188.2.4 is an address and becomes source_ip; host names do not
    assert "218.188.2.4" in set(failures.source_ip.astype(str))
    assert not failures.source_ip.astype(str).str.contains("hinet").any()


def test_malformed_lines_are_set_aside_with_line_numbers(tmp_path):
    path = write(tmp_path, (
        "Mar  1 10:00:00 web1 sshd[42]: Accepted publickey for alice from 10.0.0.5 port 50000"
        " ssh2: ED25519 SHA256:abc\n"
        "this is not syslog\n"
        "\n"
        "Mar  1 10:00:05 web1 sshd[43]: Failed password for bob from 10.0.0.6 port 50001 ssh2\n"
        "\x00\x01 garbage\n"
    ))
    result = sshd.read(path, year=2024)
    assert [(r.line, r.reason) for r in result.rejected] == [
        (2, "not a syslog line (no time and host)"),
        (5, "not a syslog line (no time and host)"),
    ]
    assert result.rejected[0].raw == b"this is not syslog"
    frame = result.frame
    assert list(frame.user) == ["alice", "bob"]
    assert list(frame.outcome) == ["success", "failure"]
    assert frame.iloc[0].category == "authentication"


def test_sudo_su_and_pam_echoes(tmp_path):
    path = write(tmp_path, (
        "Mar  1 10:00:00 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ;"
        " COMMAND=/usr/bin/apt update\n"
        "Mar  1 10:00:01 web1 sudo:      bob : 3 incorrect password attempts ; TTY=pts/1 ;"
        " PWD=/home/bob ; USER=root ; COMMAND=/bin/cat /etc/shadow\n"
        "Mar  1 10:00:02 web1 su[77]: (to root) alice on pts/0\n"
        "Mar  1 10:00:02 web1 su[77]: pam_unix(su-l:session): session opened for user"
        " root(uid=0) by alice(uid=1000)\n"
        "Mar  1 10:00:03 web1 su[78]: pam_unix(su:auth): authentication failure;"
        " logname=carol uid=1001 euid=0 tty=pts/2 ruser=carol rhost=  user=root\n"
        "Mar  1 10:00:04 web1 sshd[90]: pam_unix(sshd:auth): authentication failure;"
        " logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.4  user=dave\n"
        "Mar  1 10:00:06 web1 sshd[90]: Failed password for dave from 198.51.100.4 port 2 ssh2\n"
        "Mar  1 10:00:07 web1 sshd[90]: PAM 2 more authentication failures; logname= uid=0"
        " euid=0 tty=ssh ruser= rhost=198.51.100.4  user=dave\n"
        "Mar  1 10:00:08 web1 sshd[91]: Disconnected from user dave 198.51.100.4 port 3\n"
    ))
    frame = sshd.read(path, year=2024).frame
    got = list(zip(frame.action, frame.user, frame.outcome, frame.resource, strict=True))
    # sudo: the invoking user acts on the run-as account; the command is kept beside it
    assert list(frame.command[:2]) == ["/usr/bin/apt update", "/bin/cat /etc/shadow"]
    assert got == [
        ("sudo", "alice", "success", "root"),
        ("sudo", "bob", "failure", "root"),
        ("su", "alice", "success", "root"),          # the PAM echo of pid 77 is not counted
        ("su", "carol", "failure", "root"),
        ("login", "dave", "failure", "web1"),        # PAM lines of pid 90 echo its verdict
        ("disconnect", "dave", "unknown", "web1"),
    ]


def test_time_zone_and_year(tmp_path):
    path = write(tmp_path, "Dec 31 23:59:59 h sshd[1]: Failed password for x from 10.1.1.1"
                           " port 1 ssh2\n"
                           "Jan  1 00:00:01 h sshd[2]: Failed password for x from 10.1.1.1"
                           " port 1 ssh2\n")
    frame = sshd.read(path, year=2023, tz="Europe/Berlin").frame
    assert list(frame.timestamp) == [pd.Timestamp("2023-12-31 22:59:59", tz="UTC"),
                                     pd.Timestamp("2023-12-31 23:00:01", tz="UTC")]
    # without a year: the last line may not be later than the file's modification time
    stamp = datetime(2025, 1, 3, 12, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    frame = sshd.read(path).frame
    assert [t.year for t in frame.timestamp] == [2024, 2025]
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        sshd.read(path, tz="Mars/Olympus")


def test_rfc3339_times_and_gzip(tmp_path):
    text = ("2024-05-01T08:00:00.123456+02:00 web1 sshd[5]: Accepted password for erin from"
            " 2001:db8::7 port 4 ssh2\n")
    path = tmp_path / "auth.log.gz"
    path.write_bytes(gzip.compress(text.encode()))
    row = sshd.read(path).frame.iloc[0]
    assert row.timestamp == pd.Timestamp("2024-05-01 06:00:00.123456", tz="UTC")
    assert (row.user, row.source_ip, row.outcome) == ("erin", "2001:db8::7", "success")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(SourceError, match="nope.log"):
        sshd.read(tmp_path / "nope.log")


@needs_data
def test_sniff():
    assert sshd.sniff(OPENSSH.read_bytes()[:65536])
    assert sshd.sniff(LINUX.read_bytes()[:65536])
    assert not sshd.sniff(b'{"eventName": "GetObject"}\n')
    assert not sshd.sniff(b'127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2\n')


def test_iso_times_the_frame_cannot_hold_are_set_aside(tmp_path):
    log = tmp_path / "far.log"
    log.write_text("2026-01-01T00:00:00+00:00 host sshd[1]: Failed password for root from "
                   "1.2.3.4 port 22 ssh2\n"
                   "5996-01-01T00:00:00 host sshd[1]: Failed password for root from "
                   "1.2.3.4 port 22 ssh2\n")
    result = sshd.read(log)
    assert len(result.frame) == 1 and [r.line for r in result.rejected] == [2]


ACCOUNT_LINES = (
    "Mar  1 10:00:00 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ;"
    " COMMAND=/usr/sbin/useradd -m backdoor\n"
    "Mar  1 10:00:00 web1 useradd[1234]: new group: name=backdoor, GID=1001\n"
    "Mar  1 10:00:00 web1 useradd[1234]: new user: name=backdoor, UID=1001, GID=1001,"
    " home=/home/backdoor, shell=/bin/bash, from=/dev/pts/0\n"
    "Mar  1 10:00:01 web1 usermod[5]: add 'eve' to group 'sudo'\n"
    "Mar  1 10:00:01 web1 usermod[5]: add 'eve' to shadow group 'sudo'\n"
    "Mar  1 10:00:02 web1 usermod[6]: change user 'eve' shell from '/bin/sh' to '/bin/bash'\n"
    "Mar  1 10:00:02 web1 usermod[7]: lock user 'mallory' password\n"
    "Mar  1 10:00:03 web1 gpasswd[8]: user eve added by root to group adm\n"
    "Mar  1 10:00:04 web1 groupadd[9]: group added to /etc/group: name=devs, GID=1002\n"
    "Mar  1 10:00:04 web1 groupadd[9]: group added to /etc/gshadow: name=devs\n"
    "Mar  1 10:00:04 web1 groupadd[9]: new group: name=devs, GID=1002\n"
    "Mar  1 10:00:05 web1 passwd[99]: pam_unix(passwd:chauthtok): password changed for bob\n"
    "Mar  1 10:00:06 web1 chpasswd[100]: pam_unix(chpasswd:chauthtok): password changed for"
    " carol\n"
    "Mar  1 10:00:07 web1 userdel[11]: delete user 'olduser'\n"
    "Mar  1 10:00:07 web1 userdel[11]: removed group 'olduser' owned by 'olduser'\n"
    "Mar  1 10:00:07 web1 userdel[11]: removed shadow group 'olduser' owned by 'olduser'\n"
    "Mar  1 10:00:08 web1 su[12]: pam_unix(su:session): session opened for user root by"
    " alice(uid=1000)\n"
    "Mar  1 10:00:09 web1 CRON[13]: pam_unix(cron:session): session opened for user root by"
    " (uid=0)\n"
    "Mar  1 10:00:10 web1 kernel: [ 1.0] eth0: link up\n"
)


def test_account_management_lines_with_actor_and_account(tmp_path):
    result = sshd.read(write(tmp_path, ACCOUNT_LINES), year=2024)
    frame = result.frame
    got = list(zip(frame.action, frame.user, frame.resource, frame.group, strict=True))
    assert got == [
        ("sudo", "alice", "root", ""),
        ("group.create", "root", "backdoor", ""),
        ("user.create", "root", "backdoor", ""),
        ("group.member_add", "root", "eve", "sudo"),    # the shadow-group twin is skipped
        ("user.change", "root", "eve", ""),
        ("user.change", "root", "mallory", ""),
        ("group.member_add", "root", "eve", "adm"),     # gpasswd names who did it
        ("group.create", "root", "devs", ""),           # one event, not three
        ("password.change", "bob", "bob", ""),          # passwd: the account itself
        ("password.change", "root", "carol", ""),       # chpasswd: root only
        ("user.delete", "root", "olduser", ""),
        ("group.delete", "root", "olduser", ""),
        ("su", "alice", "root", ""),
    ]
    assert frame.command[0] == "/usr/sbin/useradd -m backdoor"
    assert set(frame.category) == {"iam"} and set(frame.outcome) == {"success"}
    # every one of them counts as a privileged action for the features
    from analyzer.features import privileged_mask
    assert privileged_mask(frame.action.astype(str).to_numpy()).all()
    # and nothing is lost without trace
    assert result.skipped == {
        "unmapped message": {"usermod": 1, "groupadd": 2, "userdel": 1},
        "other program": {"CRON": 1, "kernel": 1},
    }
    assert result.records == ACCOUNT_LINES.count("\n") == \
        len(frame) + len(result.rejected) + result.n_skipped


@needs_data
def test_linux_su_lines_name_the_acting_user_and_the_account():
    # grep 'su(pam_unix)' Linux_2k.log | grep 'session opened': "for user news by (uid=0)"
    lines = [ln for ln in LINUX.read_text().splitlines() if ln.strip()]
    result = sshd.read(LINUX, year=2005)
    su = result.frame[result.frame.action == "su"]
    assert len(su) == sum("su(pam_unix)" in ln and "session opened" in ln for ln in lines)
    assert set(zip(su.user, su.resource, strict=True)) == {("root", "news"), ("root", "cyrus")}
    # every line is accounted for: the 916 ftpd lines are other program, and so on
    assert result.records == len(lines) == \
        len(result.frame) + len(result.rejected) + result.n_skipped
    ftpd = sum(" ftpd[" in ln for ln in lines)
    assert result.skipped["other program"]["ftpd"] == ftpd == 916
    assert result.skipped["unmapped message"]["su"] == sum(
        "su(pam_unix)" in ln and "session closed" in ln for ln in lines)
    line = result.accounting("Linux_2k.rejected")
    assert line.startswith("2,000 records read: 647 used, 1,353 skipped (")
    assert "ftpd x916" in line


@needs_data
def test_openssh_accounting_counts_repeats_and_pam_echoes(openssh_lines):
    result = sshd.read(OPENSSH, year=2017)
    # a "message repeated N times" line stands for N records
    extra = sum(int(re.search(r"repeated (\d+) times", ln).group(1)) - 1
                for ln in openssh_lines if "message repeated" in ln)
    assert extra > 0
    assert result.records is not None and result.records >= len(openssh_lines) + extra
    assert result.records == len(result.frame) + len(result.rejected) + result.n_skipped
    assert result.skipped["PAM echo of a logged verdict"]["sshd"] > 0


def test_year_assumed_from_the_modification_time_is_noted(tmp_path):
    path = write(tmp_path, "Dec 30 23:00:00 h su[1]: Successful su for root by alice\n"
                           "Dec 31 23:59:59 h sshd[1]: Failed password for x from 10.1.1.1"
                           " port 1 ssh2\n")
    # written on 2 January 2025: December lines are from 2024, none after the mtime
    stamp = datetime(2025, 1, 2, 8, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    result = sshd.read(path)
    assert [t.year for t in result.frame.timestamp] == [2024, 2024]
    assert len(result.notes) == 1
    assert "year 2024 assumed" in result.notes[0] and "--year" in result.notes[0]
    assert (result.frame.timestamp <= pd.Timestamp(stamp, unit="s", tz="UTC")).all()
    # the same lines written in the following December are from that year
    stamp = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    assert [t.year for t in sshd.read(path).frame.timestamp] == [2025, 2025]
    # a file that steps into January spans two years, and says so
    path.write_text(path.read_text() + "Jan  1 00:00:05 h su[2]: Successful su for root by"
                                       " bob\n")
    stamp = datetime(2025, 1, 3, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    result = sshd.read(path)
    assert [t.year for t in result.frame.timestamp] == [2024, 2024, 2025]
    assert "years 2024-2025 assumed" in result.notes[0]
    # a year given is used as is, with no note
    given = sshd.read(path, year=2020)
    assert given.notes == () and given.frame.timestamp[0].year == 2020
