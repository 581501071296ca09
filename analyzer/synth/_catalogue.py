"""What the synthetic organisation is made of: scenarios, actions, roles, places, names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

#: Attacks per-entity hourly counts cannot see (issue #13 item 4). Not in the default
#: configuration yet: with them the default budget no longer holds every scenario above (the
#: storms' hundreds of address windows crowd it); see ``quiet_attacks_config``.
QUIET_SCENARIOS: tuple[str, ...] = (
    "credential_stuffing",
    "low_and_slow_collection",
    "session_hijack",
    "stable_entity_novelty",
    "dormant_account",
)

#: Attacks that the events' own evidence names (issue #13 item 4): web scanning and injection,
#: cloud control-plane abuse, Windows credential access and persistence. They need columns the
#: default organisation does not have (``url_path``, ``status``, ``user_agent``...); see
#: ``evidence_attacks_config``.
EVIDENCE_SCENARIOS: tuple[str, ...] = (
    "web_scanning",
    "cloud_control_plane_abuse",
    "windows_credential_access",
)

#: The kinds of benign surprise (recorded in :attr:`Organisation.surprises`, never labelled).
BENIGN_SURPRISES: tuple[str, ...] = ("travel", "busy_day", "new_joiner", "team_onboarding",
                                     "vpn_change", "weekend_release", "evidence_routine")
#: Every scenario a configuration may ask for.
ALL_SCENARIOS: tuple[str, ...] = SCENARIOS + QUIET_SCENARIOS + EVIDENCE_SCENARIOS

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
