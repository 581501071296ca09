"""``train`` then ``score`` on one machine just works, and stays safe (issue #15 item 10).

Without ``--signing-key-file`` the CLI signs with the user's own key, made on first use in
the user's config folder (each test has its own: see ``user_config_home`` in conftest), and
checks models with it; a model file changed by someone else is refused before unpickling.
"""

from __future__ import annotations

import stat

import pytest

from analyzer.cli import main
from analyzer.synth import SynthConfig, generate, write_audit_log


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=8, days=6, attack_days=2, seed=5))


@pytest.fixture
def logs(tmp_path, org):
    history, today = tmp_path / "history.jsonl", tmp_path / "today.jsonl"
    write_audit_log(org.train_events, history)
    write_audit_log(org.test_events, today)
    return history, today


def test_train_then_score_needs_no_key_option_and_makes_the_key_once(
        tmp_path, logs, user_config_home, capsys):
    history, today = logs
    model = tmp_path / "m.joblib"
    assert main(["train", str(history), "--model", str(model)]) == 0
    key = user_config_home / "audit-analyzer" / "model-signing.key"
    err = capsys.readouterr().err
    assert f"created your model signing key {key}" in err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert main(["score", str(today), "--model", str(model), "--no-write-back"]) == 0
    # a second model: the same key, not announced again
    assert main(["train", str(history), "--model", str(tmp_path / "n.joblib")]) == 0
    assert "created your model signing key" not in capsys.readouterr().err


def test_a_model_signed_by_someone_else_is_refused(tmp_path, logs, user_config_home,
                                                   monkeypatch, capsys):
    history, today = logs
    model = tmp_path / "m.joblib"
    assert main(["train", str(history), "--model", str(model)]) == 0
    # another user (another config folder, another key) scores with their own key
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "someone-else"))
    main(["train", str(history), "--model", str(tmp_path / "theirs.joblib")])
    capsys.readouterr()
    assert main(["score", str(today), "--model", str(model), "--no-write-back"]) == 2
    assert "signature does not match" in capsys.readouterr().err


def test_an_unsigned_model_is_refused_without_the_dangerous_flag(tmp_path, logs, capsys):
    from analyzer.model import AuditModel
    from analyzer.persistence import save_model
    from analyzer.sources import read_events

    history, today = logs
    model = tmp_path / "unsigned.joblib"
    save_model(AuditModel(n_estimators=20).fit(read_events(history).frame), model)
    assert main(["score", str(today), "--model", str(model), "--no-write-back"]) == 2
    assert "is not signed" in capsys.readouterr().err
    assert main(["score", str(today), "--model", str(model), "--no-write-back",
                 "--trust-unsigned-model"]) == 0


def test_the_dangerous_flag_says_it_runs_the_files_code(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "loading it runs the code inside it" in help_text
