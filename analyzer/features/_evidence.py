"""Evidence features: what the events say outright, beside what is rare about them.

Rarity against an entity's past finds changes; some events are suspicious by what they are,
whatever the history: a trail deleted, replication rights used by a person, a scheduled task
created over the network, a client asking for ``/.env`` with ``sqlmap`` as its user agent. On
a short log, or for the only client of a web server, there is no past to compare with, and
these are what a person would point at. Three families:

- *sensitive actions*: one catalogue, :data:`SENSITIVE_ACTIONS`, of destructive, persistence,
  defence-evasion, exposure and credential-access actions by source (CloudTrail event names,
  Windows actions, syslog account management); the first use of each by an entity, their
  count, and service or task creation in a logon that came over the network;
- *credentials in two places*: one credential (access key, logon session) of a user seen from
  several addresses;
- *web scanning and injection*: distinct paths, shares of 4xx and 5xx answers, probes of
  well-known sensitive paths, injection-shaped requests, scanner user agents.

Columns beyond the normalized frame's contract are optional (``user_kind``, ``host``,
``session``, ``logon_type``, ``url_path``, ``url_query``, ``status``, ``user_agent``): a missing
column makes its features 0. Patterns run once per distinct value (a vocabulary), never per
event, and everything per window is array code over the extractor's window index.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Sequence
from urllib.parse import unquote_plus

import numpy as np
import pandas as pd

__all__ = ["SENSITIVE_ACTIONS", "Evidence", "SensitiveAction", "gather", "sensitive_entries",
           "window_evidence"]


@dataclasses.dataclass(frozen=True, slots=True)
class SensitiveAction:
    """One catalogue entry: an action that hurts whatever the entity's history.

    ``action`` is a glob on the normalized action name (case-insensitive); ``who`` limits it
    to some principals: ``"any"``, ``"person"`` (not a machine account: domain controllers
    replicate, people do not), ``"anonymous"``, or ``"instance"`` (an EC2 instance's role
    credentials, whose session is named after the instance). ``resources``, when given, are
    globs on the resource (case-insensitive) of which one must match: a handle is evidence
    on the credential store, not on every object. ``column`` and ``values`` do the same on
    one of the readers' extra columns (``ticket_encryption``): a Kerberos ticket is evidence
    when it asks for RC4, not every ticket; a frame without the column never matches. The
    first entry whose action matches decides.
    """

    action: str
    tactic: str
    label: str = ""
    who: str = "any"
    resources: tuple[str, ...] = ()
    column: str = ""
    values: tuple[str, ...] = ()


_WHO = ("any", "person", "anonymous", "instance")


def _aws(source: str, *names: str, tactic: str, label: str = "",
         who: str = "any") -> tuple[SensitiveAction, ...]:
    return tuple(SensitiveAction(f"{source}.amazonaws.com:{n}", tactic, label, who)
                 for n in names)


#: ``TicketEncryptionType`` codes of RC4-HMAC (0x17), RC4-HMAC-EXP (0x18) and DES (0x1, 0x3),
#: as the Windows reader writes them.
_WEAK_KERBEROS = ("0x17", "0x18", "0x1", "0x3")

#: The sensitive-action catalogue, the one home of "actions that are evidence by themselves".
#: The first matching entry counts. CloudTrail names are ``eventSource:eventName``.
SENSITIVE_ACTIONS: tuple[SensitiveAction, ...] = (
    # CloudTrail: blinding the defenders
    *_aws("cloudtrail", "DeleteTrail", "StopLogging", "UpdateTrail", "PutEventSelectors",
          tactic="defence evasion"),
    *_aws("guardduty", "DeleteDetector", "DisassociateFromMasterAccount", "UpdateDetector",
          "DeleteMembers", tactic="defence evasion"),
    *_aws("ec2", "DeleteFlowLogs", tactic="defence evasion"),
    *_aws("config", "StopConfigurationRecorder", "DeleteConfigurationRecorder",
          "DeleteDeliveryChannel", tactic="defence evasion"),
    *_aws("logs", "DeleteLogGroup", "DeleteLogStream", tactic="defence evasion"),
    *_aws("organizations", "LeaveOrganization", tactic="defence evasion"),
    # CloudTrail: a way back in
    *_aws("iam", "CreateUser", "CreateAccessKey", "CreateLoginProfile", "UpdateLoginProfile",
          "AttachUserPolicy", "AttachRolePolicy", "PutUserPolicy", "PutRolePolicy",
          "UpdateAssumeRolePolicy", "CreatePolicyVersion", "AddUserToGroup",
          "DeactivateMFADevice", tactic="persistence"),
    *_aws("sts", "GetFederationToken", tactic="persistence"),
    # CloudTrail: data shared out
    *_aws("ec2", "ModifySnapshotAttribute", label="snapshot sharing", tactic="exposure"),
    *_aws("ec2", "ModifyImageAttribute", label="image sharing", tactic="exposure"),
    *_aws("rds", "ModifyDBSnapshotAttribute", "ModifyDBClusterSnapshotAttribute",
          label="snapshot sharing", tactic="exposure"),
    *_aws("s3", "PutBucketPolicy", "PutBucketAcl", "DeleteBucketPublicAccessBlock",
          "PutBucketPublicAccessBlock", tactic="exposure"),
    *_aws("ec2", "AuthorizeSecurityGroupIngress", tactic="exposure"),
    # CloudTrail: destruction and secrets
    *_aws("kms", "ScheduleKeyDeletion", "DisableKey", tactic="destruction"),
    *_aws("ec2", "GetPasswordData", tactic="credential access"),
    *_aws("secretsmanager", "GetSecretValue", tactic="credential access"),
    # stolen instance credentials: the first thing done with them is to look around
    *_aws("s3", "ListBuckets", label="all buckets listed", tactic="discovery", who="instance"),
    *_aws("sts", "GetCallerIdentity", tactic="discovery", who="instance"),
    # Windows Security / System
    SensitiveAction("directory.replication", "credential access", "DCSync rights", "person"),
    SensitiveAction("computer.change", "credential access", "anonymous, as in Zerologon",
                    "anonymous"),
    SensitiveAction("service.install", "persistence"),
    SensitiveAction("task.create", "persistence"),
    SensitiveAction("log.clear", "defence evasion", "log cleared"),
    SensitiveAction("audit_policy.change", "defence evasion"),
    # a person's handle on the credential store is how Mimikatz reads passwords (4656/4663,
    # Sysmon 10); the system's own services open it too, so machine accounts do not count
    SensitiveAction("object.access", "credential access", "credential store", "person",
                    resources=("*lsass.exe",)),
    SensitiveAction("process.access", "credential access", "credential store", "person",
                    resources=("*lsass.exe",)),
    SensitiveAction("sam.object_access", "discovery", "SAM enumeration", "person"),
    # files written through an administrative share are how tools and DLLs are planted
    SensitiveAction("share.object_access", "lateral movement", "administrative share",
                    "person", resources=("*\\c$\\*", "*\\admin$\\*")),
    # a person's Kerberos ticket in RC4 (0x17, 0x18) or DES (0x1, 0x3) where the domain
    # hands out AES: what Rubeus asktgt /rc4 and Mimikatz pass-the-hash ask for with an NTLM
    # hash, and what Kerberoasting asks for to crack offline. Machine accounts with old keys
    # do not count.
    SensitiveAction("kerberos.tgt", "credential access",
                    "RC4 ticket encryption, as Rubeus/Mimikatz request it", "person",
                    column="ticket_encryption", values=_WEAK_KERBEROS),
    SensitiveAction("kerberos.service_ticket", "credential access",
                    "RC4 ticket encryption, as Kerberoasting requests it", "person",
                    column="ticket_encryption", values=_WEAK_KERBEROS),
    # syslog account management
    SensitiveAction("user.create", "persistence"),
    SensitiveAction("group.member_add", "persistence"),
    SensitiveAction("sudo", "privilege use"),
)

# Creating a service or a task counts as remote when its logon session came over the network.
_REMOTE_ACTIONS = ("service.install", "task.create")
_NETWORK_LOGONS = ("3", "10")
_INSTANCE_SESSION = re.compile(r"/i-[0-9a-f]{8,17}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_OBJECT_CHARS = 60


def sensitive_entries(actions: Sequence[str] | np.ndarray,
                      catalogue: Sequence[SensitiveAction] = SENSITIVE_ACTIONS) -> np.ndarray:
    """Index of each action's first matching catalogue entry, -1 for none.

    >>> sensitive_entries(["cloudtrail.amazonaws.com:DeleteTrail", "login"]).tolist()
    [0, -1]
    """
    names = np.asarray(actions, dtype=object)
    out = np.full(len(names), -1, dtype=np.int64)
    if not len(names) or not len(catalogue):
        return out
    regex = re.compile("|".join(f"(?P<e{i}>{fnmatch.translate(e.action.lower())})"
                                for i, e in enumerate(catalogue)))
    for j, name in enumerate(names):  # one match per distinct action name, never per event
        match = regex.match(str(name).lower())
        if match is not None:
            out[j] = int(match.lastgroup[1:])
    return out


# -- the web patterns -------------------------------------------------------------------------

# Paths that only scanners and intruders ask for: secrets, repositories, admin consoles,
# backups. Matched on the decoded, lower-cased path.
_SENSITIVE_PATH = re.compile("|".join((
    r"/\.(?:env|git|svn|hg|bzr|aws|ssh|docker|kube|npmrc|htaccess|htpasswd|ds_store)\b",
    r"/wp-(?:admin|login|config|content/debug)", r"/xmlrpc\.php", r"/(?:php)?myadmin",
    r"/pma\b", r"/adminer", r"/server-(?:status|info)", r"/cgi-bin/", r"/admin(?:/|$|\.|istrator)",
    r"/manager/html", r"/actuator\b", r"/jmx-console", r"/console\b", r"/solr/", r"/jenkins",
    r"/vendor/phpunit", r"/boaform", r"/hnap1", r"/etc/(?:passwd|shadow)", r"/proc/self",
    r"/web\.config", r"/config\.(?:php|json|ya?ml|inc)", r"/(?:id_rsa|id_dsa|credentials)\b",
    r"\.(?:bak|backup|old|orig|save|swp|sql|sqlite|db|tar|tgz|gz|zip|7z|rar)$", r"~$",
)))
# Injection shapes, in the order a request is labelled by (first match wins).
_INJECTION: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("command", re.compile(
        r"\$\{jndi:|\$\{\$\{|[;|`]\s*(?:cat|id|uname|whoami|wget|curl|nc|bash|sh|ping)\b|"
        r"\$\((?:[^)]*)\)|&&\s*(?:id|whoami|cat)\b")),
    ("sqli", re.compile(
        r"'\s*(?:or|and)\s|\bunion\b.{0,20}\bselect\b|\bselect\b.{1,80}\bfrom\b|"
        r"\b(?:sleep|benchmark|pg_sleep)\s*\(|waitfor\s+delay|information_schema|"
        r"\bor\s+\d+\s*=\s*\d+|;\s*(?:drop|insert|update|delete)\s|'\s*--")),
    ("xss", re.compile(
        r"<\s*(?:script|svg|iframe|img|body)\b|javascript:|\bon(?:error|load|mouseover)\s*=|"
        r"document\.cookie|alert\s*\(")),
    ("traversal", re.compile(
        r"\.\./|\.\.\\|/etc/(?:passwd|shadow)|win\.ini|boot\.ini|/proc/self/|file://|"
        r"php://")),
)
_INJECTION_KINDS = np.array([k for k, _ in _INJECTION], dtype=object)
_SCANNER = re.compile(
    r"\b(sqlmap|nikto|nmap|masscan|zgrab|gobuster|dirbuster|dirb|wpscan|nuclei|ffuf|wfuzz|"
    r"feroxbuster|acunetix|netsparker|nessus|openvas|w3af|skipfish|arachni|whatweb|commix|"
    r"jaeles|zmeu|hydra|joomscan|xsstrike|censysinspect|l9explore)(?:[/ ]v?[\w.#-]{1,20})?",
    re.IGNORECASE)
_SCRIPTED = re.compile(
    r"\b(curl|wget|python-requests|python-urllib|go-http-client|libwww-perl|okhttp|"
    r"apache-httpclient|aiohttp|httpie|powershell|java)(?:/[\w.-]{1,20})?", re.IGNORECASE)


# -- per-event evidence -----------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class Evidence:
    """Per-event evidence arrays, aligned with the extractor's prepared events.

    Codes are -1 where an event has none; ``*_names`` hold the distinct text of each code:
    phrases and credentials sorted, paths and agents in the order the events first show them
    (the order their texts are named in; a chunked read orders them the same way across
    chunks). A credential's name is its user, host and session joined by ``\x1f``.
    """

    sensitive: np.ndarray
    remote: np.ndarray
    phrase: np.ndarray
    phrase_names: np.ndarray
    credential: np.ndarray
    credential_names: np.ndarray
    path: np.ndarray
    path_names: np.ndarray
    status: np.ndarray
    probe: np.ndarray
    injection: np.ndarray
    agent: np.ndarray
    agent_names: np.ndarray
    scanner: np.ndarray


def _factorize(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and distinct values of a text column (-1 for missing or empty)."""
    n = len(frame)
    if column not in frame.columns:
        return np.full(n, -1, dtype=np.int64), np.empty(0, dtype=object)
    series = frame[column]
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.int64)
        names = np.asarray(series.cat.categories.astype(str), dtype=object)
    else:
        raw, uniques = pd.factorize(series, use_na_sentinel=True)
        codes = raw.astype(np.int64)
        names = np.asarray(pd.Index(uniques).astype(str), dtype=object)
    if len(names):
        empty = np.array([not str(v).strip() for v in names], dtype=bool)
        codes = np.where((codes >= 0) & empty[np.maximum(codes, 0)], -1, codes)
    return codes, names


