"""Labelled attack scenarios and unlabelled benign surprises, at normal volume."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer.synth._catalogue import (
    _A,
    _ATTACK_ORIGINS,
    _FIRST,
    _LAST,
    _NS_UTC,
    _OFFICES,
    _ROLE_NAMES,
    _SENSITIVE,
    _SERVICE_TEMPLATES,
    _TEAMS,
    DAY_S,
)
from analyzer.synth._world import (
    _empty_cols,
    _session_ids,
    _World,
)

# Web: what a scanner asks for, and the front end's ordinary pages (its look-alikes too).
_PROBED_PATHS = ("/.env", "/.git/config", "/wp-login.php", "/wp-admin/", "/phpmyadmin/",
                 "/admin", "/server-status", "/cgi-bin/test.cgi", "/backup.sql",
                 "/config.php.bak", "/.aws/credentials", "/actuator/env")
_WEB_PATHS = ("/", "/docs", "/api/v1/models", "/api/v1/datasets", "/search", "/login",
              "/static/app.js", "/static/style.css", "/about")
_INJECTIONS = ("id=1%27%20OR%20%271%27%3D%271", "q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
               "file=..%2F..%2F..%2Fetc%2Fpasswd", "id=1%20UNION%20SELECT%20null%2Cnull--",
               "page=php%3A%2F%2Ffilter%2Fresource%3Dindex")
_SCANNER_AGENTS = ("sqlmap/1.7.2#stable (https://sqlmap.org)", "Mozilla/5.00 (Nikto/2.5.0)",
                   "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
                   "gobuster/3.6")

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
               session: str | None = None, nbytes: float = -1.0, **extra: Any
               ) -> dict[str, Any]:
        """One event; ``extra`` holds columns only some events have (``url_path``...)."""
        row = {"t": t, "user": user, "action": _A.get(action, action),
               "resource": resource, "fail": fail, "ip": ip, "country": country,
               "city": city, "session": session, "bytes": nbytes, **extra}
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

    def _service_account(self) -> dict:
        """A service account no earlier scenario used (any, once all are taken)."""
        services = self.w.services
        free = [k for k in range(len(services)) if k not in self.used_services] \
            or list(range(len(services)))
        k = int(self.rng.choice(free))
        self.used_services.add(k)
        return services[k]

    def service_account_interactive(self) -> None:
        rng, w = self.rng, self.w
        if not w.services:
            return
        svc = self._service_account()
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

    # attacks that per-entity hourly counts cannot see --------------------------------

    def credential_stuffing(self) -> None:
        """Hundreds of new addresses, one or two failures each against many accounts, within
        one hour; then one of them gets into an account."""
        rng, w = self.rng, self.w
        day = self._day(weekday=False)
        hour = self._within(day * DAY_S + float(rng.integers(0, 23)) * 3600, 3600)
        t0 = hour + rng.uniform(0, 300)
        n_addr = self._n(250, 450)
        # residential proxies chosen to match the organisation's own countries, so that no
        # address's country gives it away
        countries = sorted({_OFFICES[o][0] for o in self.cfg.offices})
        drawn = rng.choice(countries, size=n_addr)
        rows = []
        names = self.cfg.users
        for c in np.unique(drawn):
            for ip in w.ips.public(str(c), int((drawn == c).sum())):
                for _ in range(int(rng.integers(1, 3))):
                    rows.append(self._event(t0 + rng.uniform(0, 40 * 60),
                                            int(rng.integers(names)), "login", ip=ip,
                                            country=str(c), city="", fail=True))
        i = self._victim(_ROLE_NAMES)
        c = str(w.country[i])
        ip = w.ips.public(c)[0]
        t = t0 + rng.uniform(41, 48) * 60
        sess = self._sess()
        hit = [self._event(t, i, "login", ip=ip, country=c, city="", fail=True),
               self._event(t + rng.uniform(5, 30), i, "login", ip=ip, country=c, city="",
                           session=sess)]
        favs = w.fav["dataset"][i]
        for r in favs[: int(rng.integers(1, 3))]:
            hit.append(self._event(t + rng.uniform(60, 600), i, "dataset.read", ip=ip,
                                   country=c, city="", resource=int(r), session=sess,
                                   nbytes=w.res_size[r] * 0.2))
        self._record("credential_stuffing", hit, [("user", self._name(i)), ("source_ip", ip)],
                     f"{len(rows)} failed logins from {n_addr} new addresses against "
                     f"{len({r['user'] for r in rows})} accounts in 40 minutes; then "
                     f"{w.user[i]} logs in from {ip}")

    def low_and_slow_collection(self) -> None:
        """A few never-touched datasets a day, every working day, at normal hours from the
        usual address."""
        rng, w = self.rng, self.w
        i = self._victim(("data-scientist", "ml-engineer", "contractor"))
        mine = set(w.team_pool["dataset"][str(w.team[i])].tolist()) \
            | set(w.fav["dataset"][i].tolist())
        sensitive = {w.res_index[r] for r in _SENSITIVE}
        other = [r for r in np.flatnonzero(w.res_type == "dataset")
                 if r not in mine and r not in sensitive and w.res_team[r] != "shared"]
        pool = list(rng.permutation(other))
        rows = []
        for day in range(self.first_day, self.cfg.days):
            if (self.cfg.start.day_of_week + day) % 7 >= 5 or not pool:
                continue
            ip, country, city, t, sess = self._inside(i, day)
            rows.append(self._event(t, i, "login", ip=ip, country=country, city=city,
                                    session=sess))
            for _ in range(min(len(pool), self._n(2, 4))):
                r = int(pool.pop())
                t += rng.uniform(600, 3000)
                rows.append(self._event(t, i, "dataset.read", ip=ip, country=country,
                                        city=city, resource=r, session=sess,
                                        nbytes=w.res_size[r] * rng.uniform(0.2, 0.5)))
        if not rows:
            return
        taken = sum(r["action"] == _A["dataset.read"] for r in rows)
        self._record("low_and_slow_collection", rows, [("user", self._name(i))],
                     f"{w.user[i]} reads {taken} datasets of other teams, a few each working "
                     "day, from the usual place")

    def session_hijack(self) -> None:
        """The account's own actions on its own resources from a second, never-seen address
        while its owner works from the usual one."""
        rng, w = self.rng, self.w
        i = self._victim(("data-scientist", "ml-engineer", "contractor", "analyst"))
        day = self._day()
        ip, country, city, t, sess = self._inside(i, day)
        t = t - t % 3600 + rng.uniform(60, 400)
        datasets, models = w.fav["dataset"][i], w.fav["model"][i]

        def own(when: float, where: str) -> dict[str, Any]:
            if len(datasets) and (rng.random() < 0.5 or not len(models)):
                r = int(rng.choice(datasets))
                return self._event(when, i, "dataset.read", ip=where, country=country,
                                   city=city, resource=r, session=sess,
                                   nbytes=w.res_size[r] * 0.3)
            r = int(rng.choice(models)) if len(models) else -1
            return self._event(when, i, "model.inference", ip=where, country=country,
                               city=city, resource=r, session=sess)

        owner = [self._event(t, i, "login", ip=ip, country=country, city=city, session=sess)]
        owner += [own(t + x, ip) for x in np.sort(rng.uniform(60, 3000, self._n(6, 10)))]
        thief_ip = w.ips.public(country)[0]
        start = t + rng.uniform(300, 900)
        thief = [own(start + x, thief_ip)
                 for x in np.sort(rng.uniform(0, 1500, self._n(4, 8)))]
        self._record("session_hijack", owner + thief,
                     [("user", self._name(i)), ("source_ip", thief_ip)],
                     f"{w.user[i]}'s session is used from {thief_ip} while {w.user[i]} works "
                     f"from {ip}")

    def stable_entity_novelty(self) -> None:
        """A service account reads one dataset it never touched, at its usual hour from its
        usual address, among its usual work."""
        rng, w = self.rng, self.w
        if not w.services:
            return
        svc = self._service_account()
        tpl = next(x for x in _SERVICE_TEMPLATES if x["name"] == svc["template"])
        lo, hi = tpl["hours"] or (9, 17)
        day = self._day()
        t = self._within(day * DAY_S + rng.uniform(lo, hi - 0.5) * 3600, 3600)
        country, city = _OFFICES[self.cfg.offices[0]][:2]
        usual = svc["resources"]
        never = [r for r in np.flatnonzero(w.res_type == "dataset") if r not in set(usual)]
        target = int(rng.choice(never))
        rows = []
        for _ in range(int(rng.integers(1, 3))):
            if len(usual):
                r = int(rng.choice(usual))
                action = "dataset.read" if w.res_type[r] == "dataset" else "model.inference"
                rows.append(self._event(t + rng.uniform(0, 60), svc["user"], action,
                                        ip=svc["ip"], country=country, city=city, resource=r))
        rows.append(self._event(t + rng.uniform(60, 120), svc["user"], "dataset.read",
                                ip=svc["ip"], country=country, city=city, resource=target,
                                nbytes=w.res_size[target]))
        self._record("stable_entity_novelty", rows, [("user", svc["user"])],
                     f"{svc['user']} reads {w.res_names[target]}, which it never touched, "
                     "at its usual hour from its usual address")

    def dormant_account(self) -> None:
        """An account active in the first days of training only, waking up in the scored
        period: same address, same hours, same datasets."""
        rng, w = self.rng, self.w
        taken = set(w.account_names().tolist())
        name = ""
        while not name or name in taken:
            name = f"{_FIRST[int(rng.integers(len(_FIRST)))]}." \
                   f"{_LAST[int(rng.integers(len(_LAST)))]}-ext{int(rng.integers(2, 99))}"
        country, city, tz = _OFFICES[self.cfg.offices[0]]
        ip = f"10.1.{int(rng.integers(31, 60))}.{int(rng.integers(2, 250))}"
        datasets = rng.choice(np.flatnonzero(w.res_type == "dataset"), size=4, replace=False)

        def session(day: int) -> list[dict[str, Any]]:
            t = self._at(day, 10.0 - tz + rng.uniform(0, 5))
            sess = self._sess()
            out = [self._event(t, name, "login", ip=ip, country=country, city=city,
                               session=sess)]
            for x in np.sort(rng.uniform(60, 2400, int(rng.integers(3, 7)))):
                r = int(rng.choice(datasets))
                out.append(self._event(t + x, name, "dataset.read", ip=ip, country=country,
                                       city=city, resource=r, session=sess,
                                       nbytes=w.res_size[r] * 0.3))
            return out

        for day in range(min(3, max(1, self.first_day - 3))):
            session(day)
        wake = session(self._day())
        self._record("dormant_account", wake, [("user", name)],
                     f"{name}, silent since the first days of the log, reads datasets again")

    # attacks the events' own evidence names (EVIDENCE_SCENARIOS) ----------------------

    def web_scanning(self) -> None:
        """An outside address sweeps the web front end: well-known sensitive paths and
        injection-shaped queries, with a scanner's user agent, in a quarter of an hour."""
        rng = self.rng
        ip, country, city = self._attacker_ip()
        day = self._day(weekday=False)
        t0 = self._within(day * DAY_S + rng.uniform(0, 23) * 3600, 3600)
        agent = str(rng.choice(_SCANNER_AGENTS))
        n = self._n(60, 160)
        rows = []
        for t in np.sort(t0 + rng.random(n) * rng.uniform(8, 30) * 60):
            if rng.random() < 0.5:
                path, query = str(rng.choice(_PROBED_PATHS)), ""
                status = int(rng.choice((404, 404, 403, 200)))
            else:
                path, query = str(rng.choice(_WEB_PATHS)), str(rng.choice(_INJECTIONS))
                status = int(rng.choice((200, 400, 500)))
            rows.append(self._event(t, "", "http.get", ip=ip, country=country, city=city,
                                    resource=path, fail=status >= 400, url_path=path,
                                    url_query=query, status=status, user_agent=agent))
        self._record("web_scanning", rows, [("source_ip", ip)],
                     f"{ip} ({country}) probes {n} paths and queries with {agent}")

    def cloud_control_plane_abuse(self) -> None:
        """A person's stolen cloud keys, from an outside address: a look around, then the
        trail stopped, a user created with a key and a policy, a snapshot shared out."""
        rng, w = self.rng, self.w
        i = self._victim(("ml-engineer", "data-scientist", "platform-engineer"))
        ip, country, city = self._attacker_ip(avoid_country=str(w.country[i]))
        t = self._work_time(i, self._day())
        backdoor = f"user/{rng.choice(('svc-backup', 'ci-deployer', 'support-ops'))}"
        steps = [("sts.amazonaws.com:GetCallerIdentity", ""),
                 ("iam.amazonaws.com:ListUsers", ""),
                 ("cloudtrail.amazonaws.com:StopLogging", "trail/org-trail"),
                 ("cloudtrail.amazonaws.com:DeleteTrail", "trail/org-trail"),
                 ("iam.amazonaws.com:CreateUser", backdoor),
                 ("iam.amazonaws.com:CreateAccessKey", backdoor),
                 ("iam.amazonaws.com:AttachUserPolicy", backdoor),
                 ("ec2.amazonaws.com:ModifySnapshotAttribute", "snapshot/snap-prod-db")]
        keep = sorted(rng.choice(np.arange(2, len(steps)), size=self._n(3, 5), replace=False))
        rows = []
        for action, res in [steps[0], steps[1]] + [steps[k] for k in keep]:
            t += rng.uniform(20, 240)
            rows.append(self._event(t, i, action, ip=ip, country=country, city=city,
                                    resource=res))
        self._record("cloud_control_plane_abuse", rows,
                     [("user", self._name(i)), ("source_ip", ip)],
                     f"{w.user[i]}'s keys used from {ip} ({country}): "
                     + ", ".join(r["action"].split(":")[-1] for r in rows[2:]))

    def windows_credential_access(self) -> None:
        """A person, from their own workstation in working hours, uses replication rights
        (DCSync), installs a service on a server and clears its security log."""
        rng, w = self.rng, self.w
        i = self._victim(_ROLE_NAMES)
        ip, country, city, t, sess = self._inside(i, self._day())
        steps = [("directory.replication", "DC=corp,DC=example"),
                 ("directory.replication", "DC=corp,DC=example"),
                 ("service.install", str(rng.choice(("PSEXESVC", "updsvc", "WinRMhelper")))),
                 ("log.clear", "Security")]
        rows = []
        for action, res in steps[: max(2, self._n(2, 4))]:
            t += rng.uniform(30, 600)
            rows.append(self._event(t, i, action, ip=ip, country=country, city=city,
                                    resource=res, session=sess))
        then = "".join(f", then {r['action']} {r['resource']}" for r in rows[2:])
        self._record("windows_credential_access", rows, [("user", self._name(i))],
                     f"{w.user[i]} replicates the directory (DCSync) from {ip}{then}")

    def _at(self, day: int, utc_hour: float) -> float:
        return day * DAY_S + utc_hour * 3600.0

    # results ---------------------------------------------------------------------------

    def columns(self) -> dict[str, np.ndarray]:
        if not self.rows:
            return _empty_cols()
        names = dict.fromkeys(c for r in self.rows for c in r)  # extras: some rows only
        return {c: np.array([r.get(c) for r in self.rows], dtype=object) for c in names}

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
