"""Shared fixtures: small, named, built per test (no module-level random data)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest

from analyzer.logger import AuditLogger

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens", action="store_true", default=False,
        help="write the golden files under tests/golden from the current output instead of "
             "comparing with them (review the diff before committing)")


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test saying why."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (a fresh clone has no ../shared/data)")
    return path


def events_frame(rows: list[dict], *, action: str = "dataset.read") -> pd.DataFrame:
    """A normalized-looking frame from dicts, with defaults for the required columns (extra
    keys become the readers' optional columns)."""
    base = {"user": "alice", "action": action, "outcome": "success", "source_ip": "10.0.0.1",
            "resource": ""}
    data = pd.DataFrame([{**base, **r} for r in rows])
    data["timestamp"] = pd.to_datetime(data["timestamp"], utc=True, format="mixed")
    for col in ("user", "action", "outcome", "source_ip", "resource"):
        data[col] = data[col].astype("category")
    return data


@pytest.fixture(autouse=True)
def user_config_home(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own config folder, so the CLI's per-user signing key never lands in (or
    comes from) the home folder of whoever runs the tests."""
    home = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


@pytest.fixture
def key() -> bytes:
    return b"test-integrity-key-0123456789abcdef"


@pytest.fixture
def key_file(tmp_path: Path, key: bytes) -> Path:
    path = tmp_path / "audit.key"
    path.write_bytes(key + b"\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def write_sample_log(path: Path, *, key: bytes | None, n: int = 20) -> Path:
    """A chained log of ``n`` varied events."""
    users = ["alice", "bob", "carol"]
    with AuditLogger(path, key=key, service="test") as audit:
        for i in range(n):
            audit.log("dataset.read" if i % 3 else "login", user=users[i % 3],
                      outcome="failure" if i % 7 == 0 else "success",
                      source_ip=f"10.0.0.{i % 5 + 1}", resource=f"datasets/d{i % 4}",
                      message=f"event {i}")
    return path


@pytest.fixture
def sample_log(log_path: Path, key: bytes) -> Path:
    return write_sample_log(log_path, key=key)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on a free local port: a real AWS API over HTTP (CloudWatch Logs,
    S3), started once for the tests that need it and stopped after them."""
    server_mod = pytest.importorskip(
        "moto.server", reason="moto[server] is not installed (pip install 'moto[server]')")
    pytest.importorskip("flask", reason="moto[server] is not installed (needs flask)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server of the module's own (started by ``services.postgres``, stopped
    after the module); yields the URL of its empty ``audit`` database. Skips, with the
    reason, where the server or psycopg is missing; a server that fails to start fails."""
    from services import Unavailable, postgres

    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres())
        except Unavailable as exc:
            pytest.skip(str(exc))
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield url
