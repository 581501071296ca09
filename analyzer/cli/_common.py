"""Helpers the command modules share: key files, mappings, progress, output."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyzer.errors import ConfigError, ModelLoadError, SourceError
from analyzer.events import printable
from analyzer.files import check_private
from analyzer.integrity import load_key
from analyzer.series import rejected_path

if TYPE_CHECKING:
    from analyzer.pipeline import Step
    from analyzer.sources import ReaderOptions, ReadResult


def add_command(sub: argparse._SubParsersAction, name: str, *, help: str,
                example: str) -> argparse.ArgumentParser:
    """A sub-parser whose --help ends with an example, as every command's must."""
    return sub.add_parser(
        name, help=help, description=help,
        epilog="example:\n" + textwrap.indent(example.strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-file", type=Path, metavar="FILE",
                        help="integrity key for the hash chain (HMAC-SHA256); must not be "
                             "readable by group or others")


def _check_private(path: Path) -> None:
    check_private(path, "key file")


def read_key_file(path: Path | None) -> bytes | None:
    """Load an integrity key, refusing a file others can read: a shared key forges chains."""
    if path is None:
        return None
    _check_private(path)
    return load_key(path)


def add_encryption_options(parser: argparse.ArgumentParser, *, reading: bool) -> None:
    parser.add_argument("--encryption-key-file", type=Path, metavar="FILE",
                        action="append" if reading else "store",
                        help="AES-256-GCM key (32 bytes or 64 hex digits) for the records' "
                             "sensitive fields" + (" (repeatable: old keys after a rotation)"
                                                   if reading else ""))
    if reading:
        parser.add_argument("--clear-only", action="store_true",
                            help="read encrypted records' clear fields only, without a key")


def read_encryption_keys(paths: list[Path] | Path | None) -> tuple[bytes, ...]:
    """Encryption keys from their files, each checked to be private."""
    from analyzer.crypto import load_encryption_key

    if paths is None:
        return ()
    keys = []
    for path in paths if isinstance(paths, list) else [paths]:
        _check_private(path)
        keys.append(load_encryption_key(path))
    return tuple(keys)


def sealing_key(args: argparse.Namespace) -> bytes | None:
    """The key a command seals what it writes into the trail with: the (first) key of
    ``--encryption-key-file``. An encrypted trail refuses a writer without it."""
    keys = read_encryption_keys(args.encryption_key_file)
    return keys[0] if keys else None


def parse_mapping(items: list[str] | None, *, option: str = "--map",
                  shape: str = "SOURCE=COLUMN") -> dict[str, str]:
    """``["src_addr=source_ip"]`` -> ``{"src_addr": "source_ip"}`` (also ``--set``'s pairs)."""
    mapping = {}
    for item in items or []:
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(f"{option} expects {shape}, got {item!r}")
        mapping[source.strip()] = target.strip()
    return mapping


class Progress:
    """Progress on stderr when it is a terminal; silent when piped or redirected.

    ``progress("reading...")`` shows a stage; :meth:`count` shows work done with its rate
    and, when the command knows the total (or the share done, e.g. of the input's bytes),
    the time left: ``exporting: 120,000 of 1,000,000 events (85,000/s, ETA 0:10)``.
    """

    #: Seconds between two updates of a count (a terminal redrawn per batch is slow).
    INTERVAL = 0.2

    def __init__(self, enabled: bool | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._clock = clock
        self._started: float | None = None
        self._shown = -float("inf")

    def __call__(self, message: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\x1b[K{message}")
            sys.stderr.flush()

    def count(self, what: str, done: int, total: int | None = None, *,
              unit: str = "events", share: float | None = None, final: bool = False,
              elapsed: float | None = None) -> None:
        """Show ``done`` of ``total`` ``unit`` with the rate since the first count (or over
        ``elapsed`` seconds), and the time left from ``total`` or from ``share`` (0..1)."""
        if not self.enabled:
            return
        now = self._clock()
        if self._started is None:
            self._started = now
        if not final and now - self._shown < self.INTERVAL:
            return
        self._shown = now
        self(self.describe(what, done, total, unit=unit, share=share,
                           elapsed=now - self._started if elapsed is None else elapsed))

    @staticmethod
    def describe(what: str, done: int, total: int | None = None, *, unit: str = "events",
                 share: float | None = None, elapsed: float = 0.0) -> str:
        """The text of :meth:`count` (no clock, no terminal: what the tests check)."""
        text = f"{what}: {done:,}" + (f" of {total:,}" if total is not None else "") + \
            f" {unit}"
        if elapsed <= 0 or done <= 0:
            return text
        rate = done / elapsed
        if share is None and total:
            share = done / total
        details = [f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s"]
        if share is not None and 0 < share < 1:
            left = elapsed * (1 - share) / share
            details.append(f"ETA {int(left // 60)}:{int(left % 60):02d}")
        return f"{text} ({', '.join(details)})"

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def show_steps(progress: Progress) -> Callable[[Step], None]:
    """Draw a pipeline run's :class:`~analyzer.pipeline.Step` s with ``progress``: records
    read with their rate and the time left, the stage, the windows scored and their rate."""
    def show(step: Step) -> None:
        if step.stage == "reading":
            progress.count("reading", step.done, unit="records", share=step.share)
        elif step.stage == "windows":  # read in chunks: the windows of each block
            progress.count("windows", step.done, unit="windows", share=step.share,
                           elapsed=step.elapsed, final=step.share == 1.0)
        elif step.stage == "scored":
            progress.count("scored", step.done, unit=step.unit, elapsed=step.elapsed,
                           final=True)
        elif step.stage == "training":
            progress(f"training on {step.done:,} events...")
        else:
            progress(f"{step.stage} {step.done:,} events...")
    return show


def say(message: str) -> None:
    """Print a line for the user. Every line goes through :func:`printable`: a value from a
    log that slipped into a message unescaped still cannot drive the terminal (a value's
    own newlines are escaped where the value is formatted, with :func:`printable`)."""
    print(_safe_lines(message))


def warn(command: str, message: str) -> None:
    print(_safe_lines(f"audit-analyzer {command}: {message}"), file=sys.stderr)


def _safe_lines(message: str) -> str:
    return "\n".join(printable(line, keep="\t") for line in message.split("\n"))


def add_model_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """--model and how to trust it: a model file is a pickle, i.e. code."""
    parser.add_argument("--model", type=Path, required=required,
                        help="model file (.joblib) made by 'train'")
    parser.add_argument("--signing-key-file", type=Path, metavar="FILE",
                        help="key the model was signed with: the shared secret, or the "
                             "Ed25519 public key (PEM); default: your own signing key, "
                             "which 'train' creates on first use")
    parser.add_argument("--trust-unsigned-model", action="store_true",
                        help="DANGEROUS: load a model file without checking its signature. "
                             "A model file is a pickle: loading it runs the code inside it, "
                             "so whoever could write the file runs code as you. Only for "
                             "files you made yourself and kept where no one else can write")


def load_model_from_args(args: argparse.Namespace):
    """Load ``args.model`` under the signature policy: signed and checked, or trusted.

    Without ``--signing-key-file`` a model signed with a shared secret is checked with the
    user's own signing key (the one ``train`` signs with by default), so ``train`` then
    ``score`` on one machine just works and a model file someone else changed is refused.
    """
    from analyzer.persistence import load_model, read_model_header

    path = args.signing_key_file
    key = None
    if path is not None:
        try:
            is_public = path.read_bytes().lstrip().startswith(b"-----BEGIN PUBLIC KEY")
        except FileNotFoundError:
            raise SourceError(f"{path}: key file not found") from None
        # a public key is not a secret; a shared secret or private key must be private
        key = path.read_bytes().strip() if is_public else read_key_file(path)
    elif not args.trust_unsigned_model:
        header, _ = read_model_header(Path(args.model))
        if str(header.get("signature") or "").startswith("hmac-"):
            key = user_signing_key(create=False)
    model = load_model(args.model, key=key, trust_unsigned=args.trust_unsigned_model)
    # A trusted-unsigned file can hold any object: say so here, not as an AttributeError deep
    # in scoring. (Its code has run by now: that is what trusting it meant.)
    from analyzer.model import AuditModel

    if not isinstance(model, AuditModel):
        raise ModelLoadError(f"{args.model}: holds a {type(model).__name__}, not a model made "
                             "by 'train'; refusing to use it")
    return model


def user_signing_key_path() -> Path:
    """Where the user's own model signing key lives (XDG config folder)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "audit-analyzer" / "model-signing.key"


def user_signing_key(*, create: bool, command: str = "train") -> bytes | None:
    """The user's own model signing key; created (0600, in a 0700 folder) on first use.

    Its path is printed once, when it is made, so the user knows what to back up or pass to
    another machine with ``--signing-key-file``.
    """
    path = user_signing_key_path()
    if path.exists() or path.is_symlink():
        return read_key_file(path)
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return read_key_file(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    warn(command, f"created your model signing key {path} (models you train are signed "
                  "with it and checked with it when you score; keep it private)")
    return read_key_file(path)


def signing_key_for_saving(path: Path | None, command: str = "train") -> bytes:
    """The key a new model is signed with: ``--signing-key-file``, else the user's own."""
    key = read_key_file(path) if path is not None else user_signing_key(create=True,
                                                                         command=command)
    assert key is not None  # created above when missing
    return key


def add_reader_options(parser: argparse.ArgumentParser, *, decrypt: bool) -> None:
    """How to read the input logs: format, header mapping, syslog year and zone, and (when
    the command reads encrypted trails rather than writing one) decryption keys."""
    from analyzer.sources import FORMATS

    parser.add_argument("--format", choices=sorted(FORMATS),
                        help="input format (detected if omitted)")
    parser.add_argument("--map", action="append", metavar="SRC=COLUMN",
                        help="map a CSV header onto a normalized column (repeatable); "
                             "HEADER.key takes a key out of a column of dicts")
    parser.add_argument("--set", action="append", metavar="COLUMN=VALUE",
                        help="one value for a column the CSV lacks, e.g. outcome=success "
                             "(repeatable)")
    parser.add_argument("--mapping", type=Path, metavar="FILE",
                        help="declarative mapping for --format generic (JSON; see "
                             "docs/formats.md)")
    parser.add_argument("--year", type=int,
                        help="year of syslog timestamps (sshd; default: inferred)")
    parser.add_argument("--tz", help="time zone of syslog timestamps (sshd; default UTC)")
    parser.add_argument("--all-events", action="store_true",
                        help="keep Windows events outside the mapped set, as action "
                             "windows.<id> (or <channel>.<id>), instead of counting them "
                             "as skipped")
    if decrypt:
        add_encryption_options(parser, reading=True)
    add_rejected_option(parser)


def reader_options(args: argparse.Namespace, *, decrypt: bool) -> ReaderOptions:
    """Reader options from :func:`add_reader_options`, only those the user set.

    ``decrypt``: as given to :func:`add_reader_options`. Only commands that read encrypted
    trails take keys for their input; on the others (ingest) the encryption key is for what
    they write.
    """
    from analyzer.sources import ReaderOptions

    options: dict[str, Any] = {}
    if args.map:
        options["mapping"] = parse_mapping(args.map)
    if args.set:
        options["constants"] = parse_mapping(args.set, option="--set", shape="COLUMN=VALUE")
    if args.mapping:
        options["mapping"] = str(args.mapping)
    if args.year is not None:
        options["year"] = args.year
    if args.tz is not None:
        options["tz"] = args.tz
    if args.all_events:
        options["all_events"] = True
    if decrypt:
        if args.clear_only:
            options["clear_only"] = True
        if args.encryption_key_file:
            options["decrypt_keys"] = read_encryption_keys(args.encryption_key_file)
    return ReaderOptions(**options)


# -- where rejected lines go, and the accounting line of a read -----------------------------

def add_rejected_option(parser: argparse.ArgumentParser) -> None:
    """``--rejected PATH``: one rule for every reading command (see :func:`report_read`)."""
    parser.add_argument("--rejected", type=Path, metavar="PATH",
                        help="file (or folder) the malformed input lines are appended "
                             "to (default: beside the command's output as "
                             "OUTPUT.rejected, or INPUT.rejected in the current folder; "
                             "never in an input folder)")


def rejected_destination(args: argparse.Namespace, output: Path | None) -> Path | None:
    """Where the lines a read set aside go: ``--rejected``, else beside the command's output
    file, else ``<first input>.rejected`` in the current folder, never beside the inputs
    (they may be read-only, like /var/log, and are read again by the next run)."""
    inputs = args.inputs or []
    name = Path(str(inputs[0]).rstrip("/")).name if inputs else "input"
    name = rejected_path("".join(c for c in name if c not in "*?[]") or "input").name
    chosen = args.rejected
    if chosen is not None:
        return Path(chosen) / name if Path(chosen).is_dir() else Path(chosen)
    if output is not None and str(output) != "-":
        output = Path(output)
        return rejected_path(output)
    return Path(name) if inputs else None


def report_read(command: str, result: ReadResult, args: argparse.Namespace, *,
                output: Path | None = None) -> Path | None:
    """Set aside a read's rejected lines and print its one line of accounting and its notes.

    A destination that cannot be written is a warning naming it, never the end of the run:
    the lines are counted on the accounting line either way.
    """
    from analyzer.sources import write_rejected

    destination = None
    if result.rejected:
        destination = rejected_destination(args, output)
        if destination is not None:
            try:
                destination.parent.mkdir(parents=True, exist_ok=True)
                write_rejected(result.rejected, destination)
            except OSError as exc:
                warn(command, f"{destination}: cannot write the rejected lines: "
                              f"{exc.strerror or exc}; they are not kept")
                destination = None
    line = result.accounting(destination)
    if result.rejected:
        line += f"; first: {result.rejected[0].describe()}"
    warn(command, line)
    for note in result.notes:
        warn(command, note)
    return destination


def check_writable(path: Path, what: str = "output") -> None:
    """Fail before the work when ``path`` cannot be written, naming it (not after an hour of
    scoring, and not as "None: permission denied")."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a file for the {what}")
    if not folder.is_dir():
        raise SourceError(f"{path}: cannot write the {what}: {folder} is not a folder")
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK) or (target is folder and not os.access(folder, os.X_OK)):
        raise SourceError(f"{path}: permission denied (cannot write the {what} "
                          f"{'file' if target is path else 'in ' + str(folder)})")
