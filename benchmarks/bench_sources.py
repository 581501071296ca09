"""Events per second parsed by the sshd and CloudTrail adapters, against a floor.

Generates (once, under benchmarks/.data/, which git ignores) a 1M-line sshd auth log and a
1M-record CloudTrail JSON-lines file, then times, median of ``--repeat`` runs:

- ``analyzer.sources.sshd.read`` vs ``grep -c`` over the same file;
- ``analyzer.sources.cloudtrail.read`` vs ``pyarrow.json.read_json`` (schema inferred,
  nothing normalized) and ``grep -c`` over the same file.

With ``--against REV``, times instead the sshd and web access-log readers of this tree
against the same readers as they were at git revision ``REV`` (their module files loaded
from git, everything else from this tree), alternating old and new in one run, and prints
both medians and their ratio.

Usage::

    python benchmarks/bench_sources.py [--lines 1000000] [--repeat 5]
    python benchmarks/bench_sources.py --lines 1000000 --repeat 5 --against 24f233f

The results go to stdout as a markdown table (recorded in benchmarks/README-sources.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.json as pj

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer.sources import cloudtrail, sshd, weblog

DATA = Path(__file__).resolve().parent / ".data"


def make_sshd(path: Path, lines: int, seed: int = 7) -> None:
    """A brute-force-heavy auth.log: the message mix of loghub's OpenSSH sample."""
    rng = random.Random(seed)
    users = ["root", "admin", "oracle", "test", "guest", "ubuntu", "git", "support"]
    staff = ["alice", "bob", "carol", "dave"]
    out = io.StringIO()
    pid = 1000
    second = 0
    written = 0
    while written < lines:
        second += rng.randint(0, 3)
        day, rest = divmod(second, 86400)
        stamp = f"Dec {1 + day % 28:2d} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
        pid += 1
        ip = ".".join(str(rng.randint(1, 223)) for _ in range(4))
        head = f"{stamp} bastion sshd[{pid}]: "
        kind = rng.random()
        if kind < 0.05:
            who = rng.choice(staff)
            block = [f"Accepted publickey for {who} from 10.0.{rng.randint(0, 9)}."
                     f"{rng.randint(1, 200)} port {rng.randint(1024, 65535)} ssh2: ED25519 x",
                     f"pam_unix(sshd:session): session opened for user {who} by (uid=0)"]
        elif kind < 0.45:
            who = rng.choice(users)
            block = [f"Invalid user {who} from {ip}",
                     f"input_userauth_request: invalid user {who} [preauth]",
                     "pam_unix(sshd:auth): check pass; user unknown",
                     f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                     f"tty=ssh ruser= rhost={ip} ",
                     f"Failed password for invalid user {who} from {ip} port "
                     f"{rng.randint(1024, 65535)} ssh2",
                     f"Received disconnect from {ip}: 11: Bye Bye [preauth]"]
        else:
            port = rng.randint(1024, 65535)
            block = [f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                     f"tty=ssh ruser= rhost={ip}  user=root",
                     f"Failed password for root from {ip} port {port} ssh2",
                     f"message repeated 5 times: [ Failed password for root from {ip} port "
                     f"{port} ssh2]",
                     f"Received disconnect from {ip}: 11: Bye Bye [preauth]"]
        for message in block[:lines - written]:
            out.write(head + message + "\n")
            written += 1
    path.write_text(out.getvalue())


