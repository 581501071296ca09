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

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyzer.errors import ConfigError
from analyzer.events import infer_category
from analyzer.sources._base import build_frame

__all__ = [
    "BENIGN_SURPRISES",
    "ROLES",
    "SCENARIOS",
    "Organisation",
    "SynthConfig",
    "benchmark_config",
    "generate",
    "holdout_config",
    "write_audit_log",
    "write_labels",
]

log = logging.getLogger(__name__)

#: Every attack scenario, in the order they are injected.
SCENARIOS: tuple[str, ...] = (
    "brute_force",
    "password_spray",
    "slow_password_spray",
    "account_takeover",
    "privilege_escalation",
    "bulk_model_download",
    "service_account_interactive",
    "offhours_export",
    "outside_role",
)

#: The kinds of benign surprise (recorded in :attr:`Organisation.surprises`, never labelled).
BENIGN_SURPRISES: tuple[str, ...] = ("travel", "busy_day", "new_joiner")

HOUR_NS = 3_600 * 10**9
_NS_UTC = "datetime64[ns, UTC]"
DAY_S = 86_400

# -- the world: actions, roles, places -----------------------------------------------------

#: action -> the kind of resource it acts on ("" for none)
_ACTIONS: tuple[tuple[str, str], ...] = (
    ("model.inference", "model"),
    ("model.download", "model"),
    ("model.upload", "model"),
    ("model.delete", "model"),
    ("dataset.read", "dataset"),
    ("dataset.write", "dataset"),
    ("dataset.export", "dataset"),
    ("secret.read", "secret"),
    ("config.change", "config"),
    ("permission.change", "policy"),
    ("role.assign", "role"),
    ("user.create", "iamuser"),
    ("login", ""),
    ("logout", ""),
    ("token.refresh", ""),
    ("config.read", "config"),
)
_ACTION_NAMES = tuple(a for a, _ in _ACTIONS)
_A = {a: i for i, a in enumerate(_ACTION_NAMES)}
_RTYPES = ("model", "dataset", "secret", "config", "policy", "role", "iamuser")

#: role -> relative weight of each activity action (login/logout are per session). An
#: analyst only runs inference and reads reports; only admins touch IAM.
ROLES: Mapping[str, Mapping[str, float]] = {
    "ml-engineer": {"model.inference": 30, "model.download": 6, "model.upload": 3,
                    "model.delete": 0.3, "dataset.read": 20, "dataset.write": 6,
                    "dataset.export": 0.3, "secret.read": 1.5, "config.change": 2},
    "data-scientist": {"model.inference": 18, "model.download": 2, "model.upload": 0.8,
                       "dataset.read": 35, "dataset.write": 9, "dataset.export": 1.2,
                       "secret.read": 0.3, "config.change": 0.3},
    "analyst": {"model.inference": 60, "dataset.read": 8},
    "admin": {"model.inference": 3, "dataset.read": 3, "secret.read": 3, "config.change": 5,
              "permission.change": 5, "role.assign": 3, "user.create": 1.2},
    "contractor": {"model.inference": 12, "dataset.read": 25, "dataset.write": 6},
    "platform-engineer": {"model.inference": 8, "model.upload": 3, "model.download": 2,
                          "model.delete": 0.8, "dataset.read": 3, "secret.read": 6,
                          "config.change": 12, "config.read": 4},
}
_ROLE_NAMES = tuple(ROLES)
#: relative activity of each role (events per active hour)
_ROLE_PACE = {"ml-engineer": 1.1, "data-scientist": 1.0, "analyst": 1.2, "admin": 0.6,
              "contractor": 0.8, "platform-engineer": 0.9}

_DEFAULT_ROLE_MIX: tuple[tuple[str, float], ...] = (
    ("ml-engineer", 0.25), ("data-scientist", 0.25), ("analyst", 0.2), ("admin", 0.06),
    ("contractor", 0.12), ("platform-engineer", 0.12),
)

_TEAMS = ("fraud", "search", "recsys", "nlp", "vision", "forecasting")

#: office -> (country, city, UTC offset in hours)
_OFFICES: Mapping[str, tuple[str, str, float]] = {
    "us-nyc": ("US", "New York", -5), "us-sfo": ("US", "San Francisco", -8),
    "gb-lon": ("GB", "London", 0), "de-ber": ("DE", "Berlin", 1),
    "in-blr": ("IN", "Bengaluru", 5.5), "sg-sin": ("SG", "Singapore", 8),
    "br-sao": ("BR", "Sao Paulo", -3), "au-syd": ("AU", "Sydney", 10),
}
#: where remote contractors live
_REMOTE: tuple[tuple[str, str, float], ...] = (
    ("PL", "Warsaw", 1), ("CA", "Toronto", -5), ("ES", "Madrid", 1), ("PT", "Lisbon", 0),
    ("UA", "Kyiv", 2), ("AR", "Buenos Aires", -3),
)
#: where people travel
_TRAVEL: tuple[tuple[str, str, float], ...] = (
    ("JP", "Tokyo", 9), ("FR", "Paris", 1), ("SG", "Singapore", 8), ("AU", "Sydney", 10),
    ("MX", "Mexico City", -6), ("NL", "Amsterdam", 1), ("IT", "Milan", 1),
    ("US", "Austin", -6), ("AE", "Dubai", 4), ("KR", "Seoul", 9),
)
#: where attacks come from: a mix of hosting providers in ordinary countries and elsewhere
_ATTACK_ORIGINS: tuple[tuple[str, str], ...] = (
    ("RU", "Moscow"), ("CN", "Shanghai"), ("NG", "Lagos"), ("VN", "Hanoi"),
    ("RO", "Bucharest"), ("US", "Ashburn"), ("NL", "Amsterdam"), ("BR", "Sao Paulo"),
    ("DE", "Frankfurt"), ("SG", "Singapore"), ("IN", "Mumbai"), ("KR", "Seoul"),
)
#: first octets of the (synthetic) public address space of each country
_PREFIX: Mapping[str, tuple[int, ...]] = {
    "US": (23, 34, 52, 66, 98), "GB": (51, 81, 86), "DE": (46, 77, 91), "IN": (49, 103, 117),
    "SG": (101, 116), "BR": (177, 186, 200), "AU": (1, 110, 120), "PL": (31, 83),
    "CA": (24, 70, 99), "ES": (80, 88), "PT": (85, 94), "UA": (37, 93), "AR": (181, 190),
    "JP": (106, 126, 153), "FR": (82, 90), "MX": (187, 189), "NL": (145, 185),
    "IT": (87, 151), "AE": (5, 94), "KR": (112, 121), "RU": (95, 178), "CN": (36, 58, 111),
    "NG": (41, 102, 105), "VN": (14, 113, 171), "RO": (79, 89, 109),
}

_FIRST = ("alice", "bob", "carol", "dan", "erin", "frank", "grace", "heidi", "ivan", "judy",
          "ken", "lena", "mallory", "nina", "oscar", "peggy", "quinn", "rupert", "sybil",
          "trent", "uma", "victor", "wendy", "xavier", "yara", "zoe", "arjun", "bea", "chen",
          "dmitri", "elif", "farah", "goran", "hana", "ines", "jonas", "kofi", "lucia",
          "mateo", "noor", "olu", "priya", "rafael", "sana", "tomas", "ugo", "vera", "wei",
          "yusuf", "zainab")