def _lookup(table: np.ndarray, codes: np.ndarray, missing: object) -> np.ndarray:
    """``table[codes]`` with ``missing`` where a code is -1."""
    if not len(table):
        return np.full(len(codes), missing, dtype=table.dtype if table.dtype != object else object)
    return np.where(codes >= 0, table[np.maximum(codes, 0)], missing)


def _clean(text: pd.Series, limit: int = _OBJECT_CHARS) -> pd.Series:
    """Log text fit for a reason: no control characters, at most ``limit`` characters."""
    text = text.astype(str).str.replace(_CONTROL, "?", regex=True)
    long = text.str.len() > limit
    return text.where(~long, text.str.slice(0, limit - 1) + "…")


def gather(frame: pd.DataFrame, *, user_codes: np.ndarray, user_names: np.ndarray,
           action_codes: np.ndarray, action_names: np.ndarray,
           catalogue: Sequence[SensitiveAction] = SENSITIVE_ACTIONS) -> Evidence:
    """The per-event evidence of ``frame`` (already filtered to the events to window)."""
    n = len(frame)
    entry = _lookup(sensitive_entries(action_names, catalogue), action_codes, -1)
    resource, resource_names = _factorize(frame, "resource")
    sensitive = ((entry >= 0) & _who_holds(frame, entry, user_codes, user_names, catalogue)
                 & _resource_holds(entry, resource, resource_names, catalogue)
                 & _column_holds(frame, entry, catalogue))
    host, host_names = _factorize(frame, "host")
    phrase, phrase_names = _phrases(sensitive, entry, action_codes, action_names, resource,
                                    resource_names, host, host_names, catalogue)
    session, session_names = _factorize(frame, "session")
    credential, credential_names = _credentials(user_codes, user_names, host, host_names,
                                                session, session_names)
    path, path_names = _first_codes(*_factorize(frame, "url_path"))
    query, query_names = _factorize(frame, "url_query")
    status = np.zeros(n, dtype=np.int64)
    if "status" in frame.columns:
        status = pd.to_numeric(frame["status"], errors="coerce").fillna(0) \
            .to_numpy().astype(np.int64)
    decoded_paths = _decoded(path_names)
    probe = _lookup(decoded_paths.str.contains(_SENSITIVE_PATH).to_numpy(dtype=bool), path,
                    False).astype(bool)
    kind_q = _lookup(_injection_kind(_decoded(query_names)), query, -1)
    kind_p = _lookup(_injection_kind(decoded_paths), path, -1)
    injection = np.where(kind_q >= 0, kind_q, kind_p).astype(np.int64)
    agent, agent_names, scanner = _agents(frame)
    phrase, phrase_names = _sorted_codes(phrase, phrase_names)
    agent, agent_names = _first_codes(agent, agent_names)
    return Evidence(
        sensitive=sensitive, remote=_remote(frame, sensitive, action_codes, action_names,
                                            host, session),
        phrase=phrase, phrase_names=phrase_names, credential=credential,
        credential_names=credential_names, path=path,
        path_names=path_names, status=status, probe=probe, injection=injection, agent=agent,
        agent_names=agent_names, scanner=scanner)


