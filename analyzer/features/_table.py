"""The documented feature table and the privileged-action patterns."""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analyzer.errors import ConfigError

#: The kinds of entity that get windows, in output order.
ENTITY_TYPES: tuple[str, ...] = ("user", "source_ip")

#: Columns that identify a window and its evidence; features follow them.
WINDOW_COLUMNS: tuple[str, ...] = (
    "entity_type", "entity", "window_start", "window_end", "first_sequence", "last_sequence",
)

#: Glob patterns (case-insensitive, on ``action``) for actions that change who may do what,
#: destroy things, or move data or models out. Override with ``privileged_actions=``.
DEFAULT_PRIVILEGED_ACTIONS: tuple[str, ...] = (
    "*permission*", "*role*", "*grant*", "*privilege*", "*policy*", "*admin*", "sudo*",
    "su", "user.create", "user.delete", "user.change", "user.add*", "user.modify", "user.update",
    "group.create", "group.member_add", "group.member_remove", "password.change", "*createuser*",
    "*deleteuser*", "*accesskey*", "key.*", "*secret*", "*delete*", "*export*", "*download*",
    "*exfil*", "*.purge", "*.drop", "audit.disable", "*config.change*",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Feature:
    """One documented feature: what it is, why it is there, how an alert phrases it."""

    name: str
    family: str
    entity_types: tuple[str, ...]
    meaning: str
    why: str
    reason: str
    unit: str = "count"
    #: weight in the detector's per-feature rarity score (raw volume has none: busy people
    #: are not suspicious, what changed about them is)
    rarity: float = 1.0
    detail: str | None = None
    #: given to the detector at all (raw volume and diversity are context for reasons only:
    #: a forest on raw counts mostly finds busy people)
    detect: bool = True
    #: evidence by itself (a catalogued action, an attack tool): when its window is
    #: explained, the reason names it ahead of what is merely rare
    evidence: bool = False


_BOTH = ("user", "source_ip")
_USER = ("user",)
_IP = ("source_ip",)

#: The feature table (name, family, entity types, meaning, why, reason template). The README
#: quotes it; :mod:`analyzer.detector` phrases reasons from ``reason`` with ``{value}``,
#: ``{typical}``, ``{entity}``, ``{detail}``, ``{hour}`` and ``{weekday}``.
FEATURES: tuple[Feature, ...] = (
    Feature("n_events", "volume", _BOTH, "events in the window",
            "context for every other feature", "{value} events ({typical})", rarity=0.0,
            detect=False),
    Feature("n_failures", "volume", _BOTH, "events with outcome failure",
            "brute force and probing fail a lot", "{value} failed events ({typical})"),
    Feature("failure_ratio", "volume", _IP, "share of the address's events that failed",
            "a guessing source fails most of the time (for a user, one failed login in an "
            "otherwise empty hour says nothing, so users do not get it)",
            "{value} of events failed ({typical})", unit="share"),
    Feature("events_per_minute", "volume", _BOTH, "events per active minute",
            "scripts are faster than people", "{value} events per active minute ({typical})",
            unit="rate", rarity=0.0),
    Feature("max_burst", "volume", _BOTH, "most events in any one minute",
            "automated bursts inside an otherwise quiet hour",
            "{value} events in a single minute ({typical})", rarity=0.0),
    Feature("events_vs_typical", "volume", _BOTH,
            "log of events against the entity's own typical window",
            "a sudden change in pace for this entity, not a busy entity",
            "{value} times the usual number of events for {entity}", unit="logratio",
            rarity=0.5),
    Feature("n_resources", "diversity", _BOTH, "distinct resources touched",
            "sweeping many resources is how data is collected",
            "{value} distinct resources ({typical})", rarity=0.0, detect=False),
    Feature("n_actions", "diversity", _BOTH, "distinct actions",
            "an unusual mix of operations", "{value} distinct actions ({typical})",
            rarity=0.0, detect=False),
    Feature("n_ips", "diversity", _USER, "distinct source addresses for the user",
            "one account used from several places at once",
            "{value} source addresses ({typical})"),
    Feature("n_countries", "diversity", _USER, "distinct countries for the user",
            "impossible travel", "{value} countries in one window ({typical})"),
    Feature("n_users", "diversity", _IP, "distinct users tried from the address",
            "password spraying tries many accounts from one place",
            "{value} distinct users from this address ({typical})"),
    Feature("n_users_failed", "diversity", _IP, "distinct users with a failure from the address",
            "spraying fails across many accounts",
            "failures for {value} distinct users ({typical})"),
    Feature("n_users_failed_day", "diversity", _IP,
            "distinct users with a failure from the address in the 24 hours up to the "
            "window's end",
            "a slow password spray stays under any hourly count but not under a daily one",
            "failures for {value} distinct users from this address in the last 24 hours "
            "({typical})",
            # corroborates the hourly counts rather than leading: every hour of a day-long
            # spray carries it, and those hours should not crowd out other entities' alerts
            rarity=0.25),
    Feature("country_rarity", "novelty", _IP,
            "surprisal of the address's country in the organisation's training activity",
            "intruders and password sprayers come from where the organisation never is",
            "connections from {detail}, a country rare for the organisation",
            unit="surprisal", detail="d_country", rarity=0.0),
    Feature("n_unknown_users", "novelty", _IP,
            "distinct user names tried from the address that were never seen anywhere",
            "guessed account names", "{value} unknown user names tried ({detail})",
            detail="d_unknown_users"),
    Feature("new_entity", "novelty", _BOTH, "1 if the entity was never seen before",
            "a new account or address deserves a look", "{entity} never seen before",
            unit="flag"),
    Feature("n_new_ips", "novelty", _USER, "source addresses the user never used before",
            "account takeover comes from somewhere new", "first access from {detail}",
            detail="d_new_ips"),
    Feature("n_new_countries", "novelty", _USER, "countries the user never came from before",
            "account takeover comes from somewhere new", "first access from country {detail}",
            detail="d_new_countries"),
    Feature("n_new_resources", "novelty", _USER, "resources the user never touched before",
            "after a takeover, the intruder reads what the owner never did",
            "{value} resources never touched before by {entity} ({detail})",
            detail="d_new_resources"),
    Feature("n_new_actions", "novelty", _BOTH, "actions the entity never performed before",
            "new kinds of operation (downloads by someone who only ran inference)",
            "first time doing {detail}", detail="d_new_actions"),
    Feature("new_privileged_events", "sensitivity", _BOTH,
            "privileged events whose action the entity never performed before",
            "privilege escalation and first-time exports",
            "{value} privileged actions never done before by {entity} ({detail})",
            detail="d_new_privileged"),
    Feature("n_outside_peer_resources", "novelty", _USER,
            "resources neither the user nor their peer group ever touched",
            "access outside one's role; peers come from co-access when no role is logged",
            "{value} resources outside what {entity}'s peers use ({detail})",
            detail="d_outside_peer_resources"),
    Feature("n_outside_peer_actions", "novelty", _USER,
            "actions neither the user nor their peer group ever performed",
            "a non-admin doing admin things",
            "{value} actions none of {entity}'s peers do ({detail})",
            detail="d_outside_peer_actions"),
    Feature("n_users_new_resources", "novelty", _IP,
            "resources reached from the address, by users never seen from it before, that "
            "those users never touched before",
            "an intruder's address is where the victim's account reads what its owner never did",
            "{value} resources never touched before by users new to this address ({detail})",
            detail="d_new_resources"),
    Feature("n_new_users", "novelty", _IP, "users never seen from this address before",
            "an address suddenly used for other accounts",
            "{value} users never seen from this address before ({detail})",
            detail="d_new_users"),
    Feature("hour_rarity", "time", _BOTH,
            "surprisal of this hour of day in the entity's own activity (shrunk to the "
            "organisation's when history is short)",
            "off-hours use of a daytime account", "active at {hour} UTC, unusual for {entity}",
            unit="surprisal"),
    Feature("weekday_rarity", "time", _BOTH, "surprisal of this weekday for the entity",
            "weekend use of a weekday account", "active on a {weekday}, unusual for {entity}",
            unit="surprisal"),
    Feature("off_hours_share", "time", _BOTH,
            "share of events in hours of the week when the organisation is quiet",
            "attackers work when nobody watches",
            "{value} of events in the organisation's quiet hours", unit="share"),
    Feature("privileged_off_hours", "sensitivity", _BOTH,
            "privileged events at an hour of day or a weekday that holds under 2% of the "
            "entity's own activity",
            "exports and permission changes in the middle of the entity's night",
            "{value} privileged actions at a time {entity} is normally inactive ({detail})",
            detail="d_privileged_off_hours"),
    Feature("n_privileged", "sensitivity", _BOTH,
            "events with a privileged action (permission, role and user changes, deletes, "
            "exports, model downloads; configurable)",
            "these are the actions that hurt", "{value} privileged actions ({typical})"),
    Feature("bytes_total", "sensitivity", _BOTH, "bytes read or written",
            "context for the data-volume reason", "{value} moved ({typical})", unit="bytes",
            rarity=0.0, detect=False),
    Feature("bytes_vs_typical", "sensitivity", _BOTH,
            "log of bytes against the entity's own typical window",
            "exfiltration moves more data than the entity usually does",
            "{value} times the data volume usual for {entity}", unit="logratio",
            rarity=0.5),
    Feature("fail_then_success", "sequence", _BOTH,
            "failures followed, in the same window, by a success from the same source",
            "a guessed password that finally worked",
            "{value} failures followed by a success from the same source"),
    # -- what per-entity hourly counts cannot see (issue #13 item 4) -------------------------
    Feature("storm_addresses", "organisation", _BOTH,
            "distinct addresses with a failure anywhere in the organisation in the window, "
            "when that is a failure storm (at least 20 failing addresses and 5 times the "
            "typical number), else 0; the same for every entity's window of that time",
            "distributed credential stuffing spreads one or two failures over hundreds of "
            "addresses, so no address and no account looks busy; the model makes the "
            "storm's windows one incident",
            "{value} addresses failing across the organisation in the window", rarity=0.0,
            detect=False),
    Feature("storm_new_source_success", "organisation", _BOTH,
            "successes from an address never seen before (for the user; for an address, at "
            "all) while the organisation's failures are a storm: at least 20 failing "
            "addresses and 5 times the typical number in the window",
            "the account the stuffing finally got into: the attack itself, named first",
            "success from never-seen address {detail}", detail="d_storm_success",
            rarity=2.0, evidence=True),
    Feature("new_resources_week", "accumulation", _USER,
            "days of the 7 up to the window's end on which the user first touched a "
            "resource, in windows that touch one; only novelty after the account's first 7 "
            "days",
            "low-and-slow collection takes a few new things a day, every day, at normal "
            "hours from the usual place: no hour stands out, the week does",
            "resources never touched before by {entity} on {value} days this week ({detail})",
            detail="d_new_resources_week", rarity=2.0),
    Feature("second_address_events", "sequence", _USER,
            "events from an address the user never used before, while the user is also "
            "active, later in the same window, from an address used before",
            "a hijacked session works alongside its owner, on the owner's own resources",
            "second address {detail} ({value} events)", detail="d_second_address"),
    Feature("stable_days_before_novelty", "novelty", _USER,
            "in a window where the user does something never done before: days since the "
            "user last did anything new (or since first seen)",
            "a very stable entity (a service account) doing one new thing is news; a person "
            "who tries new things every week is not",
            "nothing new by {entity} in the {value} days before", rarity=2.0),
    Feature("days_dormant", "time", _USER,
            "days between the window's first own event and the user's previous one",
            "a dormant account waking up (a leaver's account, a forgotten one)",
            "first activity in {value} days", rarity=2.0),
)

#: Evidence features (:mod:`analyzer.features._evidence`): sensitive actions named by what they
#: are, one credential in several places, web scanning and injection. Kept in their own block.
EVIDENCE_FEATURES: tuple[Feature, ...] = (
    Feature("n_new_sensitive", "sensitivity", _USER,
            "catalogued sensitive actions (trail deletion, user and key creation, snapshot "
            "sharing, DCSync, service install, log clearing, ...) the user never did before",
            "destructive, persistence and credential-access actions are the attack itself",
            "first {detail} by {entity}", detail="d_new_sensitive", rarity=2.0,
            evidence=True),
    Feature("n_sensitive", "sensitivity", _USER, "events with a catalogued sensitive action",
            "repeated sensitive actions, named",
            "{value} sensitive actions ({detail})", detail="d_sensitive", rarity=0.5),
    Feature("n_remote_creations", "sensitivity", _USER,
            "services or scheduled tasks created in a logon session that came over the network",
            "remote service and task creation is how lateral movement runs code",
            "{value} remote creations of services or tasks ({detail})",
            detail="d_remote_creations", evidence=True),
    Feature("credential_addresses", "novelty", _USER,
            "most source addresses one credential (access key, logon session) of the user "
            "was used from, up to the window's end (0 below two)",
            "stolen keys and session tokens are used from somewhere else",
            "one credential of {entity} used from {value} addresses ({detail})",
            detail="d_credential_addresses"),
    Feature("n_paths", "web", _BOTH, "distinct URL paths requested",
            "scanners walk through thousands of paths", "{value} distinct paths ({typical})",
            rarity=0.5),
    Feature("share_4xx", "web", _BOTH, "share of requests answered with a 4xx status",
            "probing asks for what is not there or not allowed",
            "{value} of requests answered 4xx ({typical})", unit="share", rarity=0.5),
    Feature("share_5xx", "web", _BOTH, "share of requests answered with a 5xx status",
            "injection breaks the application", "{value} of requests answered 5xx ({typical})",
            unit="share", rarity=0.5),
    Feature("n_sensitive_probes", "web", _BOTH,
            "requests for well-known sensitive paths (/.env, /.git/, /wp-admin, "
            "/phpmyadmin, /server-status, /cgi-bin/, backups, ...)",
            "no ordinary visitor asks for a site's secrets",
            "{value} probes of sensitive paths ({detail})", detail="d_sensitive_probes",
            evidence=True),
    Feature("n_injection", "web", _BOTH,
            "requests whose decoded path or query has the shape of SQL, script, traversal or "
            "command injection", "attacks on the application itself",
            "{value} injection-shaped requests ({detail})", detail="d_injection",
            evidence=True),
    Feature("n_scanner_requests", "web", _BOTH,
            "requests whose user agent names an attack or scanning tool (sqlmap, nikto, "
            "nuclei, ...)", "tools announce themselves",
            "{value} requests from scanner user agent {detail}", detail="d_scanner",
            evidence=True),
    Feature("n_scripted_requests", "web", _BOTH,
            "requests whose user agent is a scripting client (curl, python-requests, ...)",
            "a weak sign: scripts are also how operators work",
            "{value} requests from scripted client {detail}", detail="d_scripted",
            rarity=0.25),
)
FEATURES = FEATURES + EVIDENCE_FEATURES

_FEATURE_BY_NAME = {f.name: f for f in FEATURES}
#: Detail columns no reason reads: what ties one entity's window to another's. An address
#: window's ``d_new_failed_users`` names the accounts it failed against and had never been
#: seen with before (most failures first), so that a brute force's address and its victim's
#: windows can be one incident.
LINK_COLUMNS = ("d_new_failed_users",)
_DETAIL_COLUMNS = tuple(dict.fromkeys([f.detail for f in FEATURES if f.detail]
                                      + list(LINK_COLUMNS)))



def feature_names(entity_type: str) -> list[str]:
    """The feature columns that apply to ``entity_type``, in table order.

    >>> feature_names("source_ip")[:3]
    ['n_events', 'n_failures', 'failure_ratio']
    """
    if entity_type not in ENTITY_TYPES:
        raise ConfigError(f"unknown entity type {entity_type!r}; expected one of {ENTITY_TYPES}")
    return [f.name for f in FEATURES if entity_type in f.entity_types]


def detector_features(entity_type: str) -> list[str]:
    """The features of ``entity_type`` the detector sees (raw volume is context only)."""
    return [f.name for f in FEATURES
            if entity_type in f.entity_types and f.detect]


def _all_feature_names() -> list[str]:
    return [f.name for f in FEATURES]


def source_entities(frame: pd.DataFrame) -> pd.Series | None:
    """The source of each event as the ``source_ip`` entity: its address, or its name.

    A client known only by a host name (a web server with ``HostnameLookups On``) has an
    empty ``source_ip`` (an address only) and its name in ``source_domain``; it is still a
    source and gets windows of its own. Without ``source_domain`` this is ``source_ip``.
    """
    ip = frame["source_ip"] if "source_ip" in frame.columns else None
    if ip is None or "source_domain" not in frame.columns:
        return ip
    domain = frame["source_domain"].astype("object").fillna("")
    if not (domain != "").any():
        return ip
    address = ip.astype("object").fillna("")
    return address.where(address != "", domain).astype("category")


def privileged_mask(actions: Sequence[str] | np.ndarray,
                    patterns: Sequence[str] = DEFAULT_PRIVILEGED_ACTIONS) -> np.ndarray:
    """Which action names match one of the glob ``patterns`` (case-insensitive).

    >>> privileged_mask(["model.download", "model.predict", "role.grant"]).tolist()
    [True, False, True]
    """
    names = np.asarray(actions, dtype=object)
    if not len(patterns) or not len(names):
        return np.zeros(len(names), dtype=bool)
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns))
    # one match per distinct action name (a vocabulary), never per event
    return np.array([regex.match(str(n).lower()) is not None for n in names], dtype=bool)


