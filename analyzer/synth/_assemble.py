"""From generated columns to the normalized events frame and the labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyzer.events import infer_category
from analyzer.sources import build_frame
from analyzer.synth._catalogue import (
    _ACTION_NAMES,
    DAY_S,
)
from analyzer.synth._config import (
    SynthConfig,
)
from analyzer.synth._world import (
    _World,
)

# Columns beyond the contract some generated events carry (the web reader's), in this order.
_EXTRA_COLUMNS = ("url_path", "url_query", "status", "user_agent")

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
    # columns only the evidence scenarios' events have (web requests): absent elsewhere
    extras = [k for k in _EXTRA_COLUMNS if any(k in part for part in parts)]
    for k in extras:
        cols[k] = [np.asarray(part[k], dtype=object) if k in part
                   else np.full(len(part["t"]), None, dtype=object)
                   for part in parts if len(part["t"])]
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
    for k in extras:  # as the web reader writes them: "" for none, status an Int64
        values = pd.Series(data[k], dtype="object")
        frame[k] = pd.array(pd.to_numeric(values), dtype="Int64") if k == "status" \
            else values.fillna("").astype(str).astype("category")
    if config.log_roles:
        frame["roles"] = pd.Series(data["role"], dtype="object").astype("category")
    return frame