_LAST = ("ng", "smith", "garcia", "mueller", "kumar", "rossi", "tanaka", "okafor", "silva",
         "novak", "kim", "brown", "petrov", "haddad", "jensen", "lopez", "murphy", "sato",
         "dubois", "fischer", "wang", "ali", "cohen", "costa", "ivanova")

_MODEL_ARCH = ("gbm", "bert", "resnet", "xgb", "lstm", "t5", "vit", "llm", "ranker", "embed")
_DATA_KIND = ("features", "labels", "events", "train", "eval", "raw", "clicks", "images",
              "transactions", "corpus", "annotations", "snapshots")
_SHARED_DATASETS = ("dataset/reports-weekly", "dataset/reports-kpi", "dataset/reports-exec",
                    "dataset/reports-usage")
_SHARED_MODELS = ("model/shared-embeddings-v2", "model/llm-assistant-v1")
#: resource -> the teams (or roles, with a "role:" prefix) allowed to use it routinely
_SENSITIVE: Mapping[str, tuple[str, ...]] = {
    "dataset/customers-pii": ("recsys",), "dataset/payments-raw": ("fraud",),
    "dataset/hr-salaries": ("role:admin",), "dataset/credit-bureau-extract": ("fraud",),
    "secret/prod-db-password": ("role:platform-engineer",),
    "secret/cloud-root-key": ("role:admin",),
    "secret/payment-gateway-key": ("fraud",),
}

