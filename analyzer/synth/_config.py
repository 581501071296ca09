"""The configuration of a synthetic organisation, and what generating one returns."""

from __future__ import annotations

import dataclasses

import pandas as pd

from analyzer.errors import ConfigError
from analyzer.synth._catalogue import (
    _DEFAULT_ROLE_MIX,
    _OFFICES,
    ALL_SCENARIOS,
    EVIDENCE_SCENARIOS,
    QUIET_SCENARIOS,
    ROLES,
    SCENARIOS,
)

# -- configuration and result --------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SynthConfig:
    """What organisation to generate.

    Parameters
    ----------
    seed
        Seed of ``numpy.random.default_rng``; everything is drawn from it.
    start
        First day (UTC midnight). The default is a Monday.
    days
        Days of activity.
    users
        People at the start (new joiners come on top).
    service_accounts
        Machine accounts with regular schedules from fixed addresses (up to 6 kinds, then
        numbered copies).
    attack_days
        Attacks and most benign surprises happen in the last ``attack_days`` days, which is
        the period to score; the days before are for training.
    scenarios
        Which attack scenarios to inject (see :data:`SCENARIOS`).
    events_per_user_day
        Typical events per person on a working day.
    instances_per_scenario
        How many times each scenario is injected (each against a different entity where the
        roster allows).
    attack_intensity
        Scales the number of events of each attack (1.0: as documented in the module).
    role_mix
        ``(role, share)`` pairs for the roster.
    offices
        Office names (keys of the office table) people are spread over.
    log_roles
        Whether events carry the user's role (a ``roles`` column); without it a detector
        has to find peer groups from co-access.
    work_start
        Mean local start of the working day, in hours.
    travellers, busy_days, new_joiners
        How many benign surprises of each kind to put in the scored period (one of each
        travel and joiner also happens during training, so that they are not unheard of).
    remote_share
        Mean share of days office workers work from home.
    onboardings, vpn_changes, weekend_releases
        Benign look-alikes in the scored period (each 0 or 1): a team joining at once, an
        office moving to new VPN addresses, a Saturday release. They draw from their own
        random stream, so turning them off leaves every other event as it was.
    evidence_routine
        1 adds, over the whole period, the benign look-alikes of :data:`EVIDENCE_SCENARIOS`
        (never labelled): a web front end's ordinary clients and a monitoring probe of
        ``/health``, an administrator's routine ``iam:CreateUser`` for new joiners, domain
        controllers replicating. From their own random stream, as the others.
    """

    seed: int = 7
    start: pd.Timestamp = dataclasses.field(
        default_factory=lambda: pd.Timestamp("2025-03-03", tz="UTC"))
    days: int = 21
    users: int = 60
    service_accounts: int = 4
    attack_days: int = 7
    scenarios: tuple[str, ...] = SCENARIOS
    events_per_user_day: float = 40.0
    instances_per_scenario: int = 3
    attack_intensity: float = 1.0
    role_mix: tuple[tuple[str, float], ...] = _DEFAULT_ROLE_MIX
    offices: tuple[str, ...] = ("us-nyc", "gb-lon", "de-ber", "in-blr", "us-sfo")
    log_roles: bool = True
    work_start: float = 9.0
    travellers: int = 2
    busy_days: int = 2
    new_joiners: int = 1
    remote_share: float = 0.3
    onboardings: int = 0
    vpn_changes: int = 0
    weekend_releases: int = 0
    evidence_routine: int = 0

    def __post_init__(self) -> None:
        start = pd.Timestamp(self.start)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        object.__setattr__(self, "start", start.normalize())
        object.__setattr__(self, "scenarios", tuple(self.scenarios))
        object.__setattr__(self, "offices", tuple(self.offices))
        object.__setattr__(self, "role_mix", tuple(tuple(r) for r in self.role_mix))
        unknown = [s for s in self.scenarios if s not in ALL_SCENARIOS]
        if unknown:
            raise ConfigError(f"unknown scenario(s): {', '.join(unknown)}; "
                              f"known: {', '.join(ALL_SCENARIOS)}")
        bad_roles = [r for r, _ in self.role_mix if r not in ROLES]
        if bad_roles:
            raise ConfigError(f"unknown role(s): {', '.join(bad_roles)}")
        bad_offices = [o for o in self.offices if o not in _OFFICES]
        if bad_offices or not self.offices:
            raise ConfigError(f"unknown office(s): {', '.join(bad_offices) or '(none)'}; "
                              f"known: {', '.join(_OFFICES)}")
        if self.users < 4:
            raise ConfigError("users must be at least 4")
        if self.days < 2 or not 1 <= self.attack_days < self.days:
            raise ConfigError("need days >= 2 and 1 <= attack_days < days")
        if self.events_per_user_day <= 0 or self.attack_intensity <= 0:
            raise ConfigError("events_per_user_day and attack_intensity must be positive")
        if min(self.service_accounts, self.travellers, self.busy_days, self.new_joiners,
               self.instances_per_scenario) < 0:
            raise ConfigError("counts must not be negative")

    @property
    def train_days(self) -> int:
        """Days before the scored period."""
        return self.days - self.attack_days


