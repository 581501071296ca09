"""Benign look-alikes of the attacks hourly counts cannot see (never labelled).

A team onboarding (many new accounts and addresses at once), a VPN change (many people move
to new addresses on the same day) and a weekend release (engineers working on a Saturday).
They draw from their own random stream, so adding them leaves every other event of an
organisation as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analyzer.synth._attacks import _WEB_PATHS
from analyzer.synth._catalogue import _FIRST, _LAST, _OFFICES, DAY_S
from analyzer.synth._world import _IPs, _session_ids, _World

_BROWSERS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/124.0 Safari/537.36",
             "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like "
             "Gecko) Version/17.4 Safari/605.1.15",
             "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0")


class _Lookalikes:
    """Benign surprises that look like credential stuffing, hijacks and collection."""

    def __init__(self, world: _World, used_users: set[int]) -> None:
        self.w = world
        self.cfg = world.config
        self.rng = np.random.default_rng([self.cfg.seed, 13])
        self.ips = _IPs(self.rng)
        self.ips.used = world.ips.used
        self.used = used_users
        self.rows: list[dict[str, Any]] = []

    def _event(self, t: float, user: int | str, action: str, *, ip: str, country: str,
               city: str, resource: int | str = -1, fail: bool = False,
               session: str | None = None, nbytes: float = -1.0, **extra: Any) -> None:
        self.rows.append({"t": t, "user": user, "action": action, "resource": resource,
                          "fail": fail, "ip": ip, "country": country, "city": city,
                          "session": session, "bytes": nbytes, **extra})

    def _weekday(self, *, saturday: bool = False) -> int | None:
        days = np.arange(self.cfg.train_days, self.cfg.days)
        dow = (self.cfg.start.day_of_week + days) % 7
        days = days[dow == 5] if saturday else days[dow < 5]
        return int(self.rng.choice(days)) if len(days) else None

    def _free(self, n: int, roles: tuple[str, ...] = (), office: str | None = None
              ) -> list[int]:
        """Up to ``n`` office workers no attack or other look-alike uses (then marked used)."""
        w = self.w
        cands = [i for i in range(self.cfg.users) if i not in self.used and w.office[i]
                 and (not roles or w.role_name[i] in roles)
                 and (office is None or w.office[i] == office)]
        picked = [int(i) for i in self.rng.permutation(cands)[:n]]
        self.used.update(picked)
        return picked

    def team_onboarding(self) -> None:
        """8-12 people of one team join the same day, each from a new workstation."""
        rng, w, cfg = self.rng, self.w, self.cfg
        first = self._weekday()
        if first is None:
            return
        team = str(rng.choice(sorted(set(w.team[: cfg.users].tolist()))))
        office = cfg.offices[0]
        country, city, tz = _OFFICES[office]
        pool = np.concatenate([w.team_pool["dataset"][team], w.team_pool["model"][team]])
        taken = set(w.account_names().tolist())
        for k in range(int(rng.integers(8, 13))):
            name = ""
            while not name or name in taken:
                name = (f"{_FIRST[int(rng.integers(len(_FIRST)))]}."
                        f"{_LAST[int(rng.integers(len(_LAST)))]}{int(rng.integers(100, 999))}")
            taken.add(name)
            ip = f"10.{cfg.offices.index(office) + 1}.{40 + k // 200}.{10 + k % 200}"
            for day in range(first, cfg.days):
                if (cfg.start.day_of_week + day) % 7 >= 5:
                    continue
                t = day * DAY_S + (9.5 - tz + rng.uniform(0, 6)) * 3600
                sess = str(_session_ids(rng, 1)[0])
                if day == first and rng.random() < 0.4:  # a mistyped first password
                    self._event(t - 30, name, "login", ip=ip, country=country, city=city,
                                fail=True)
                self._event(t, name, "login", ip=ip, country=country, city=city,
                            session=sess)
                for x in np.sort(rng.uniform(60, 5400, int(rng.integers(6, 16)))):
                    r = int(rng.choice(pool))
                    action = "dataset.read" if w.res_type[r] == "dataset" else \
                        "model.inference"
                    self._event(t + x, name, action, ip=ip, country=country, city=city,
                                resource=r, session=sess)
            w.surprises.append(("team_onboarding", name, w._day(first), w._day(cfg.days),
                                f"{name} joins the {team} team with {k} others"))

    def vpn_change(self, normal: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Up to 12 people of one office move to a few new VPN egress addresses on one day:
        their activity from then on comes from there (a move, not a second address)."""
        w, cfg = self.w, self.cfg
        day = self._weekday()
        if day is None:
            return normal
        office = cfg.offices[-1]
        # only the movers are taken: the weekend release still finds its engineers
        group = self._free(12, office=office)
        if not group:
            return normal
        country = _OFFICES[office][0]
        egress = np.array(self.ips.public(country, 4), dtype=object)
        ip = normal["ip"].copy()
        user = normal["user"].astype(np.int64)
        moved = np.isin(user, group) & (normal["t"] >= day * DAY_S)
        slot = {u: egress[k % len(egress)] for k, u in enumerate(group)}
        ip[moved] = [slot[int(u)] for u in user[moved]]
        for u in group:
            w.surprises.append(("vpn_change", str(w.user[u]), w._day(day), w._day(cfg.days),
                                f"{w.user[u]} moves to VPN egress {slot[u]} with the "
                                f"{office} office"))
        return {**normal, "ip": ip}

    def weekend_release(self) -> None:
        """4-6 engineers ship a release on a Saturday from home, for a few hours."""
        rng, w = self.rng, self.w
        day = self._weekday(saturday=True)
        if day is None:
            return
        people = self._free(int(rng.integers(4, 7)), ("ml-engineer", "platform-engineer"))
        start = float(rng.uniform(8, 14))
        for i in people:
            ip = str(w.home_ip(np.array([i]), np.array([day]))[0])
            country, city = str(w.country[i]), str(w.city[i])
            t = day * DAY_S + (start - w.tz[i] + rng.uniform(0, 0.5)) * 3600
            sess = str(_session_ids(rng, 1)[0])
            self._event(t, i, "login", ip=ip, country=country, city=city, session=sess)
            models, configs = w.fav["model"][i], w.fav["config"][i]
            for x in np.sort(rng.uniform(60, 3 * 3600, int(rng.integers(8, 20)))):
                if len(configs) and rng.random() < 0.4:
                    self._event(t + x, i, "config.change", ip=ip, country=country, city=city,
                                resource=int(rng.choice(configs)), session=sess)
                elif len(models):
                    action = "model.upload" if rng.random() < 0.3 else "model.inference"
                    self._event(t + x, i, action, ip=ip, country=country, city=city,
                                resource=int(rng.choice(models)), session=sess)
            w.surprises.append(("weekend_release", str(w.user[i]), w._day(day),
                                w._day(day + 1), f"{w.user[i]} works on a weekend release"))

    def evidence_routine(self) -> None:
        """Over the whole period, what the evidence attacks look like when nobody attacks:
        a web front end's ordinary clients and a monitoring probe of ``/health``, the
        administrators' ``iam:CreateUser`` for new joiners, domain controllers replicating."""
        rng, cfg = self.rng, self.cfg
        places = [_OFFICES[o][:2] for o in cfg.offices]
        clients = []
        for _ in range(40):
            country, city = places[int(rng.integers(len(places)))]
            clients.append((self.ips.public(country)[0], country, city,
                            str(rng.choice(_BROWSERS))))
        for day in range(cfg.days):
            for ip, country, city, agent in clients:
                if rng.random() > 0.3:
                    continue
                t = day * DAY_S + rng.uniform(6, 22) * 3600
                for x in np.sort(rng.uniform(0, 300, int(rng.integers(3, 12)))):
                    path = str(rng.choice((*_WEB_PATHS, "/favicon.ico")))
                    status = 404 if path == "/favicon.ico" else \
                        int(rng.choice((200, 200, 304)))
                    self._event(t + x, "", "http.get", ip=ip, country=country, city=city,
                                resource=path, fail=status >= 400, url_path=path,
                                url_query="", status=status, user_agent=agent)
        country, city = places[0]
        for t in np.arange(0, cfg.days * DAY_S, 300.0) + rng.uniform(0, 5):
            self._event(float(t), "", "http.get", ip="10.0.0.9", country=country, city=city,
                        resource="/health", url_path="/health", url_query="", status=200,
                        user_agent="curl/8.5.0")
        for dc, ip in (("DC01$", "10.0.0.2"), ("DC02$", "10.0.0.3")):
            for t in np.arange(0, cfg.days * DAY_S, 900.0) + rng.uniform(0, 60):
                self._event(float(t), dc, "directory.replication", ip=ip, country=country,
                            city=city, resource="DC=corp,DC=example")
        self._onboarding_admins()

    def _onboarding_admins(self) -> None:
        """Each administrator creates an account for a new joiner about twice a week."""
        rng, w, cfg = self.rng, self.w, self.cfg
        for i in [i for i in range(cfg.users) if w.role_name[i] == "admin"]:
            for day in range(cfg.days):
                if (cfg.start.day_of_week + day) % 7 >= 5 or rng.random() > 0.4:
                    continue
                ip = str(w.usual_ip(i, day))
                country, city = str(w.country[i]), str(w.city[i])
                t = day * DAY_S + (w.work_start[i] + rng.uniform(1, 5) - w.tz[i]) * 3600
                joiner = f"user/{_FIRST[int(rng.integers(len(_FIRST)))].lower()}." \
                         f"{_LAST[int(rng.integers(len(_LAST)))].lower()}"
                for k, action in enumerate(("iam.amazonaws.com:CreateUser",
                                            "iam.amazonaws.com:CreateLoginProfile",
                                            "iam.amazonaws.com:AddUserToGroup")):
                    self._event(t + 60 * k, i, action, ip=ip, country=country, city=city,
                                resource=joiner)
                if day >= cfg.train_days:
                    w.surprises.append(("evidence_routine", str(w.user[i]), w._day(day),
                                        w._day(day + 1),
                                        f"{w.user[i]} creates an account for a new joiner"))

    def columns(self) -> dict[str, np.ndarray]:
        if not self.rows:
            return {}
        names = dict.fromkeys(c for r in self.rows for c in r)  # extras: some rows only
        return {c: np.array([r.get(c) for r in self.rows], dtype=object) for c in names}