_SERVICE_TEMPLATES: tuple[dict[str, Any], ...] = (
    # name, period (minutes), hours of day active (UTC) or None for always, action mix
    {"name": "svc-inference-gateway", "period": 6, "hours": None,
     "mix": {"model.inference": 1.0}, "burst": (1, 3)},
    {"name": "svc-feature-etl", "period": 60, "hours": None,
     "mix": {"dataset.read": 0.7, "dataset.write": 0.3}, "burst": (6, 11)},
    {"name": "svc-training-pipeline", "period": 20, "hours": (1, 5),
     "mix": {"dataset.read": 0.8, "model.upload": 0.2}, "burst": (2, 6)},
    {"name": "svc-monitoring", "period": 10, "hours": None,
     "mix": {"config.read": 0.8, "model.inference": 0.2}, "burst": (1, 2)},
    {"name": "svc-batch-scoring", "period": 30, "hours": None,
     "mix": {"model.inference": 0.8, "dataset.read": 0.2}, "burst": (2, 5)},
    {"name": "svc-backup", "period": 30, "hours": (22, 24),
     "mix": {"dataset.read": 1.0}, "burst": (3, 8)},
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

    def __post_init__(self) -> None:
        start = pd.Timestamp(self.start)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        object.__setattr__(self, "start", start.normalize())
        object.__setattr__(self, "scenarios", tuple(self.scenarios))
        object.__setattr__(self, "offices", tuple(self.offices))
        object.__setattr__(self, "role_mix", tuple(tuple(r) for r in self.role_mix))
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise ConfigError(f"unknown scenario(s): {', '.join(unknown)}; "
                              f"known: {', '.join(SCENARIOS)}")
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


def benchmark_config(events: int = 1_000_000, *, seed: int = 7) -> SynthConfig:
    """A configuration whose log has roughly ``events`` events (three weeks, many people)."""
    # ~34 events per person-day on average (weekends included) at the default pace
    users = max(4, round(events / (21 * 34.0)))
    return SynthConfig(seed=seed, users=users, service_accounts=6,
                       instances_per_scenario=max(3, users // 100))


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
    parts = [normal, services, attacks.columns()]
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


class _IPs:
    """Hands out unique synthetic addresses."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def public(self, country: str, n: int = 1) -> list[str]:
        prefixes = _PREFIX.get(country, (60,))
        out: list[str] = []
        while len(out) < n:
            first = prefixes[int(self.rng.integers(len(prefixes)))]
            rest = self.rng.integers(1, 255, size=3)
            ip = f"{first}.{rest[0]}.{rest[1]}.{rest[2]}"
            if ip not in self.used:
                self.used.add(ip)
                out.append(ip)
        return out


class _World:
    """The roster and resources, and the normal activity drawn from them."""

    def __init__(self, config: SynthConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        self.ips = _IPs(rng)
        self.surprises: list[tuple[str, str, pd.Timestamp, pd.Timestamp, str]] = []
        self._build_resources()
        self._build_roster()

    # -- resources ---------------------------------------------------------------------

    def _build_resources(self) -> None:
        rng = self.rng
        names: list[str] = []
        rtype: list[str] = []
        team: list[str] = []
        sizes: list[float] = []

        def add(name: str, kind: str, owner: str, size: float) -> None:
            names.append(name)
            rtype.append(kind)
            team.append(owner)
            sizes.append(size)

        for t in _TEAMS:
            archs = rng.permutation(len(_MODEL_ARCH))[:6]
            for a in archs:
                add(f"model/{t}-{_MODEL_ARCH[a]}-v{int(rng.integers(1, 6))}", "model", t,
                    float(rng.lognormal(np.log(1.5e9), 1.0)))
            kinds = rng.permutation(len(_DATA_KIND))[:10]
            for k in kinds:
                add(f"dataset/{t}-{_DATA_KIND[k]}", "dataset", t,
                    float(rng.lognormal(np.log(4e7), 1.2)))
            for s in ("api-key", "warehouse-token"):
                add(f"secret/{t}-{s}", "secret", t, 0)
            for c in ("serving", "training", "alerts"):
                add(f"config/{t}-{c}", "config", t, 0)
            add(f"policy/{t}-data-access", "policy", t, 0)
        for d in _SHARED_DATASETS:
            add(d, "dataset", "shared", float(rng.lognormal(np.log(5e6), 0.8)))
        for m in _SHARED_MODELS:
            add(m, "model", "shared", float(rng.lognormal(np.log(3e9), 0.5)))
        for c in ("platform-gateway", "platform-quotas", "platform-registry", "platform-sso"):
            add(f"config/{c}", "config", "platform", 0)
        for s in ("platform-registry-token", "platform-ci-token"):
            add(f"secret/{s}", "secret", "platform", 0)
        for r in (*_ROLE_NAMES, "viewer", "owner"):
            add(f"role/{r}", "role", "iam", 0)
        add("policy/platform-admins", "policy", "iam", 0)
        for name in _SENSITIVE:
            kind = name.split("/", 1)[0]
            add(name, kind, "sensitive", float(rng.lognormal(np.log(2e8), 0.7)))
        self.res_names = np.array(names, dtype=object)
        self.res_type = np.array(rtype, dtype=object)
        self.res_team = np.array(team, dtype=object)
        self.res_size = np.array(sizes, dtype=float)
        self.res_index = {n: i for i, n in enumerate(names)}

    def _pool(self, kind: str, teams: Sequence[str]) -> np.ndarray:
        return np.flatnonzero((self.res_type == kind) & np.isin(self.res_team, list(teams)))

    # -- roster ------------------------------------------------------------------------

    def _build_roster(self) -> None:
        cfg, rng = self.config, self.rng
        n = cfg.users + cfg.new_joiners + 1  # one joiner during training as well
        roles, shares = zip(*cfg.role_mix, strict=True)
        p = np.array(shares, float) / sum(shares)
        role = rng.choice(len(roles), size=n, p=p)
        # every organisation has at least one admin and enough analysts to attack
        role_ids = [_ROLE_NAMES.index(r) for r in roles]
        role = np.array([role_ids[r] for r in role])
        for need, count in (("admin", 1), ("analyst", 3), ("data-scientist", 3),
                            ("ml-engineer", 2), ("platform-engineer", 1)):
            have = np.flatnonzero(role == _ROLE_NAMES.index(need))
            if len(have) < count:
                spare = [i for i in rng.permutation(n)
                         if _ROLE_NAMES[role[i]] in ("ml-engineer", "data-scientist",
                                                     "analyst", "contractor")
                         and np.sum(role == role[i]) > 3][: count - len(have)]
                role[spare] = _ROLE_NAMES.index(need)
        self.n = n
        self.role = role
        role_name = np.array(_ROLE_NAMES, dtype=object)[role]
        self.role_name = role_name
        product = np.array(_TEAMS, dtype=object)
        team = product[rng.integers(len(_TEAMS), size=n)]
        team[np.isin(role_name, ["admin", "platform-engineer"])] = "platform"
        self.team = team

        names: list[str] = []
        taken: set[str] = set()
        for _ in range(n):
            tries = 0
            while True:
                name = f"{_FIRST[rng.integers(len(_FIRST))]}.{_LAST[rng.integers(len(_LAST))]}"
                if tries > 5:  # large rosters run out of plain names, as real ones do
                    name += str(int(rng.integers(2, 100)))
                if name not in taken:
                    break
                tries += 1
            taken.add(name)
            names.append(name)
        self.user = np.array(names, dtype=object)

        offices = list(cfg.offices)
        office = np.array([offices[i] for i in rng.integers(len(offices), size=n)],
                          dtype=object)
        contractor = role_name == "contractor"
        country = np.array([_OFFICES[o][0] for o in office], dtype=object)
        city = np.array([_OFFICES[o][1] for o in office], dtype=object)
        tz = np.array([_OFFICES[o][2] for o in office], dtype=float)
        for i in np.flatnonzero(contractor):
            c, ci, z = _REMOTE[int(rng.integers(len(_REMOTE)))]
            country[i], city[i], tz[i], office[i] = c, ci, z, ""
        self.office, self.country, self.city, self.tz = office, country, city, tz

        owl = rng.random(n) < 0.1
        self.work_start = np.clip(rng.normal(cfg.work_start, 0.8, n) + owl * 3.0, 6.0, 14.0)
        self.work_len = np.clip(rng.normal(8.5, 0.6, n), 6.5, 10.5)
        pace = np.array([_ROLE_PACE[r] for r in role_name])
        self.rate = rng.lognormal(np.log(cfg.events_per_user_day / 2.45), 0.45, n) * pace
        self.p_remote = np.clip(rng.beta(2, 2 / max(cfg.remote_share, 1e-3) - 2, n), 0, 1) \
            if cfg.remote_share < 1 else np.ones(n)
        self.p_remote[contractor] = 1.0
        self.p_weekend = np.where(rng.random(n) < 0.3, rng.uniform(0.05, 0.3, n), 0.0)
        self.p_late = rng.uniform(0.0, 0.06, n)
        # workstation addresses inside each office's private range
        self.workstation = np.empty(n, dtype=object)
        seen: set[str] = set()
        for i in range(n):
            self.workstation[i] = ""
            while office[i] and (not self.workstation[i] or self.workstation[i] in seen):
                o = offices.index(office[i]) + 1
                vlan, host = int(rng.integers(1, 30)), int(rng.integers(2, 250))
                self.workstation[i] = f"10.{o}.{vlan}.{host}"
            seen.add(self.workstation[i])
        self.ips.used |= seen

        # joiners: the last new_joiners people join on day 1 of the scored period, one more
        # (index n - new_joiners - 1) in the middle of training
        self.joined = np.zeros(n, dtype=int)
        td = cfg.train_days
        self.joined[n - cfg.new_joiners - 1] = max(1, td // 2)
        self.joined[n - cfg.new_joiners:] = td + 1
        for i in range(n - cfg.new_joiners - 1, n):
            self.surprises.append((
                "new_joiner", str(self.user[i]), self._day(self.joined[i]),
                self._day(cfg.days), f"{self.user[i]} ({role_name[i]}) joins"))
        self._build_favourites()

    def _day(self, d: int | float) -> pd.Timestamp:
        return self.config.start + pd.Timedelta(days=float(d))

    def _build_favourites(self) -> None:
        """Each person's usual resources of each kind, drawn from their team's pools."""
        rng, n = self.rng, self.n
        self.fav: dict[str, list[np.ndarray]] = {k: [] for k in _RTYPES}
        self.team_pool: dict[str, dict[str, np.ndarray]] = {k: {} for k in _RTYPES}
        for kind in _RTYPES:
            for t in (*_TEAMS, "platform"):
                teams = [t, "shared"] if kind in ("model", "dataset") else [t]
                if t == "platform":
                    teams = [*_TEAMS, "platform", "shared"] \
                        if kind in ("model", "config", "secret") else ["platform", "shared"]
                if kind in ("role", "policy"):
                    teams = [*_TEAMS, "iam"]
                self.team_pool[kind][t] = self._pool(kind, teams)
        self.global_pool = {k: self._pool(k, [*_TEAMS, "shared", "platform"])
                            for k in _RTYPES}
        reports = np.array([self.res_index[d] for d in _SHARED_DATASETS])
        for i in range(n):
            role, team = self.role_name[i], self.team[i]
            for kind in _RTYPES:
                pool = self.team_pool[kind][team]
                if kind == "iamuser":
                    pool = np.array([], dtype=int)
                k = {"model": (2, 6), "dataset": (3, 8), "secret": (1, 3), "config": (1, 3),
                     "policy": (2, 6), "role": (2, 5), "iamuser": (0, 1)}[kind]
                if role == "analyst" and kind == "dataset":
                    fav = rng.choice(reports, size=int(rng.integers(1, 4)), replace=False)
                    if rng.random() < 0.5 and len(pool):
                        fav = np.append(fav, rng.choice(pool))
                elif role == "platform-engineer" and kind in ("model", "config", "secret"):
                    fav = rng.choice(pool, size=min(len(pool), int(rng.integers(4, 9))),
                                     replace=False)
                elif len(pool):
                    fav = rng.choice(pool, size=min(len(pool), int(rng.integers(*k))),
                                     replace=False)
                else:
                    fav = np.array([], dtype=int)
                allowed = [r for r, who in _SENSITIVE.items()
                           if r.startswith(kind + "/") and (team in who or f"role:{role}" in who)]
                if allowed and role != "analyst" and rng.random() < 0.6:
                    fav = np.append(fav, [self.res_index[r] for r in allowed])
                self.fav[kind].append(np.asarray(fav, dtype=int))
        # padded matrices for vectorized choice
        self.fav_mat: dict[str, np.ndarray] = {}
        self.fav_n: dict[str, np.ndarray] = {}
        for kind in _RTYPES:
            lens = np.array([len(f) for f in self.fav[kind]])
            mat = np.zeros((n, max(1, lens.max())), dtype=int)
            for i, f in enumerate(self.fav[kind]):
                mat[i, : len(f)] = f
            self.fav_mat[kind], self.fav_n[kind] = mat, lens
        # IAM user objects: every account name
        extra = [f"user/{u}" for u in self.user]
        base = len(self.res_names)
        self.res_names = np.concatenate([self.res_names, np.array(extra, dtype=object)])
        self.res_type = np.concatenate([self.res_type, np.full(len(extra), "iamuser", object)])
        self.res_team = np.concatenate([self.res_team, np.full(len(extra), "iam", object)])
        self.res_size = np.concatenate([self.res_size, np.zeros(len(extra))])
        self.res_index.update({u: base + i for i, u in enumerate(extra)})
        iam = np.arange(base, base + len(extra))
        self.global_pool["iamuser"] = iam
        for t in self.team_pool["iamuser"]:
            self.team_pool["iamuser"][t] = iam

        # user x action weights: the role's mix, perturbed per person
        w = np.zeros((n, len(_ACTION_NAMES)))
        for i in range(n):
            for a, v in ROLES[self.role_name[i]].items():
                w[i, _A[a]] = v
        w *= rng.gamma(2.0, 0.5, size=w.shape)
        self.action_cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)

    # -- benign surprises --------------------------------------------------------------

    def plan_surprises(self) -> None:
        cfg, rng = self.config, self.rng
        td = cfg.train_days
        office_people = [i for i in range(cfg.users) if self.office[i]]
        pick = list(rng.permutation(office_people))
        self.busy = np.ones((self.n, cfg.days))
        self.trips: list[tuple[int, int, int, tuple[str, str, float], str]] = []
        reserved: set[int] = set()

        def trip(i: int, first: int, length: int) -> None:
            dest = [t for t in _TRAVEL if t[0] != self.country[i]]
            place = dest[int(rng.integers(len(dest)))]
            hotel = self.ips.public(place[0])[0]
            self.trips.append((i, first, first + length, place, hotel))
            self.surprises.append((
                "travel", str(self.user[i]), self._day(first), self._day(first + length),
                f"{self.user[i]} works from {place[1]}, {place[0]} for {length} days"))

        for _ in range(cfg.travellers):
            if pick:
                i = int(pick.pop())
                reserved.add(i)
                length = int(rng.integers(3, 6))
                first = td + int(rng.integers(0, max(1, cfg.attack_days - length + 1)))
                trip(i, first, min(length, cfg.days - first))
        if pick and td >= 5:
            i = int(pick.pop())  # someone also travelled during training
            trip(i, int(rng.integers(0, td - 3)), 3)
        for _ in range(cfg.busy_days):
            if pick:
                i = int(pick.pop())
                reserved.add(i)
                d = td + int(rng.integers(0, cfg.attack_days))
                d -= 2 if (self._day(d).day_of_week >= 5 and d - 2 >= td) else 0
                factor = float(rng.uniform(2.0, 3.0))
                self.busy[i, d] = factor
                self.surprises.append((
                    "busy_day", str(self.user[i]), self._day(d), self._day(d + 1),
                    f"{self.user[i]} has a busy day ({factor:.1f}x usual volume)"))
        self.reserved = reserved | set(range(cfg.users, self.n))

    # -- normal activity ---------------------------------------------------------------

    def home_ip(self, user: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Each person's home address on each day (it changes now and then)."""
        if not hasattr(self, "_home"):
            changes = self.rng.random((self.n, self.config.days)) < 0.03
            changes[:, 0] = False
            self._epoch = np.cumsum(changes, axis=1)
            self._home: dict[tuple[int, int], str] = {}
            for i in range(self.n):
                for e in range(int(self._epoch[i, -1]) + 1):
                    self._home[(i, e)] = self.ips.public(str(self.country[i]))[0]
        epochs = self._epoch[user, day]
        return np.array([self._home[(int(u), int(e))] for u, e in zip(user, epochs,
                                                                       strict=True)],
                        dtype=object)

    def usual_ip(self, i: int, day: int) -> str:
        """Where a person usually works from on a given day."""
        if self.workstation[i]:
            return str(self.workstation[i])
        return str(self.home_ip(np.array([i]), np.array([day]))[0])

    def normal_activity(self) -> dict[str, np.ndarray]:
        cfg, rng, n, days = self.config, self.rng, self.n, self.config.days
        dow = (cfg.start.day_of_week + np.arange(days)) % 7
        weekend = dow >= 5
        r = rng.random((n, days))
        active = np.where(weekend[None, :], r < self.p_weekend[:, None], r < 0.92)
        active &= np.arange(days)[None, :] >= self.joined[:, None]
        # a joiner always shows up on the first day
        active[np.arange(n), np.minimum(self.joined, days - 1)] |= self.joined > 0
        n_sess = active * np.minimum(1 + rng.poisson(0.7, (n, days)), 4)
        su, sd = np.nonzero(n_sess)
        reps = n_sess[su, sd]
        su, sd = np.repeat(su, reps), np.repeat(sd, reps)
        s = len(su)

        tz = self.tz[su].copy()
        country = self.country[su].copy()
        city = self.city[su].copy()
        remote = rng.random((n, days)) < self.p_remote[:, None]
        remote_s = remote[su, sd] | (self.workstation[su] == "")
        ip = np.where(remote_s, "", self.workstation[su]).astype(object)
        if remote_s.any():
            ip[remote_s] = self.home_ip(su[remote_s], sd[remote_s])
        mobile = rng.random(s) < 0.04
        for k in np.flatnonzero(mobile):
            ip[k] = self.ips.public(str(country[k]))[0]
        for i, first, last, place, hotel in self.trips:
            on = (su == i) & (sd >= first) & (sd < last)
            tz[on] = place[2]
            country[on], city[on] = place[0], place[1]
            ip[on] = hotel
            for k in np.flatnonzero(on & mobile):
                ip[k] = self.ips.public(place[0])[0]

        late = rng.random(s) < self.p_late[su]
        local = np.where(
            late, rng.uniform(19.0, 23.5, s),
            self.work_start[su] + rng.uniform(0, 1, s) * np.maximum(self.work_len[su] - 1, 1))
        dur = np.clip(rng.exponential(1.5, s), 0.2, 4.5)
        start = sd * DAY_S + (local - tz) * 3600.0
        n_ev = rng.poisson(self.rate[su] * dur * self.busy[su, sd]) + 1
        sess_id = _session_ids(rng, s)

        # activity events
        ev_s = np.repeat(np.arange(s), n_ev)
        t = start[ev_s] + rng.random(len(ev_s)) * dur[ev_s] * 3600.0 + 5.0
        user = su[ev_s]
        action = (rng.random(len(ev_s))[:, None] > self.action_cum[user]).sum(axis=1)
        action = np.minimum(action, len(_ACTION_NAMES) - 1)
        resource = self._choose_resources(user, action)
        fail = rng.random(len(ev_s)) < 0.008

        # login at the start (after a typo now and then), logout at the end most times
        typo = rng.random(s) < 0.05
        logout = rng.random(s) < 0.7
        li_s = np.concatenate([np.flatnonzero(typo), np.arange(s), np.flatnonzero(logout)])
        li_t = np.concatenate([start[typo] - rng.uniform(5, 40, typo.sum()), start,
                               start[logout] + dur[logout] * 3600.0 + 10.0])
        li_a = np.concatenate([np.full(typo.sum(), _A["login"]), np.full(s, _A["login"]),
                               np.full(logout.sum(), _A["logout"])])
        li_f = np.concatenate([np.ones(typo.sum(), bool), np.zeros(s + logout.sum(), bool)])

        all_s = np.concatenate([ev_s, li_s])
        cols = {
            "t": np.concatenate([t, li_t]),
            "user": np.concatenate([user, su[li_s]]),
            "action": np.concatenate([action, li_a]),
            "resource": np.concatenate([resource, np.full(len(li_s), -1)]),
            "fail": np.concatenate([fail, li_f]),
        }
        cols["ip"] = ip[all_s]
        cols["country"] = country[all_s]
        cols["city"] = city[all_s]
        cols["session"] = sess_id[all_s]
        return self._finish(cols)

    def _choose_resources(self, user: np.ndarray, action: np.ndarray) -> np.ndarray:
        rng = self.rng
        out = np.full(len(user), -1)
        kinds = np.array([k for _, k in _ACTIONS], dtype=object)[action]
        for kind in _RTYPES:
            idx = np.flatnonzero(kinds == kind)
            if not len(idx):
                continue
            u = user[idx]
            nf = self.fav_n[kind][u]
            # favourites, skewed towards the first ones; now and then the team's pool,
            # rarely anything in the organisation
            pick = (rng.random(len(idx)) ** 1.6 * np.maximum(nf, 1)).astype(int)
            chosen = self.fav_mat[kind][u, np.minimum(pick, self.fav_mat[kind].shape[1] - 1)]
            r = rng.random(len(idx))
            explore = (r > 0.94) | (nf == 0)
            teams = self.team[u]
            for t in np.unique(teams[explore]):
                sel = explore & (teams == t)
                pool = self.team_pool[kind][t]
                if len(pool):
                    chosen[sel] = rng.choice(pool, size=sel.sum())
            wide = r > 0.995
            if wide.any() and len(self.global_pool[kind]):
                chosen[wide] = rng.choice(self.global_pool[kind], size=wide.sum())
            out[idx] = chosen
        return out

    def _finish(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outcomes, bytes and names from the index columns."""
        rng = self.rng
        action, res = cols["action"], cols["resource"]
        size = np.where(res >= 0, self.res_size[np.maximum(res, 0)], 0.0)
        m = len(action)
        noise = rng.lognormal(0.0, 0.6, m)
        nbytes = np.full(m, -1.0)
        a = action
        infer = a == _A["model.inference"]
        nbytes[infer] = rng.lognormal(np.log(4e3), 0.8, infer.sum())
        model_io = np.isin(a, [_A["model.download"], _A["model.upload"]])
        nbytes[model_io] = size[model_io] * rng.uniform(0.99, 1.01, model_io.sum())
        read = a == _A["dataset.read"]
        nbytes[read] = size[read] * noise[read] * 0.3
        write = a == _A["dataset.write"]
        nbytes[write] = rng.lognormal(np.log(2e7), 1.0, write.sum())
        export = a == _A["dataset.export"]
        nbytes[export] = size[export] * rng.lognormal(0.0, 0.3, export.sum())
        cols["bytes"] = nbytes
        return cols

    # -- service accounts --------------------------------------------------------------

    def service_activity(self) -> dict[str, np.ndarray]:
        cfg, rng = self.config, self.rng
        self.services: list[dict[str, Any]] = []
        parts: list[dict[str, np.ndarray]] = []
        base = self.n
        span = cfg.days * DAY_S
        dc_country, dc_city = _OFFICES[cfg.offices[0]][:2]
        for k in range(cfg.service_accounts):
            tpl = _SERVICE_TEMPLATES[k % len(_SERVICE_TEMPLATES)]
            name = tpl["name"] + (f"-{k // len(_SERVICE_TEMPLATES) + 1}"
                                  if k >= len(_SERVICE_TEMPLATES) else "")
            ip = f"10.200.{k // 200}.{10 + k % 200}"
            self.ips.used.add(ip)
            period = tpl["period"] * 60
            ticks = np.arange(int(rng.integers(0, period)), span, period, dtype=float)
            if tpl["hours"] is not None:
                lo, hi = tpl["hours"]
                hour = (ticks % DAY_S) / 3600
                ticks = ticks[(hour >= lo) & (hour < hi)]
            burst = rng.integers(tpl["burst"][0], tpl["burst"][1] + 1, len(ticks))
            t = np.repeat(ticks, burst) + rng.uniform(0, 50, burst.sum())
            hourly = np.arange(int(rng.integers(0, 3600)), span, 3600, dtype=float)
            mix = tpl["mix"]
            acts = np.array([_A[a] for a in mix])
            action = acts[rng.choice(len(acts), size=len(t), p=np.array(list(mix.values())))]
            # a service touches a fixed set of resources, in rotation
            resource = np.full(len(t), -1)
            sid = base + k
            for a in np.unique(action):
                kind = _ACTIONS[a][1]
                pool = self.global_pool[kind]
                fixed = rng.choice(pool, size=min(len(pool), int(rng.integers(3, 8))),
                                   replace=False)
                sel = np.flatnonzero(action == a)
                resource[sel] = fixed[np.arange(len(sel)) % len(fixed)]
            self.services.append({"user": name, "ip": ip, "index": sid,
                                  "resources": np.unique(resource[resource >= 0]),
                                  "template": tpl["name"]})
            m = len(t) + len(hourly)
            cols = {
                "t": np.concatenate([t, hourly]),
                "user": np.full(m, sid),
                "action": np.concatenate([action, np.full(len(hourly), _A["token.refresh"])]),
                "resource": np.concatenate([resource, np.full(len(hourly), -1)]),
                "fail": rng.random(m) < 0.002,
                "ip": np.full(m, ip, dtype=object),
                "country": np.full(m, dc_country, dtype=object),
                "city": np.full(m, dc_city, dtype=object),
                "session": np.full(m, None, dtype=object),
            }
            parts.append(self._finish(cols))
        if not parts:
            return _empty_cols()
        return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}

    def account_names(self) -> np.ndarray:
        return np.concatenate([self.user, np.array([s["user"] for s in self.services],
                                                   dtype=object)])

    def account_roles(self) -> np.ndarray:
        return np.concatenate([self.role_name, np.full(len(self.services), "service", object)])

    def roster(self) -> pd.DataFrame:
        cfg = self.config
        self.home_ip(np.array([0]), np.array([0]))  # draws the home addresses if not yet
        people = pd.DataFrame({
            "user": self.user, "role": self.role_name, "team": self.team,
            "country": self.country, "city": self.city, "utc_offset": self.tz,
            "work_start": self.work_start.round(2),
            "work_end": (self.work_start + self.work_len).round(2),
            "office": self.office, "workstation_ip": self.workstation,
            "home_ip": [self._home.get((i, 0), "") for i in range(self.n)],
            "service": False,
            "joined": [self._day(d) for d in self.joined],
        })
        dc_country, dc_city = _OFFICES[cfg.offices[0]][:2]
        services = pd.DataFrame({
            "user": [s["user"] for s in self.services], "role": "service",
            "team": "platform", "country": dc_country, "city": dc_city, "utc_offset": 0.0,
            "work_start": 0.0, "work_end": 24.0, "office": "datacenter",
            "workstation_ip": [s["ip"] for s in self.services], "home_ip": "",
            "service": True, "joined": self._day(0),
        })
        return pd.concat([people, services], ignore_index=True).astype({"joined": _NS_UTC})


def _session_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 2**62, size=n, dtype=np.int64)
    return np.array([f"s-{v:016x}" for v in raw], dtype=object)


def _empty_cols() -> dict[str, np.ndarray]:
    return {"t": np.array([], float), "user": np.array([], int), "action": np.array([], int),
            "resource": np.array([], int), "fail": np.array([], bool),
            "ip": np.array([], object), "country": np.array([], object),
            "city": np.array([], object), "session": np.array([], object),
            "bytes": np.array([], float)}


# -- attacks -------------------------------------------------------------------------------

class _Attacks:
    """Injects labelled scenarios into the scored period and keeps their labels."""

    def __init__(self, world: _World) -> None:
        self.w = world
        self.rng = world.rng
        self.cfg = world.config
        self.rows: list[dict[str, Any]] = []
        self.label_rows: list[tuple[str, str, pd.Timestamp, str]] = []
        self.narrative: list[dict[str, Any]] = []
        self.used_users: set[int] = set(world.reserved)
        self.used_services: set[int] = set()
        self.first_day = self.cfg.train_days

    # helpers ---------------------------------------------------------------------------

    def _n(self, lo: int, hi: int) -> int:
        """An attack size, scaled by the configured intensity (at least 1)."""
        k = int(self.rng.integers(lo, hi + 1))
        return max(1, round(k * self.cfg.attack_intensity))

    def _day(self, *, weekday: bool = True) -> int:
        days = np.arange(self.first_day, self.cfg.days)
        if weekday:
            dow = (self.cfg.start.day_of_week + days) % 7
            if (dow < 5).any():
                days = days[dow < 5]
        return int(self.rng.choice(days))

    def _victim(self, roles: Sequence[str], *, fallback: Sequence[str] = ()) -> int:
        w = self.w
        for group in (roles, fallback, _ROLE_NAMES):
            cands = [i for i in range(self.cfg.users) if w.role_name[i] in group
                     and i not in self.used_users]
            if cands:
                i = int(self.rng.choice(cands))
                self.used_users.add(i)
                return i
        return int(self.rng.integers(self.cfg.users))  # tiny rosters: reuse someone

    def _work_time(self, i: int, day: int) -> float:
        """Seconds since start: inside person ``i``'s working hours on ``day``."""
        w = self.w
        local = w.work_start[i] + self.rng.uniform(1.0, max(1.5, w.work_len[i] - 2.5))
        return self._within(day * DAY_S + (local - w.tz[i]) * 3600.0, 3 * 3600)

    def _within(self, t: float, span: float) -> float:
        """Shift ``t`` by whole days so that ``[t, t + span]`` lies in the scored period."""
        first, end = self.first_day * DAY_S, self.cfg.days * DAY_S
        while t < first:
            t += DAY_S
        while t + span > end and t - DAY_S >= first:
            t -= DAY_S
        return t

    def _attacker_ip(self, *, avoid_country: str | None = None) -> tuple[str, str, str]:
        origins = [o for o in _ATTACK_ORIGINS if o[0] != avoid_country]
        country, city = origins[int(self.rng.integers(len(origins)))]
        return self.w.ips.public(country)[0], country, city

    def _event(self, t: float, user: int | str, action: str, *, ip: str, country: str,
               city: str, resource: int | str = -1, fail: bool = False,
               session: str | None = None, nbytes: float = -1.0) -> dict[str, Any]:
        row = {"t": t, "user": user, "action": _A.get(action, action),
               "resource": resource, "fail": fail, "ip": ip, "country": country,
               "city": city, "session": session, "bytes": nbytes}
        self.rows.append(row)
        return row

    def _record(self, scenario: str, rows: list[dict[str, Any]],
                entities: Sequence[tuple[str, str]], description: str) -> None:
        times = pd.to_datetime(np.array([r["t"] for r in rows]) * 1e9, utc=True) \
            + (self.cfg.start - pd.Timestamp(0, tz="UTC"))
        hours = times.floor("h").unique()
        for entity_type, entity in entities:
            for h in hours:
                self.label_rows.append((entity_type, entity, h, scenario))
            self.narrative.append({
                "scenario": scenario, "entity_type": entity_type, "entity": entity,
                "start": times.min(), "end": times.max(), "events": len(rows),
                "description": description})

    def _name(self, i: int) -> str:
        return str(self.w.user[i])

    def _sess(self) -> str:
        return str(_session_ids(self.rng, 1)[0])

    # scenarios -------------------------------------------------------------------------

    def brute_force(self) -> None:
        rng, w = self.rng, self.w
        i = self._victim(_ROLE_NAMES)
        ip, country, city = self._attacker_ip()
        day = self._day(weekday=False)
        t0 = self._within(day * DAY_S + rng.uniform(0, 23) * 3600, 3600)
        n = self._n(12, 35)
        span = rng.uniform(15, 50) * 60
        times = np.sort(t0 + rng.random(n) * span)
        rows = [self._event(t, i, "login", ip=ip, country=country, city=city, fail=True)
                for t in times]
        self._record("brute_force", rows, [("source_ip", ip), ("user", self._name(i))],
                     f"{n} failed logins for {w.user[i]} from {ip} ({country}) "
                     f"in {span / 60:.0f} minutes")

    def _spray(self, scenario: str, hours: int, per_hour: tuple[int, int],
               share: float) -> None:
        rng, w = self.rng, self.w
        ip, country, city = self._attacker_ip()
        day = self._day(weekday=False)
        span = hours * 3600.0
        if hours > 1:  # a slow spray starts anywhere it fits in the scored period
            room = max(0.0, (self.cfg.days - self.first_day) * DAY_S - span - 3600)
            t0 = self.first_day * DAY_S + rng.uniform(0, room)
        else:
            t0 = self._within(day * DAY_S + rng.uniform(0, 23) * 3600, 3600)
        # real account names (harvested from the web, say): guesses of names that do not
        # exist would be attack windows of made-up users, which no label could name well
        names = list(w.user[: self.cfg.users])
        rows = []
        for h in range(hours):
            if hours > 1 and rng.random() > share:
                continue
            k = self._n(*per_hour)
            for _ in range(k):
                who = int(rng.integers(len(names)))
                t = t0 + h * 3600 + rng.uniform(0, 3500 if hours > 1 else 40 * 60)
                rows.append(self._event(t, who, "login", ip=ip, country=country, city=city,
                                        fail=True))
        if not rows:  # a slow spray that drew no hour: one attempt still happens
            rows.append(self._event(t0, 0, "login", ip=ip, country=country, city=city,
                                    fail=True))
        users = len({r["user"] for r in rows})
        self._record(scenario, rows, [("source_ip", ip)],
                     f"{len(rows)} failed logins against {users} accounts from {ip} "
                     f"({country}) over {hours} hour(s)")

    def password_spray(self) -> None:
        self._spray("password_spray", 1, (8, 20), 1.0)

    def slow_password_spray(self) -> None:
        hours = min(int(self.rng.integers(24, 49)), self.cfg.attack_days * 24 - 2)
        self._spray("slow_password_spray", hours, (1, 3), 0.35)

    def account_takeover(self) -> None:
        rng, w = self.rng, self.w
        i = self._victim(("data-scientist", "ml-engineer", "contractor"))
        ip, country, city = self._attacker_ip(avoid_country=str(w.country[i]))
        day = self._day(weekday=False)
        t = self._within(day * DAY_S + rng.uniform(0, 22) * 3600, 3 * 3600)
        sess = self._sess()
        rows = []
        for _ in range(int(rng.integers(0, 3))):
            rows.append(self._event(t, i, "login", ip=ip, country=country, city=city,
                                    fail=True))
            t += rng.uniform(10, 90)
        rows.append(self._event(t, i, "login", ip=ip, country=country, city=city,
                                session=sess))
        known = set(w.fav["dataset"][i].tolist())
        never = [r for r in np.flatnonzero(w.res_type == "dataset") if r not in known]
        sensitive = [w.res_index[r] for r in _SENSITIVE if r.startswith("dataset/")
                     and r not in known]
        n = self._n(6, 15)
        targets = rng.choice(never, size=min(n, len(never)), replace=False).tolist()
        targets[: min(2, len(sensitive))] = sensitive[:2]
        for r in targets:
            t += rng.uniform(60, 600)
            rows.append(self._event(t, i, "dataset.read", ip=ip, country=country, city=city,
                                    resource=int(r), session=sess,
                                    nbytes=w.res_size[r] * rng.uniform(0.5, 1.0)))
        if rng.random() < 0.6:
            r = int(targets[0])
            t += rng.uniform(60, 300)
            rows.append(self._event(t, i, "dataset.export", ip=ip, country=country, city=city,
                                    resource=r, session=sess, nbytes=w.res_size[r]))
        self._record("account_takeover", rows, [("user", self._name(i)), ("source_ip", ip)],
                     f"{w.user[i]} logs in from {city}, {country} ({ip}) and reads "
                     f"{len(targets)} datasets never touched before")

    def _inside(self, i: int, day: int) -> tuple[str, str, str, float, str]:
        """The person's usual address and place, and a time in their working hours."""
        w = self.w
        ip = w.usual_ip(i, day)
        return ip, str(w.country[i]), str(w.city[i]), self._work_time(i, day), self._sess()

    def privilege_escalation(self) -> None:
        rng, w = self.rng, self.w
        i = self._victim(("ml-engineer", "data-scientist", "contractor", "analyst"))
        day = self._day()
        ip, country, city, t, sess = self._inside(i, day)
        rows = [self._event(t, i, "login", ip=ip, country=country, city=city, session=sess)]
        steps = [("role.assign", f"role/{rng.choice(['admin', 'owner'])}"),
                 ("permission.change", "policy/platform-admins"),
                 ("role.assign", f"user/{w.user[i]}"),
                 ("permission.change", f"policy/{rng.choice(_TEAMS)}-data-access"),
                 ("user.create", f"user/{w.user[i].split('.')[0]}-backup")]
        n = min(len(steps), self._n(2, 4))
        for action, res in steps[:n]:
            t += rng.uniform(30, 900)
            rows.append(self._event(t, i, action, ip=ip, country=country, city=city,
                                    resource=res, session=sess, fail=rng.random() < 0.15))
        self._record("privilege_escalation", rows, [("user", self._name(i))],
                     f"{w.user[i]} ({w.role_name[i]}) performs {n} privileged IAM changes")

    def bulk_model_download(self) -> None:
        rng, w = self.rng, self.w
        i = self._victim(("analyst",), fallback=("data-scientist",))
        day = self._day()
        ip, country, city, t, sess = self._inside(i, day)
        rows = [self._event(t, i, "login", ip=ip, country=country, city=city, session=sess)]
        models = np.flatnonzero(w.res_type == "model")
        n = min(len(models), self._n(8, 20))
        for r in rng.choice(models, size=n, replace=False):
            t += rng.uniform(60, 420)
            rows.append(self._event(t, i, "model.download", ip=ip, country=country, city=city,
                                    resource=int(r), session=sess, nbytes=w.res_size[r]))
        self._record("bulk_model_download", rows, [("user", self._name(i))],
                     f"{w.user[i]} ({w.role_name[i]}, inference only) downloads {n} models")

    def service_account_interactive(self) -> None:
        rng, w = self.rng, self.w
        if not w.services:
            return
        free = [k for k in range(len(w.services)) if k not in self.used_services] \
            or list(range(len(w.services)))
        k = int(rng.choice(free))
        self.used_services.add(k)
        svc = w.services[k]
        insider = self._victim(("ml-engineer", "platform-engineer", "data-scientist"))
        day = self._day()
        ip, country, city, t, sess = self._inside(insider, day)
        rows = [self._event(t, svc["user"], "login", ip=ip, country=country, city=city,
                            session=sess)]
        n = self._n(8, 22)
        secrets = np.flatnonzero(w.res_type == "secret")
        for _ in range(n):
            t += rng.uniform(30, 400)
            pick = rng.random()
            if pick < 0.25:
                r, action = int(rng.choice(secrets)), "secret.read"
            elif pick < 0.6 and len(svc["resources"]):
                r, action = int(rng.choice(svc["resources"])), "dataset.read"
                action = "dataset.read" if w.res_type[r] == "dataset" else "model.download"
            else:
                r, action = int(rng.choice(np.flatnonzero(w.res_type == "dataset"))), \
                    "dataset.read"
            rows.append(self._event(t, svc["user"], action, ip=ip, country=country,
                                    city=city, resource=r, session=sess,
                                    nbytes=w.res_size[r] * 0.5))
        self._record("service_account_interactive", rows, [("user", svc["user"])],
                     f"{svc['user']} logs in interactively from {w.user[insider]}'s "
                     f"workstation ({ip}) and runs {n} actions")

    def offhours_export(self) -> None:
        rng, w = self.rng, self.w
        i = self._victim(("data-scientist",), fallback=("ml-engineer",))
        day = self._day(weekday=False)
        ip = str(w.home_ip(np.array([i]), np.array([day]))[0])
        country, city = str(w.country[i]), str(w.city[i])
        local = rng.uniform(0.5, 4.0)
        t = self._within(day * DAY_S + (local - w.tz[i]) * 3600.0, 3 * 3600)
        sess = self._sess()
        rows = [self._event(t, i, "login", ip=ip, country=country, city=city, session=sess)]
        own = w.fav["dataset"][i]
        team = w.team_pool["dataset"][str(w.team[i])]
        pool = np.unique(np.concatenate([own, team]))
        n = min(len(pool), self._n(5, 12))
        for r in rng.choice(pool, size=n, replace=False):
            t += rng.uniform(60, 600)
            rows.append(self._event(t, i, "dataset.export", ip=ip, country=country, city=city,
                                    resource=int(r), session=sess,
                                    nbytes=w.res_size[r] * rng.uniform(0.9, 1.1)))
        self._record("offhours_export", rows, [("user", self._name(i))],
                     f"{w.user[i]} exports {n} datasets at {local:.0f}:00 local time")

    def outside_role(self) -> None:
        rng, w = self.rng, self.w
        i = self._victim(("analyst", "contractor"))
        day = self._day()
        ip, country, city, t, sess = self._inside(i, day)
        rows = [self._event(t, i, "login", ip=ip, country=country, city=city, session=sess)]
        mine = set(w.team_pool["dataset"][str(w.team[i])].tolist())
        other = [r for r in np.flatnonzero(w.res_type == "dataset")
                 if r not in mine and w.res_team[r] != "shared"]
        n = self._n(4, 10)
        targets = [(int(r), "dataset.read") for r in rng.choice(other, size=n, replace=False)]
        sensitive = [w.res_index[r] for r in _SENSITIVE]
        for r in rng.choice(sensitive, size=min(len(sensitive), int(rng.integers(1, 3))),
                            replace=False):
            targets.append((int(r), "secret.read" if w.res_type[r] == "secret"
                            else "dataset.read"))
        rng.shuffle(targets)
        for r, action in targets:
            t += rng.uniform(60, 500)
            rows.append(self._event(t, i, action, ip=ip, country=country, city=city,
                                    resource=r, session=sess,
                                    nbytes=w.res_size[r] * 0.3 if action == "dataset.read"
                                    else -1.0))
        self._record("outside_role", rows, [("user", self._name(i))],
                     f"{w.user[i]} ({w.role_name[i]}, {w.team[i]}) reads {len(targets)} "
                     f"resources of other teams, including sensitive ones")

    # results ---------------------------------------------------------------------------

    def columns(self) -> dict[str, np.ndarray]:
        if not self.rows:
            return _empty_cols()
        return {c: np.array([r[c] for r in self.rows], dtype=object)
                for c in self.rows[0]}

    def labels(self) -> pd.DataFrame:
        labels = pd.DataFrame(self.label_rows,
                              columns=["entity_type", "entity", "window_start", "scenario"])
        labels["window_start"] = pd.to_datetime(labels["window_start"], utc=True) \
            .astype(_NS_UTC)
        return (labels.drop_duplicates()
                .sort_values(["window_start", "entity_type", "entity", "scenario"])
                .reset_index(drop=True))

    def instances(self) -> pd.DataFrame:
        cols = ["scenario", "entity_type", "entity", "start", "end", "events", "description"]
        return pd.DataFrame(self.narrative, columns=cols)


# -- assembly ------------------------------------------------------------------------------

def _assemble(parts: list[dict[str, np.ndarray]], config: SynthConfig,
              world: _World) -> pd.DataFrame:
    """Index columns -> the normalized frame, sorted by time."""
    names = world.account_names()
    roles = world.account_roles()
    res_names = world.res_names
    cols: dict[str, list[np.ndarray]] = {k: [] for k in
                                         ("t", "user", "role", "action", "resource", "fail",
                                          "ip", "country", "city", "session", "bytes")}
    for part in parts:
        if not len(part["t"]):
            continue
        user = part["user"]
        if user.dtype == object:  # attacks name users directly (including made-up ones)
            idx = np.array([u if isinstance(u, int | np.integer) else -1 for u in user])
            uname = np.array([names[u] if isinstance(u, int | np.integer) else u
                              for u in user], dtype=object)
            urole = np.where(idx >= 0, roles[np.maximum(idx, 0)], "")
            action = np.array([_ACTION_NAMES[a] if isinstance(a, int | np.integer) else a
                               for a in part["action"]], dtype=object)
            res = np.array([res_names[r] if isinstance(r, int | np.integer) and r >= 0
                            else ("" if isinstance(r, int | np.integer) else r)
                            for r in part["resource"]], dtype=object)
        else:
            uname, urole = names[user], roles[user]
            action = np.array(_ACTION_NAMES, dtype=object)[part["action"]]
            r = part["resource"].astype(int)
            res = np.where(r >= 0, res_names[np.maximum(r, 0)], "")
        cols["user"].append(uname)
        cols["role"].append(urole)
        cols["action"].append(action)
        cols["resource"].append(res)
        for k in ("t", "fail", "ip", "country", "city", "session", "bytes"):
            cols[k].append(np.asarray(part[k]))
    data = {k: np.concatenate(v) if v else np.array([]) for k, v in cols.items()}
    t = data["t"].astype(float)
    # sessions of people far from UTC spill over the first and last midnight: keep the period
    inside = (t >= 0) & (t < config.days * DAY_S)
    data = {k: v[inside] for k, v in data.items()}
    t = t[inside]
    order = np.argsort(t, kind="stable")
    data = {k: v[order] for k, v in data.items()}
    # microseconds: what the log keeps, so the frame equals the log read back
    ts = config.start.value + np.round(t[order] * 1e6).astype(np.int64) * 1000
    fail = data["fail"].astype(bool)
    action = data["action"]
    actions = pd.Categorical(action)
    # one category per distinct action, then taken by code: no per-event Python
    per_action = np.array([(infer_category(a) or (None,))[0] for a in actions.categories]
                          + [None], dtype=object)
    category = per_action[actions.codes]
    nbytes = data["bytes"].astype(float)
    frame = build_frame({
        "timestamp": pd.DatetimeIndex(ts.astype("datetime64[ns]"), tz="UTC"),
        "user": data["user"],
        "action": action,
        "outcome": np.where(fail, "failure", "success"),
        "source_ip": data["ip"],
        "resource": data["resource"],
        "level": np.where(fail, "warning", "info"),
        "kind": np.full(len(ts), "event", dtype=object),
        "category": np.asarray(category, dtype=object),
        "country": data["country"],
        "host": np.array(["api-01", "api-02", "api-03"], dtype=object)[
            np.arange(len(ts)) % 3],
        "session": data["session"],
        "bytes": pd.array(np.where(nbytes >= 0, np.round(nbytes), np.nan), dtype="Int64"),
    })
    frame["city"] = pd.Series(data["city"], dtype="object").astype("category")
    if config.log_roles:
        frame["roles"] = pd.Series(data["role"], dtype="object").astype("category")
    return frame


# -- writing -------------------------------------------------------------------------------

def write_audit_log(events: pd.DataFrame, path: str | os.PathLike[str], *,
                    key: bytes | str | os.PathLike[str] | None = None,
                    service: str = "ai-platform") -> int:
    """Write every event through the real :class:`~analyzer.logger.AuditLogger`.

    The result is a chained, verifiable audit trail, exactly what an application using the
    logger would have written. Returns the number of records written. Appends to an existing
    log, continuing its chain.
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
                         batch_records=4096, checkpoint_every=100_000)
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
