"""Coverage-guided fuzzing (atheris/libFuzzer) of the readers, verify and the small parsers.

    python tests/fuzz/fuzz_parsers.py -runs=100000 -max_len=4096 [corpus_dir]

The first byte picks the target; the rest is the input. Any exception other than the
project's own AnalyzerError is a finding (libFuzzer stops and writes the crashing input).
``tests/test_fuzz.py`` runs a short campaign of this harness in CI; the hypothesis tests there
cover the same targets with mutations of valid seeds.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["analyzer"]):
    from analyzer.errors import AnalyzerError
    from analyzer.integrity import read_checkpoints, verify_log
    from analyzer.persistence import read_model_header
    from analyzer.sources import read_events
    from analyzer.suppression import parse_suppressions

FORMATS = ("jsonl", "csv", "sshd", "cloudtrail", "windows", "k8s", "weblog")
_DIR = tempfile.mkdtemp(prefix="audit-fuzz-")
_PATH = os.path.join(_DIR, "input")


def _targets(data: bytes):
    yield from (lambda fmt=fmt: read_events(_PATH, format=fmt) for fmt in FORMATS)
    yield lambda: verify_log(_PATH, key=b"fuzz-integrity-key-0123456789")
    yield lambda: read_checkpoints(_PATH)
    yield lambda: read_model_header(_PATH)
    yield lambda: parse_suppressions(data.decode("utf-8", "replace"))


TARGETS = len(FORMATS) + 4


def test_one_input(raw: bytes) -> None:
    if not raw:
        return
    choice, data = raw[0] % TARGETS, raw[1:]
    with open(_PATH, "wb") as out:
        out.write(data)
    target = list(_targets(data))[choice]
    with contextlib.suppress(AnalyzerError):  # the project's own error is a fine answer
        target()


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
