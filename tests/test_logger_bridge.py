"""The logging bridge and the seed API keep every record a program hands them.

Issue #15 items 0 and 1: the original module's own documented example must run unchanged,
and ``logger.exception()`` (the records an audit trail most needs) must be written.
"""

from __future__ import annotations

import logging
import textwrap

import orjson
import pytest

from analyzer.integrity import verify_log
from analyzer.logger import AuditHandler, AuditLogger, setup_audit_logger


def records(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def flush(logger):
    for handler in logger.handlers:
        handler.flush()


@pytest.fixture
def bridged(log_path, key):
    """A stdlib logger whose records go through AuditHandler into ``log_path``."""
    audit = AuditLogger(log_path, key=key)
    logger = logging.getLogger(f"test.bridge.{log_path.parent.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = AuditHandler(audit)
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)
    handler.close()


def test_the_seed_modules_documented_example_runs_unchanged(tmp_path, monkeypatch):
    # The original module's usage, verbatim: string details, a level name as event type.
    seed = textwrap.dedent("""
        from analyzer import setup_audit_logger, log_audit_event

        audit_logger = setup_audit_logger()
        log_audit_event(audit_logger, 'ACCESS', 'User logged into the AI dashboard.')
        log_audit_event(setup_audit_logger('system_audit.log'), 'ERROR',
                        'Model inference pipeline failed at step 3.')
    """)
    monkeypatch.chdir(tmp_path)
    exec(compile(seed, "seed_example.py", "exec"), {"__name__": "__main__"})
    for name in ("audit.log", "system_audit.log"):
        logger = setup_audit_logger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    (access,) = records(tmp_path / "audit.log")
    (error,) = records(tmp_path / "system_audit.log")
    assert access["event"]["action"] == "ACCESS" and access["log"]["level"] == "info"
    assert access["message"] == "ACCESS: User logged into the AI dashboard."
    assert error["log"]["level"] == "error"
    assert error["message"] == "ERROR: Model inference pipeline failed at step 3."
    assert verify_log(tmp_path / "audit.log").ok and verify_log(tmp_path / "system_audit.log").ok


def test_seed_api_accepts_anything_printable_as_details(tmp_path):
    from analyzer import log_audit_event

    logger = setup_audit_logger(tmp_path / "a.log")
    log_audit_event(logger, "model_access", ["gpt-x", 3])
    log_audit_event(logger, "warning", None)
    log_audit_event(logger, "ERROR", "disk full", level=logging.CRITICAL)  # explicit wins
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    first, second, third = records(tmp_path / "a.log")
    assert first["message"] == "model_access: ['gpt-x', 3]"
    assert second["log"]["level"] == "warning" and second["message"] == "warning"
    assert third["log"]["level"] == "critical"


def test_logger_exception_keeps_the_record_and_its_traceback(bridged, log_path, key, capsys):
    try:
        raise RuntimeError("pipeline step 3 failed")
    except RuntimeError:
        bridged.exception("inference failed", extra={"action": "model.infer", "user": "bob"})
    bridged.info("after")
    flush(bridged)
    assert "Logging error" not in capsys.readouterr().err
    first, second = records(log_path)
    assert first["log"]["level"] == "error" and first["user"]["name"] == "bob"
    assert first["message"].startswith("inference failed\nTraceback (most recent call last):")
    assert "RuntimeError: pipeline step 3 failed" in first["message"]
    assert second["message"] == "after"
    assert verify_log(log_path, key=key).ok


def test_every_record_shape_is_written(bridged, log_path, capsys):
    bridged.info("stack here", stack_info=True)
    # arguments that do not fit the format: handed to the audit handler itself, since any
    # other handler on the way (pytest's own capture, in a full run) fails on them first
    audit_handler = next(h for h in bridged.handlers if isinstance(h, AuditHandler))
    audit_handler.handle(bridged.makeRecord(bridged.name, logging.INFO, __file__, 1,
                                            "%d requests", ("many",), None))
    bridged.info({"not": "a string"})             # non-string message
    bridged.log(25, "custom level between info and warning")
    bridged.warning("exc_info as a tuple", exc_info=(ValueError, ValueError("bad"), None))
    bridged.info("wrong field types", extra={"user": 42, "bytes": "lots", "action": 7})
    with pytest.raises(KeyError):                 # logging itself refuses reserved names
        bridged.info("x", extra={"message": "forged"})
    flush(bridged)
    assert "Logging error" not in capsys.readouterr().err
    stack, args, obj, custom, exc, typed = records(log_path)
    assert "Stack (most recent call last):" in stack["message"]
    assert "%d requests" in args["message"] and "'many'" in args["message"]
    assert obj["message"] == "{'not': 'a string'}"
    assert custom["log"]["level"] == "info"
    assert "ValueError: bad" in exc["message"]
    assert typed["event"]["action"] == "7" and typed["message"] == "wrong field types"
    assert typed["analyzer"]["fields"]["bytes"] == "'lots'"
    assert "field_error" in typed["analyzer"]