@dataclasses.dataclass(frozen=True, slots=True)
class Organisation:
    """A generated organisation.

    Attributes
    ----------
    config
        What it was generated from.
    events
        The normalized events frame (DESIGN contract 3), sorted by time. Extra columns:
        ``roles`` (the user's role; only when ``config.log_roles``) and ``city``.
    labels
        One row per labelled one-hour window: ``entity_type`` (``user`` or ``source_ip``),
        ``entity``, ``window_start`` (UTC hour), ``scenario``.
    train_end
        Start of the scored period: train on events before it, score those after.
    people
        The roster: one row per account (``user``, ``role``, ``team``, ``country``, ``city``,
        ``utc_offset``, ``work_start``, ``work_end`` (local hours), ``office``,
        ``workstation_ip``, ``home_ip``, ``service`` (bool), ``joined``).
    instances
        One row per injected attack: ``scenario``, ``entity_type``, ``entity``, ``start``,
        ``end``, ``events``, ``description``; the narrative for the demo.
    surprises
        One row per benign surprise: ``kind``, ``user``, ``start``, ``end``, ``description``.
    """

    config: SynthConfig
    events: pd.DataFrame
    labels: pd.DataFrame
    train_end: pd.Timestamp
    people: pd.DataFrame
    instances: pd.DataFrame
    surprises: pd.DataFrame

    @property
    def train_events(self) -> pd.DataFrame:
        """Events before :attr:`train_end`."""
        return self.events[self.events["timestamp"] < self.train_end].reset_index(drop=True)

    @property
    def test_events(self) -> pd.DataFrame:
        """Events from :attr:`train_end` on (the scored period)."""
        return self.events[self.events["timestamp"] >= self.train_end].reset_index(drop=True)


def holdout_config(seed: int = 101) -> SynthConfig:
    """A differently shaped organisation, to check a detector is not tuned to the default.

    More people and service accounts, four weeks, another role mix (analyst-heavy, fewer
    engineers), offices in other time zones, later working hours, no roles in the log,
    quieter and shorter attacks, more travel and busy days.
    """
    return SynthConfig(
        seed=seed, start=pd.Timestamp("2025-09-01", tz="UTC"), days=28, users=90,
        service_accounts=6, attack_days=7, events_per_user_day=25.0,
        instances_per_scenario=3, attack_intensity=0.7,
        role_mix=(("ml-engineer", 0.15), ("data-scientist", 0.2), ("analyst", 0.35),
                  ("admin", 0.05), ("contractor", 0.15), ("platform-engineer", 0.1)),
        offices=("sg-sin", "au-syd", "br-sao", "gb-lon"), log_roles=False, work_start=10.0,
        travellers=4, busy_days=4, new_joiners=2, remote_share=0.45,
    )


def quiet_attacks_config(seed: int = 7) -> SynthConfig:
    """The default organisation plus the attacks hourly counts cannot see
    (:data:`QUIET_SCENARIOS`) and their benign look-alikes (a team onboarding, a VPN change,
    a weekend release)."""
    # seven service accounts: the stable one that does one new thing must be one that the
    # interactive-use scenario has not already made unstable
    return SynthConfig(seed=seed, scenarios=SCENARIOS + QUIET_SCENARIOS, service_accounts=7,
                       onboardings=1, vpn_changes=1, weekend_releases=1)


def evidence_attacks_config(seed: int = 7) -> SynthConfig:
    """The default organisation plus the attacks the events' own evidence names
    (:data:`EVIDENCE_SCENARIOS`: web scanning and injection, cloud control-plane abuse,
    Windows credential access) and their routine look-alikes (``evidence_routine``)."""
    return SynthConfig(seed=seed, scenarios=SCENARIOS + EVIDENCE_SCENARIOS,
                       evidence_routine=1)


def benchmark_config(events: int = 1_000_000, *, seed: int = 7) -> SynthConfig:
    """A configuration whose log has roughly ``events`` events (three weeks, many people)."""
    # ~34 events per person-day on average (weekends included) at the default pace
    users = max(4, round(events / (21 * 34.0)))
    return SynthConfig(seed=seed, users=users, service_accounts=6,
                       instances_per_scenario=max(3, users // 100))
