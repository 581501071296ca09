"""Normal activity: the roster, its places and habits, and weeks of ordinary events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer.synth._catalogue import (
    _A,
    _ACTION_NAMES,
    _ACTIONS,
    _DATA_KIND,
    _FIRST,
    _LAST,
    _MODEL_ARCH,
    _NS_UTC,
    _OFFICES,
    _PREFIX,
    _REMOTE,
    _ROLE_NAMES,
    _ROLE_PACE,
    _RTYPES,
    _SENSITIVE,
    _SERVICE_TEMPLATES,
    _SHARED_DATASETS,
    _SHARED_MODELS,
    _TEAMS,
    _TRAVEL,
    DAY_S,
    ROLES,
)
from analyzer.synth._config import (
    SynthConfig,
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
