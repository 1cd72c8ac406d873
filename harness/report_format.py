"""How the report writes numbers: significant digits, p-values, intervals, and never a bare null."""

from __future__ import annotations

import math
from typing import Any


def fmt_num(x: Any, sig: int = 3, *, trim: bool = False) -> str:
    """A number with `sig` significant digits (trailing zeros dropped if `trim`); 'n/a' for null, NaN, inf."""
    try:
        x = math.nan if x is None or isinstance(x, bool) else float(x)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        return "n/a"
    if (a := abs(x)) == 0 or a >= 10 ** sig:
        return f"{x:,.0f}"
    if a < 1e-3:
        return f"{x:.{sig - 1}e}"
    s = f"{x:.{max(sig - 1 - math.floor(math.log10(a)), 0)}f}"
    return s.rstrip("0").rstrip(".") if trim and "." in s else s


def fmt_p(p: Any) -> str:
    return "n/a" if fmt_num(p) == "n/a" else ("< 0.001" if p < 0.001 else fmt_num(p, 2))


def fmt_ci(lo: Any, hi: Any, n: Any) -> str:
    """'[lo, hi]', or 'n/a (n=k)' when the stored CI is null: never prints a null."""
    if fmt_num(lo) == "n/a" or fmt_num(hi) == "n/a":
        return f"n/a (n={n if n is not None else '?'})"
    return f"[{fmt_num(lo)}, {fmt_num(hi)}]"


def text_or_na(x: Any) -> str:
    return "n/a" if x is None or x == "" else str(x)


def pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fmt_ratio(comparison: dict) -> str:
    """A stored comparison's 'ratio [lo, hi]' to three decimals, for the console; 'n/a' without a ratio."""
    if comparison.get("ratio") is None:
        return "n/a"
    return f"{comparison['ratio']:.3f} [{comparison['ci_low']:.3f}, {comparison['ci_high']:.3f}]"