def _sorted_codes(codes: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes over the sorted distinct texts of ``names`` (equal texts share one code), so
    that they order and count the same way whichever chunk of a log they were made from."""
    if not len(names):
        return codes, np.asarray(names, dtype=object)
    text = np.asarray(names, dtype=object).astype(str)
    distinct, inverse = np.unique(text, return_inverse=True)
    mapped = np.where(codes >= 0, inverse.ravel()[np.maximum(codes, 0)], -1).astype(np.int64)
    return mapped, distinct.astype(object)


def _first_codes(codes: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes over the distinct texts of ``names`` in their order (equal texts share the
    first one's code): paths and tools are named in the order the log first shows them."""
    text = np.asarray(names, dtype=object).astype(str).astype(object)
    if len(text) == len(set(text)):
        return codes, text
    distinct, first, inverse = np.unique(text, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # distinct texts in order of first appearance
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    mapped = np.where(codes >= 0, rank[inverse.ravel()][np.maximum(codes, 0)], -1)
    return mapped.astype(np.int64), distinct[order].astype(object)


def _credentials(user: np.ndarray, user_names: np.ndarray, host: np.ndarray,
                 host_names: np.ndarray, session: np.ndarray, session_names: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A code per event for its credential, and the credentials' names.

    A credential belongs to one user on one host (logon ids repeat across hosts); its name
    (user, host, session joined by ``\x1f``) identifies it across the chunks of a log.
    """
    n = len(user)
    has = (session >= 0) & (user >= 0)
    if not has.any():
        return np.full(n, -1, dtype=np.int64), np.empty(0, dtype=object)
    key = pd.DataFrame({"u": user[has], "h": host[has], "s": session[has]})
    group = key.groupby(["u", "h", "s"], sort=False).ngroup().to_numpy()
    first = _first_of(group)  # one name per distinct credential, never per event
    u, h, s = (key[c].to_numpy()[first] for c in ("u", "h", "s"))
    hosts = _lookup(np.asarray(host_names, dtype=object), h, "")
    text = np.array([f"{a}\x1f{b}\x1f{c}" for a, b, c in  # one per credential, not event
                     zip(user_names[u], hosts, session_names[s], strict=True)], dtype=object)
    codes = np.full(n, -1, dtype=np.int64)
    codes[has] = group
    return _sorted_codes(codes, text)


def _who_holds(frame: pd.DataFrame, entry: np.ndarray, user_codes: np.ndarray,
               user_names: np.ndarray, catalogue: Sequence[SensitiveAction]) -> np.ndarray:
    """Whether each event's principal is one its catalogue entry applies to."""
    who = np.array([_WHO.index(e.who) for e in catalogue] or [0], dtype=np.int64)
    need = np.where(entry >= 0, who[np.maximum(entry, 0)], 0)
    if not need.any():
        return np.ones(len(entry), dtype=bool)
    names = pd.Series(user_names, dtype=object).astype(str)
    if "user_kind" in frame.columns:
        kind = frame["user_kind"].astype("string").fillna("").to_numpy(dtype=object)
        machine = kind == "machine"
        anonymous = kind == "anonymous"
    else:  # the readers that know say so in user_kind; without it, Windows' own conventions
        machine = _lookup(names.str.endswith("$").to_numpy(dtype=bool), user_codes, False)
        anonymous = _lookup(names.str.upper().eq("ANONYMOUS LOGON").to_numpy(dtype=bool),
                            user_codes, False)
    instance = _lookup(names.str.contains(_INSTANCE_SESSION).to_numpy(dtype=bool), user_codes,
                       False)
    return ((need == 0) | ((need == 1) & ~machine.astype(bool))
            | ((need == 2) & anonymous.astype(bool)) | ((need == 3) & instance.astype(bool)))


def _resource_holds(entry: np.ndarray, resource: np.ndarray, resource_names: np.ndarray,
                    catalogue: Sequence[SensitiveAction]) -> np.ndarray:
    """Whether each event's resource is one its catalogue entry names (any, when none)."""
    out = np.ones(len(entry), dtype=bool)
    for k, item in enumerate(catalogue):  # one pass per entry with resources, never per event
        rows = entry == k
        if not item.resources or not rows.any():
            continue
        regex = re.compile("|".join(fnmatch.translate(g.lower()) for g in item.resources))
        # one match per distinct resource name (a vocabulary), never per event
        ok = np.array([regex.match(str(n).lower()) is not None for n in resource_names],
                      dtype=bool)
        out[rows] = _lookup(ok, resource[rows], False).astype(bool)
    return out


def _column_holds(frame: pd.DataFrame, entry: np.ndarray,
                  catalogue: Sequence[SensitiveAction]) -> np.ndarray:
    """Whether each event's ``column`` value is one its catalogue entry names (any, when the
    entry names none; never, when the frame has no such column)."""
    out = np.ones(len(entry), dtype=bool)
    for k, item in enumerate(catalogue):  # one pass per entry with values, never per event
        rows = entry == k
        if not item.column or not rows.any():
            continue
        if item.column not in frame.columns:
            out[rows] = False
            continue
        codes, names = _factorize(frame, item.column)
        regex = re.compile("|".join(fnmatch.translate(v.lower()) for v in item.values))
        ok = np.array([regex.match(str(n).lower()) is not None for n in names], dtype=bool)
        out[rows] = _lookup(ok, codes[rows], False).astype(bool)
    return out


def _short_action(names: pd.Series) -> pd.Series:
    # "cloudtrail.amazonaws.com:DeleteTrail" reads as "cloudtrail:DeleteTrail"
    return names.str.replace(r"\.amazonaws\.com:", ":", regex=True)


def _phrases(sensitive: np.ndarray, entry: np.ndarray, action: np.ndarray,
             action_names: np.ndarray, resource: np.ndarray, resource_names: np.ndarray,
             host: np.ndarray, host_names: np.ndarray,
             catalogue: Sequence[SensitiveAction]) -> tuple[np.ndarray, np.ndarray]:
    """Per sensitive event, a code for its phrase ("service.install of IKEEXT on WS6")."""
    phrase = np.full(len(sensitive), -1, dtype=np.int64)
    if not sensitive.any():
        return phrase, np.empty(0, dtype=object)
    rows = np.flatnonzero(sensitive)
    r_width = int(resource.max()) + 2
    h_width = int(host.max()) + 2
    packed = (action[rows] * r_width + resource[rows] + 1) * h_width + host[rows] + 1
    distinct, code = np.unique(packed, return_inverse=True)
    parts = pd.DataFrame({"a": distinct // h_width // r_width,
                          "r": distinct // h_width % r_width - 1, "h": distinct % h_width - 1})
    labels = np.array([e.label for e in catalogue], dtype=object)
    label = pd.Series(labels[entry[rows][_first_of(code)]], dtype=object)
    text = _short_action(pd.Series(action_names[parts["a"].to_numpy()], dtype=object)
                         .astype(str))
    text = _clean(text)
    obj = pd.Series(_lookup(resource_names, parts["r"].to_numpy(), ""), dtype=object)
    text = text.where(obj.eq(""), text + " of " + _clean(obj))
    text = text.where(label.eq(""), text + " (" + label + ")")
    where = pd.Series(_lookup(host_names, parts["h"].to_numpy(), ""), dtype=object)
    text = text.where(where.eq(""), text + " on " + _clean(where, 40))
    phrase[rows] = code
    return phrase, text.to_numpy(dtype=object)


def _first_of(code: np.ndarray) -> np.ndarray:
    """For each distinct code 0..k-1, the position of its first occurrence."""
    _, first = np.unique(code, return_index=True)
    return first


def _remote(frame: pd.DataFrame, sensitive: np.ndarray, action: np.ndarray,
            action_names: np.ndarray, host: np.ndarray, session: np.ndarray) -> np.ndarray:
    """Service or task creations whose logon session (on that host) came over the network."""
    out = np.zeros(len(sensitive), dtype=bool)
    creates = np.isin(action_names.astype(str), _REMOTE_ACTIONS) if len(action_names) else \
        np.zeros(0, dtype=bool)
    made = sensitive & _lookup(creates, action, False).astype(bool) & (session >= 0)
    if not made.any() or "logon_type" not in frame.columns:
        return out
    logon = frame["logon_type"].astype("string").fillna("").to_numpy(dtype=object)
    network = np.isin(logon, _NETWORK_LOGONS) & (session >= 0)
    width = int(session.max()) + 1
    keys = np.unique((host[network] + 1) * width + session[network])
    return made & np.isin((host + 1) * width + session, keys)


def _decoded(names: np.ndarray) -> pd.Series:
    """Distinct URL parts percent-decoded twice (scanners double-encode) and lower-cased."""
    values = pd.Series(names, dtype=object).astype(str)
    return values.map(lambda v: unquote_plus(unquote_plus(v))).str.lower()


def _injection_kind(decoded: pd.Series) -> np.ndarray:
    kind = np.full(len(decoded), -1, dtype=np.int64)
    for k, (_, pattern) in enumerate(_INJECTION):  # one pass per pattern over distinct values
        hit = decoded.str.contains(pattern).to_numpy(dtype=bool) & (kind < 0)
        kind[hit] = k
    return kind


def _agents(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event, a code for the attack tool or script named by its user agent."""
    codes, names = _factorize(frame, "user_agent")
    values = pd.Series(names, dtype=object).astype(str)
    strong = values.str.extract(_SCANNER, expand=False).notna().to_numpy(dtype=bool) \
        if len(values) else np.zeros(0, dtype=bool)
    tool = values.str.extract(f"({_SCANNER.pattern})", flags=re.IGNORECASE, expand=False)
    script = values.str.extract(f"({_SCRIPTED.pattern})", flags=re.IGNORECASE, expand=False)
    token = tool[0] if isinstance(tool, pd.DataFrame) else tool
    weak = script[0] if isinstance(script, pd.DataFrame) else script
    token = token.fillna(weak) if len(values) else token
    found = token.notna().to_numpy(dtype=bool) if len(values) else np.zeros(0, dtype=bool)
    labels, uniques = pd.factorize(token, use_na_sentinel=True) if len(values) else \
        (np.zeros(0, dtype=np.int64), pd.Index([]))
    agent = _lookup(np.where(found, labels, -1).astype(np.int64), codes, -1).astype(np.int64)
    scanner = _lookup(strong, codes, False).astype(bool)
    return agent, _clean(pd.Series(uniques, dtype=object), 40).to_numpy(dtype=object), scanner


# -- per window -------------------------------------------------------------------------------

#: A detail to phrase: codes per windowed row, their names, which rows, with counts or not.
Detail = tuple[np.ndarray, np.ndarray, np.ndarray, bool]


def window_evidence(ev: Evidence, idx: np.ndarray, win: np.ndarray, n_win: int, *,
                    etype: str, t: np.ndarray, window_end: np.ndarray,
                    first_use: np.ndarray, address: np.ndarray, address_names: np.ndarray,
                    credential_first: tuple[np.ndarray, np.ndarray]
                    ) -> tuple[dict[str, np.ndarray], dict[str, Detail]]:
    """Evidence features of each window, and what their reasons name.

    ``idx`` maps windowed rows to events, ``win`` rows to windows (rows sorted by window and
    time); ``first_use`` says which rows' (entity, action) pair is new as of their window
    (the extractor's fitting rule); ``address`` holds the rows' source address codes and
    ``address_names`` their text; ``credential_first`` is, for every distinct (credential,
    address) pair of the log, its credential and first time, sorted by both (see
    :func:`credential_first_times`).
    """
    cols: dict[str, np.ndarray] = {}
    details: dict[str, Detail] = {}
    if etype == "user":
        sens = ev.sensitive[idx]
        phrase = ev.phrase[idx]
        new = sens & first_use
        cols["n_new_sensitive"] = _count_distinct(win, phrase, new, n_win)
        cols["n_sensitive"] = np.bincount(win, sens, minlength=n_win).astype(float)
        remote = ev.remote[idx]
        cols["n_remote_creations"] = np.bincount(win, remote, minlength=n_win).astype(float)
        details["d_new_sensitive"] = (phrase, ev.phrase_names, new, False)
        details["d_sensitive"] = (phrase, ev.phrase_names, sens, True)
        details["d_remote_creations"] = (phrase, ev.phrase_names, remote, False)
        spread, multi = _credential_spread(ev.credential[idx], address, win, window_end,
                                           n_win, credential_first)
        cols["credential_addresses"] = spread
        details["d_credential_addresses"] = (address, address_names, multi, False)
    path = ev.path[idx]
    status = ev.status[idx]
    answered = np.maximum(np.bincount(win, status > 0, minlength=n_win), 1)
    cols["n_paths"] = _count_distinct(win, path, path >= 0, n_win)
    cols["share_4xx"] = np.bincount(win, (status >= 400) & (status < 500),
                                    minlength=n_win) / answered
    cols["share_5xx"] = np.bincount(win, status >= 500, minlength=n_win) / answered
    probe = ev.probe[idx]
    cols["n_sensitive_probes"] = np.bincount(win, probe, minlength=n_win).astype(float)
    details["d_sensitive_probes"] = (path, ev.path_names, probe, False)
    injection = ev.injection[idx]
    cols["n_injection"] = np.bincount(win, injection >= 0, minlength=n_win).astype(float)
    details["d_injection"] = (injection, _INJECTION_KINDS, injection >= 0, True)
    agent, scanner = ev.agent[idx], ev.scanner[idx]
    cols["n_scanner_requests"] = np.bincount(win, scanner, minlength=n_win).astype(float)
    scripted = (agent >= 0) & ~scanner
    cols["n_scripted_requests"] = np.bincount(win, scripted, minlength=n_win).astype(float)
    details["d_scanner"] = (agent, ev.agent_names, scanner, False)
    details["d_scripted"] = (agent, ev.agent_names, scripted, False)
    return cols, details


def _count_distinct(win: np.ndarray, codes: np.ndarray, mask: np.ndarray,
                    n_win: int) -> np.ndarray:
    ok = mask & (codes >= 0)
    if not ok.any():
        return np.zeros(n_win)
    keys = np.unique(win[ok] * (int(codes[ok].max()) + 1) + codes[ok])
    return np.bincount(keys // (int(codes[ok].max()) + 1), minlength=n_win).astype(float)


def credential_first_times(pair_credential: np.ndarray, pair_first: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """The (credential, first time) of distinct (credential, address) pairs, sorted."""
    order = np.lexsort((pair_first, pair_credential))
    return pair_credential[order], pair_first[order]


def _credential_spread(credential: np.ndarray, address: np.ndarray, win: np.ndarray,
                       window_end: np.ndarray, n_win: int,
                       credential_first: tuple[np.ndarray, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Most addresses any one credential of the window was used from by the window's end.

    "As seen so far" in the log: the addresses count when first seen before the window
    ends, so the window where a stolen key turns up somewhere else is the one that shows it.
    Returns the count per window (0 below two addresses) and the rows using such a key.
    """
    out = np.zeros(n_win)
    ok = (credential >= 0) & (address >= 0)
    if not ok.any():
        return out, np.zeros(len(win), dtype=bool)
    # a credential's addresses seen before a moment are a range of the sorted table
    cred_s, first_s = credential_first
    seen = _ranged_count(cred_s, first_s, credential[ok], window_end[win[ok]])
    per_row = np.zeros(len(win))
    per_row[ok] = seen
    np.maximum.at(out, win, per_row)
    out[out < 2] = 0.0
    return out, ok & (per_row >= 2)


def _ranged_count(keys: np.ndarray, times: np.ndarray, key: np.ndarray,
                  before: np.ndarray) -> np.ndarray:
    """How many (keys, times) pairs (sorted by key then time) have ``key`` and time < before."""
    # whole seconds keep the packed keys in range; window ends are whole seconds, so
    # "first seen before the end" is unchanged by the flooring
    sec = 1_000_000_000
    origin = min(int(times.min()), int(before.min())) // sec
    span = max(int(times.max()), int(before.max())) // sec - origin + 1
    packed = keys * span + (times // sec - origin)
    lo = np.searchsorted(packed, key * span, side="left")
    hi = np.searchsorted(packed, key * span + (before // sec - origin), side="left")
    return (hi - lo).astype(float)
