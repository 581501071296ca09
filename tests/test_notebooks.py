"""Both notebooks run top to bottom with the project's kernel on a small synthetic organisation.

Each notebook ends with checks of its own; the test also checks what they left behind: the
retrained artifact loads and is current, the promotion is in the audit trail, the comparison
table and the plots were produced.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat", reason="needs the 'notebooks' extra")
nbclient = pytest.importorskip("nbclient", reason="needs the 'notebooks' extra")
pytest.importorskip("matplotlib", reason="needs the 'notebooks' extra")

from analyzer.evaluation import holdout_split  # noqa: E402
from analyzer.logger import AuditLogger  # noqa: E402
from analyzer.model import AuditModel  # noqa: E402
from analyzer.persistence import load_model  # noqa: E402
from analyzer.registry import ModelRegistry  # noqa: E402
from analyzer.synth import SynthConfig, generate, write_audit_log, write_labels  # noqa: E402

pytestmark = pytest.mark.integration

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run(name: str, cwd: Path, parameters: dict) -> nbformat.NotebookNode:
    """Execute a notebook with its first (parameters) cell overridden."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    first = book.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    first.source += "\n\n# injected by the test\n" + "\n".join(
        f"{k} = {v!r}" for k, v in parameters.items())
    client = nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return book


def outputs(book, kind: str) -> list:
    return [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if kind in o.get("data", {})]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    # the kernel is a separate process: it must import this checkout, and draw inline
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH", "")]))
    # the trail ends about now, as a real one does: the promotion below lands in it
    start = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=7)
    org = generate(SynthConfig(users=10, days=8, attack_days=2, seed=3, start=start))
    log, labels = tmp_path / "audit.jsonl", tmp_path / "labels.csv"
    write_audit_log(org.events, log)
    write_labels(org.labels, labels)
    # a current model to compare the candidate with, trained on the oldest days
    history, _ = holdout_split(org.events, days=4)
    registry = ModelRegistry(tmp_path / "models")
    key_file = tmp_path / "model.key"
    key_file.write_text("notebook-model-signing-key")
    key_file.chmod(0o600)
    registry.register(AuditModel(n_estimators=30).fit(history), "acme",
                      key=b"notebook-model-signing-key")
    with AuditLogger(log) as audit:
        registry.promote("acme-1", audit=audit)
    return tmp_path, log, labels, registry


def test_retrain_notebook_registers_compares_and_promotes(workspace):
    tmp_path, log, labels, registry = workspace
    book = run("retrain.ipynb", tmp_path, {
        "HISTORY": str(log), "LABELS": str(labels), "MODELS_DIR": str(registry.root),
        "NAME": "acme", "RECENT_DAYS": 2, "CAPACITY": 5,
        "KEY_FILE": str(tmp_path / "model.key")})
    current = registry.current()
    assert current is not None and current.name == "acme-2.joblib"
    assert load_model(current, key=b"notebook-model-signing-key").metadata["name"] == "acme-2"
    assert "## Evaluation" in current.with_suffix(".md").read_text()
    actions = [orjson.loads(x)["event"]["action"] for x in log.read_bytes().splitlines()]
    assert actions.count("model.promote") == 2
    tables = [o["data"]["text/html"] for o in outputs(book, "text/html")]
    assert any("gained" in t or "kept" in t for t in tables), "no comparison table"
    assert outputs(book, "image/png"), "no plot"


def test_explore_notebook_plots_drift_alerts_and_a_timeline(workspace):
    tmp_path, log, _, registry = workspace
    book = run("explore.ipynb", tmp_path, {"LOG": str(log), "MODELS_DIR": str(registry.root),
                                           "RECENT_DAYS": 2,
                                           "KEY_FILE": str(tmp_path / "model.key")})
    assert len(outputs(book, "image/png")) >= 3  # distributions, drift, timeline
    text = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "PSI" in text and "ok" in text


@pytest.mark.parametrize("name", ["explore.ipynb", "retrain.ipynb"])
def test_notebooks_run_with_their_shipped_parameters(name, tmp_path, monkeypatch):
    # as a user opening the notebook in JupyterLab would: nothing injected, a synthetic
    # organisation, the registry in ./models of the notebook's folder
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH", "")]))
    book = run(name, tmp_path, {})
    assert outputs(book, "image/png"), "no plot"
    assert (tmp_path / "models").is_dir() or name == "explore.ipynb"


def test_committed_notebooks_have_no_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        book = nbformat.read(path, as_version=4)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