def make_cloudtrail(path: Path, lines: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    names = [("s3.amazonaws.com", "GetObject"), ("s3.amazonaws.com", "ListObjects"),
             ("ec2.amazonaws.com", "DescribeInstances"), ("sts.amazonaws.com", "AssumeRole"),
             ("iam.amazonaws.com", "ListUsers"), ("signin.amazonaws.com", "ConsoleLogin")]
    with path.open("wb") as out:
        for i in range(lines):
            source, name = rng.choice(names)
            who = rng.choice(["alice", "bob", "carol", "deploy"])
            rec = {
                "eventVersion": "1.08", "eventTime": f"2024-05-{1 + i % 28:02d}T"
                f"{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z",
                "eventSource": source, "eventName": name, "awsRegion": "eu-west-1",
                "sourceIPAddress": f"198.51.100.{i % 250 + 1}", "userAgent": "aws-cli/2.15",
                "userIdentity": {"type": "IAMUser", "userName": who,
                                 "arn": f"arn:aws:iam::111122223333:user/{who}",
                                 "accountId": "111122223333", "accessKeyId": f"AKIA{i % 97:04d}"},
                "requestParameters": {"bucketName": "reports", "key": f"q{i % 13}.csv"}
                if source == "s3.amazonaws.com" else None,
                "eventID": f"{i:08x}-0000-4000-8000-000000000000",
            }
            if i % 50 == 0:
                rec["errorCode"] = "AccessDenied"
            out.write(orjson.dumps(rec) + b"\n")


def make_weblog(path: Path, lines: int, seed: int = 7) -> None:
    """A combined-format access log: browsing, API calls, a scanner's probes."""
    rng = random.Random(seed)
    paths = ["/", "/index.html", "/static/app.js", "/api/models/7", "/login", "/search"]
    probes = ["/.env", "/etc/passwd", "/wp-login.php", "/.git/config", "/admin"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.4.0", "python-requests/2.31",
              "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)"]
    with path.open("w") as out:
        for i in range(lines):
            second = i // 20
            stamp = (f"{1 + second // 86400 % 28:02d}/Mar/2024:{second // 3600 % 24:02d}:"
                     f"{second // 60 % 60:02d}:{second % 60:02d} +0000")
            ip = f"198.51.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            scan = rng.random() < 0.1
            target = rng.choice(probes) if scan else rng.choice(paths)
            if rng.random() < 0.2:
                target += f"?q={rng.randint(0, 999)}"
            status = rng.choice((404, 403)) if scan else rng.choice((200, 200, 200, 301, 401))
            agent = agents[3] if scan else rng.choice(agents[:3])
            out.write(f'{ip} - - [{stamp}] "GET {target} HTTP/1.1" {status} '
                      f'{rng.randint(100, 9000)} "-" "{agent}"\n')


def baseline_module(rev: str, name: str):
    """``analyzer.sources.<name>`` as it was at git revision ``rev``."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:analyzer/sources/{name}.py"], cwd=root,
                            check=True, capture_output=True).stdout
    spec = importlib.util.spec_from_loader(f"analyzer.sources._baseline_{name}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    exec(compile(source, f"{rev}:{name}.py", "exec"), module.__dict__)
    return module


def compare(rev: str, lines: int, repeat: int, *, only: str | None = None) -> None:
    """Old and new sshd and weblog readers on the same files, alternating, medians."""
    auth = DATA / f"auth_{lines}.log"
    access = DATA / f"access_{lines}.log"
    if not auth.exists():
        make_sshd(auth, lines)
    if not access.exists():
        make_weblog(access, lines)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, pyarrow {pa.__version__}")
    print(f"median of {repeat} runs, old and new alternating\n")
    print(f"| reader | file | lines | events | {rev} s | this tree s | new/old |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, new, path, kwargs in (("sshd", sshd, auth, {"year": 2024}),
                                    ("weblog", weblog, access, {})):
        if only and name != only:
            continue
        old = baseline_module(rev, name)
        times: dict[str, list[float]] = {"old": [], "new": []}
        events = 0
        for _ in range(repeat):
            for label, module in (("old", old), ("new", new)):
                start = time.perf_counter()
                result = module.read(path, **kwargs)
                times[label].append(time.perf_counter() - start)
                events = len(result.frame)
        t_old, t_new = (statistics.median(times[k]) for k in ("old", "new"))
        print(f"| {name}.read | {path.name} | {lines:,} | {events:,} | {t_old:.3f} | "
              f"{t_new:.3f} | {t_new / t_old:.3f} |")


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def grep_count(path: Path, pattern: str) -> int:
    # grep exits 1 when nothing matches; the count is still printed
    return int(subprocess.run(["grep", "-c", pattern, str(path)], check=False,
                              capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", metavar="REV",
                        help="compare the sshd and weblog readers with those of git REV")
    parser.add_argument("--only", choices=("sshd", "weblog"),
                        help="with --against: time this reader only")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    if args.against:
        compare(args.against, args.lines, args.repeat, only=args.only)
        return
    auth = DATA / f"auth_{args.lines}.log"
    trail = DATA / f"cloudtrail_{args.lines}.jsonl"
    if not auth.exists():
        make_sshd(auth, args.lines)
    if not trail.exists():
        make_cloudtrail(trail, args.lines)

    rows = []
    n = sum(1 for _ in auth.open("rb"))
    t_grep, _ = timed(lambda: grep_count(auth, "Failed password"), args.repeat)
    t_read, result = timed(lambda: sshd.read(auth, year=2024), args.repeat)
    events = len(result.frame)
    rows.append(("sshd.read", auth, n, events, t_read))
    rows.append(("grep -c 'Failed password' (floor)", auth, n, None, t_grep))

    n = sum(1 for _ in trail.open("rb"))
    t_grep, _ = timed(lambda: grep_count(trail, '"eventName"'), args.repeat)
    t_arrow, table = timed(lambda: pj.read_json(trail), args.repeat)
    t_read, result = timed(lambda: cloudtrail.read(trail), args.repeat)
    rows.append(("cloudtrail.read", trail, n, len(result.frame), t_read))
    rows.append(("pyarrow.json.read_json (floor)", trail, n, table.num_rows, t_arrow))
    rows.append(("grep -c '\"eventName\"' (floor)", trail, n, None, t_grep))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, pyarrow {pa.__version__}")
    print(f"median of {args.repeat} runs\n")
    print("| what | file | lines | MB | events | seconds | lines/s | events/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for what, path, lines, ev, secs in rows:
        size = path.stat().st_size / 1e6
        evs = f"{ev:,}" if ev is not None else "-"
        rate = f"{ev / secs:,.0f}" if ev is not None else "-"
        print(f"| {what} | {path.name} | {lines:,} | {size:,.0f} | {evs} | {secs:.3f} | "
              f"{lines / secs:,.0f} | {rate} |")
    base = {p.name: s for w, p, _, _, s in rows if w.startswith("grep")}
    arrow = next(s for w, _, _, _, s in rows if w.startswith("pyarrow"))
    print()
    for what, path, _, _, secs in rows:
        if what.endswith(".read"):
            ratio = f"{secs / base[path.name]:.1f}x grep -c"
            if what.startswith("cloudtrail"):
                ratio += f", {secs / arrow:.1f}x pyarrow.json.read_json"
            print(f"- {what}: {ratio}")


if __name__ == "__main__":
    main()
