"""The model's scoring maths: the risk of a tail probability and the alert threshold.

The model scores windows with them, and the report uses them on scores files and on a saved
model's metadata without loading the model. Plain numpy, so the report (which may not import
scikit-learn for this) and the model share the one formula.

>>> risk_from_p(np.array([1.0, 0.1, 1e-3, 1e-9])).tolist()
[0.0, 20.0, 60.0, 100.0]
>>> alert_threshold(5.0, windows_per_day=1000.0)
0.005
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["MIN_P", "RISK_PER_DECADE", "alert_threshold", "risk_from_p"]

#: Risk points per decade of rarity: 60 is one window in 1,000, 100 (the cap) one in 10^5.
RISK_PER_DECADE = 20.0
#: The smallest tail probability told apart (its risk is far past the cap).
MIN_P = 1e-12


def risk_from_p(p: npt.ArrayLike, *, decimals: int | None = 1) -> np.ndarray:
    """Risk 0-100 from tail probabilities: ``20 * -log10(p)``, capped, never ``-0.0``.

    Rounded to ``decimals`` (one, as the scores file writes it; ``None`` for the exact
    value, as a chart's threshold line wants). Probabilities outside [0, 1] are clipped
    into it; NaN stays NaN.

    >>> risk_from_p(0.5, decimals=None).item()
    6.020599913279624
    >>> risk_from_p([1.0, 2.0, 0.0]).tolist()
    [0.0, 0.0, 100.0]
    """
    risk = np.minimum(100.0, -np.log10(np.clip(np.asarray(p, dtype=float), MIN_P, 1.0))
                      * RISK_PER_DECADE)
    risk = np.maximum(risk, 0.0)
    if decimals is not None:
        risk = risk.round(decimals)
    return risk + 0.0  # + 0.0 turns -0.0 into 0.0


def alert_threshold(alerts_per_day: float, windows_per_day: float) -> float:
    """The tail probability at or below which a window is an alert, for a daily budget
    of ``alerts_per_day`` among ``windows_per_day`` windows (the training rate)."""
    return min(1.0, float(alerts_per_day) / max(float(windows_per_day), 1e-9))
