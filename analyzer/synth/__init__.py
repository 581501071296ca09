"""A synthetic AI-platform organisation with labelled attack scenarios.

Used by the demo, the tests and the benchmarks. :func:`generate` builds an organisation from a
:class:`SynthConfig`: a roster of people (roles, teams, home countries and cities, time zones,
working hours, usual models, datasets, secrets and configs), a few service accounts with
machine-like schedules from fixed addresses, weeks of normal activity, and, in the last days
only, labelled attack scenarios. Everything is drawn from ``numpy.random.default_rng(seed)``,
so the same configuration always gives the same events.

Attacks are injected **at normal volume**: an attack hour holds no more events than a busy
normal hour. What gives them away is who, what, where and when relative to the entity's own
past and its peers. Benign surprises are injected unlabelled, as false-alarm traps:

==============================  =============================================================
label (``scenario``)            what happens; labelled entities
==============================  =============================================================
``brute_force``                 one new address tries one account 12-35 times in under an
                                hour; the address and the targeted user
``password_spray``              one new address tries 8-20 accounts once each within an hour;
                                the address
``slow_password_spray``         one new address tries 1-3 accounts an hour, in about a third
                                of the hours of one to two days; the address
``account_takeover``            a login from a new country, then reads (and an export) of
                                datasets the victim never touched; the user and the address
``privilege_escalation``        a non-admin assigns roles and changes permissions, from their
                                usual place and hours; the user
``bulk_model_download``         an inference-only analyst downloads many models; the user
``service_account_interactive`` a service account logs in from an employee workstation in
                                office hours and reads secrets and data; the account
``offhours_export``             a data scientist exports datasets in the middle of their
                                night; the user
``outside_role``                an analyst or contractor reads other teams' sensitive data
                                and secrets, in their usual place and hours; the user
==============================  =============================================================

Benign (never labelled): travel (a new country and time zone, normal behaviour), busy days
(2-3x volume), new joiners (never-seen users with their role's normal pattern), home
addresses that change, mobile addresses, the odd late session and normal failures.

>>> org = generate(SynthConfig(users=12, days=14, attack_days=7, scenarios=("brute_force",)))
>>> sorted(org.labels["scenario"].unique())
['brute_force']
>>> bool((org.events["timestamp"] >= org.train_end).any())
True
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from analyzer.synth._assemble import (
    _assemble,
)
from analyzer.synth._attacks import (
    _Attacks,
)
from analyzer.synth._catalogue import (
    _NS_UTC,
    ALL_SCENARIOS,
    BENIGN_SURPRISES,
    EVIDENCE_SCENARIOS,
    QUIET_SCENARIOS,
    ROLES,
    SCENARIOS,
)
from analyzer.synth._config import (
    Organisation,
    SynthConfig,
    benchmark_config,
    evidence_attacks_config,
    holdout_config,
    quiet_attacks_config,
)
from analyzer.synth._lookalikes import (
    _Lookalikes,
)
from analyzer.synth._world import (
    _World,
)

__all__ = [
    "ALL_SCENARIOS",
    "BENIGN_SURPRISES",
    "EVIDENCE_SCENARIOS",
    "QUIET_SCENARIOS",
    "ROLES",
    "SCENARIOS",
    "Organisation",
    "SynthConfig",
    "benchmark_config",
    "evidence_attacks_config",
    "generate",
    "holdout_config",
    "quiet_attacks_config",
    "write_audit_log",
    "write_labels",
]
log = logging.getLogger(__name__)


# -- generation ----------------------------------------------------------------------------

def generate(config: SynthConfig | None = None) -> Organisation:
    """Generate an organisation: roster, normal activity, attacks and benign surprises.

    Parameters
    ----------
    config
        What to generate; the default configuration when omitted.

    Returns
    -------
    Organisation
        Events (sorted by time), labels, the train/score split, roster and narrative.
    """
    config = config or SynthConfig()
    rng = np.random.default_rng(config.seed)
    world = _World(config, rng)
    world.plan_surprises()
    normal = world.normal_activity()
    services = world.service_activity()
    attacks = _Attacks(world)
    for scenario in config.scenarios:
        for _ in range(config.instances_per_scenario):
            getattr(attacks, scenario)()
    # benign look-alikes last, from their own random stream, away from the attacks' victims
    look = _Lookalikes(world, attacks.used_users)
    if config.vpn_changes:
        normal = look.vpn_change(normal)
    if config.onboardings:
        look.team_onboarding()
    if config.weekend_releases:
        look.weekend_release()
    if config.evidence_routine:
        look.evidence_routine()
    parts = [normal, services, attacks.columns()]
    if look.rows:
        parts.append(look.columns())
    frame = _assemble(parts, config, world)
    labels = attacks.labels()
    train_end = config.start + pd.Timedelta(days=config.train_days)
    log.debug("generated %d events, %d labelled windows", len(frame), len(labels))
    return Organisation(
        config=config, events=frame, labels=labels, train_end=train_end,
        people=world.roster(), instances=attacks.instances(),
        surprises=pd.DataFrame(world.surprises,
                               columns=["kind", "user", "start", "end", "description"])
        .astype({"start": _NS_UTC, "end": _NS_UTC}),
    )


# -- writing -------------------------------------------------------------------------------

def write_audit_log(events: pd.DataFrame, path: str | os.PathLike[str], *,
                    key: bytes | str | os.PathLike[str] | None = None,
                    service: str = "ai-platform", rotate_bytes: int | None = None) -> int:
    """Write every event through the real :class:`~analyzer.logger.AuditLogger`.

    The result is a chained, verifiable audit trail, exactly what an application using the
    logger would have written. Returns the number of records written. Appends to an existing
    log, continuing its chain. With ``rotate_bytes`` the logger rotates the file at that
    size, leaving a rotated series (oldest files stamped, the newest at ``path``).
    """
    # imported here so that generating events does not need the logger
    from analyzer.logger import AuditLogger

    names = ["timestamp", "user", "action", "outcome", "source_ip", "resource", "level",
             "category", "country", "session", "bytes", "roles", "city", "host"]
    present = [c for c in names if c in events.columns]
    columns = {c: events[c].astype(object).where(events[c].notna(), None).tolist()
               for c in present if c != "timestamp"}
    stamps = events["timestamp"].dt.to_pydatetime() if len(events) else []
    count = 0
    logger = AuditLogger(path, service=service, key=key, durability="batch",
                         batch_records=4096, checkpoint_every=100_000,
                         rotate_bytes=rotate_bytes)
    try:
        for k, ts in enumerate(stamps):
            row = {c: columns[c][k] for c in columns}
            user = row.get("user") or None
            resource = row.get("resource") or None
            ip = row.get("source_ip") or None
            action = row["action"]
            outcome = row.get("outcome") or "unknown"
            message = f"{user or 'anonymous'} {action}" + (f" {resource}" if resource else "") \
                + (" failed" if outcome == "failure" else "")
            role = row.get("roles")
            category = row.get("category")
            logger.log(
                action, timestamp=ts, level=row.get("level") or "info", message=message,
                outcome=outcome, category=category or None,
                user=user, roles=(role,) if role else None,
                source_ip=ip, country=row.get("country") or None,
                city=row.get("city") or None, resource=resource,
                resource_type=resource.split("/", 1)[0] if resource and "/" in resource
                else None,
                bytes=int(row["bytes"]) if row.get("bytes") is not None else None,
                session=row.get("session") or None, host=row.get("host") or None,
            )
            count += 1
    finally:
        logger.close()
    return count


def write_labels(labels: pd.DataFrame, path: str | os.PathLike[str]) -> int:
    """Write labels as the evaluation CSV ``entity_type,entity,window_start,scenario``.

    ``window_start`` is written as ISO 8601 UTC with ``Z``. Returns the number of rows.
    """
    out = labels[["entity_type", "entity", "window_start", "scenario"]].copy()
    out["window_start"] = pd.to_datetime(out["window_start"], utc=True) \
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False, lineterminator="\n")
    return len(out)