# -- number agreement of phrased reasons ----------------------------------------------------

#: The plural nouns the reason templates count, and their singulars.
_SINGULAR = {"events": "event", "users": "user", "actions": "action",
             "resources": "resource", "names": "name", "addresses": "address",
             "countries": "country", "failures": "failure", "accounts": "account",
             "paths": "path", "probes": "probe", "requests": "request",
             "creations": "creation", "days": "day"}
_PLURAL = {v: k for k, v in _SINGULAR.items()}
_COUNT_OF_ONE = re.compile(r"(?<![\d.,])\b1 ((?:[a-z-]+ ){0,2}?)(" + "|".join(_SINGULAR) + r")\b")
# greedy: in "1 unknown user name", the counted noun is the last candidate, "name"
_COUNT_OF_ONE_SINGULAR = re.compile(
    r"(?<![\d.,])\b1 ((?:[a-z-]+ ){0,2})(" + "|".join(_PLURAL) + r")\b")


def agree(reason: str) -> str:
    """A phrased reason with its counted noun in agreement: "1 failed event", not "events".

    >>> agree("1 failed events (typical for bob: 0)"), agree("11 failed events")
    ('1 failed event (typical for bob: 0)', '11 failed events')
    """
    return _COUNT_OF_ONE.sub(lambda m: f"1 {m[1]}{_SINGULAR[m[2]]}", reason, count=1)


def as_template_plural(reason: str) -> str:
    """The inverse of :func:`agree`, so a singular reason still matches its template."""
    return _COUNT_OF_ONE_SINGULAR.sub(lambda m: f"1 {m[1]}{_PLURAL[m[2]]}", reason, count=1)
