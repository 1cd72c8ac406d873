"""The harness's self-check decides on interval bounds, never on point estimates.

`calibrate` runs many `compare` decisions: the same tree against itself (A/A: every flag is a
false positive) and against itself with a planted slowdown (every miss is a lost detection).
The comparison rule is proven only when the A/A false-positive rate's 95% Wilson upper bound is
at most MAX_FPR and the power's 95% Wilson lower bound is at least MIN_POWER, against a plant
whose measured cost (over every pair of the run) is about 5%. With zero false positives the
Wilson upper bound falls to 5% only at 73 trials, and with every plant caught the lower bound
reaches 95% only at 73 trials: fewer trials can never prove the claim, only fail to disprove it.
"""

from __future__ import annotations

from .stats import wilson

MAX_FPR = 0.05
MIN_POWER = 0.95
# "About 5%": the plant's measured cost (1 - planted/A over every pair) must fall in this band,
# or the power figure would be about some other slowdown.
PLANT_COST_BAND = (0.04, 0.07)
QUICK_TRIALS = 4

PROVEN, NOT_PROVEN, DISPROVEN = "proven", "not proven", "disproven"
EXIT_CODES = {PROVEN: 0, DISPROVEN: 1, NOT_PROVEN: 3}


def trials_to_prove(bound: float, *, confidence: float = 0.95) -> int:
    """The fewest trials whose Wilson interval, with no trial going wrong, clears `bound`:
    n = 0 flags out of n gives an upper bound z²/(n + z²) (and symmetrically for power)."""
    n = 1
    while wilson(0, n, confidence=confidence)[1] > bound:
        n += 1
    return n


MIN_TRIALS = trials_to_prove(MAX_FPR)  # 73 at 95% confidence


def plant_cost(block: dict, *, detail: bool = False) -> str:
    """What the plant really cost, in words: 1 - planted/A over every pair, with the interval and n
    when `detail` is asked for."""
    real = block.get("planted_ratio") or {}
    if real.get("ratio") is None:
        return "n/a"
    cost = f"{1 - real['ratio']:.1%}"
    if detail:
        cost += (f" (planted/A {real['ratio']:.3f} [{real['ci_low']:.3f}, {real['ci_high']:.3f}], "
                 f"n={real['n_pairs']} pairs)")
    return cost


def verdict(block: dict, *, quick: bool) -> dict:
    """proven / not proven / disproven, with the reasons, from a validation block.

    disproven: an interval lies wholly on the wrong side of its bound (more false positives,
    or fewer detections, than the bound allows, beyond doubt). proven: both intervals clear
    their bounds and the plant cost about 5%. Anything else, and every --quick run, is not proven.
    """
    fpr_low, fpr_high = block["fpr_ci"]
    power_low, power_high = block["power_ci"]
    real = (block.get("planted_ratio") or {}).get("ratio")
    cost = None if real is None else 1 - real
    reasons = []
    if fpr_low > MAX_FPR:
        reasons.append(f"A/A false-positive rate {block['false_positive_rate']:.3f}: its Wilson lower bound "
                       f"{fpr_low:.3f} exceeds {MAX_FPR}")
    if power_high < MIN_POWER:
        reasons.append(f"power {block['power']:.3f}: its Wilson upper bound {power_high:.3f} is below {MIN_POWER}")
    if reasons:
        status = DISPROVEN
    else:
        if fpr_high > MAX_FPR:
            reasons.append(f"A/A false-positive rate {block['false_positive_rate']:.3f} "
                           f"({block['aa_flagged']}/{block['aa_trials']}): Wilson upper bound {fpr_high:.3f} > "
                           f"{MAX_FPR} (zero flags need at least {MIN_TRIALS} trials)")
        if power_low < MIN_POWER:
            reasons.append(f"power {block['power']:.3f} ({block['planted_flagged']}/{block['planted_trials']}): "
                           f"Wilson lower bound {power_low:.3f} < {MIN_POWER} (every plant caught needs at least "
                           f"{MIN_TRIALS} trials)")
        low, high = PLANT_COST_BAND
        if cost is None or not low <= cost <= high:
            shown = "unknown" if cost is None else f"{cost:.1%}"
            reasons.append(f"the plant really cost {shown}, outside {low:.0%}-{high:.0%}: the power would be about "
                           f"another slowdown (adjust --slowdown)")
        if quick:
            reasons.append(f"--quick: {block['aa_trials']} trials cannot prove the bounds")
        status = NOT_PROVEN if reasons else PROVEN
    return {"status": status, "quick": quick, "max_fpr": MAX_FPR, "min_power": MIN_POWER,
            "plant_cost_band": list(PLANT_COST_BAND), "reasons": reasons}
