"""Baseline bands for "who improved, from where" (docs/measures.md has the sources).

Each measure's baseline score puts a person in one band; the report then gives, per
band, how many improved and the mean change. Bands may overlap on purpose: UCLA-3's
"most severely lonely" (the top score) lies inside "lonely", because that is the group
schemes publish claims about ("100% of the most severely lonely improved").

Every cut-off a scheme may define differently is a setting (``referralnet.settings``):

- ``REFERRALNET_UCLA3_MOST_SEVERE`` (default 9): lowest UCLA-3 total counted as most
  severely lonely (*unverified*: schemes define it themselves).
- ``REFERRALNET_SWEMWBS_LOW_MAX`` / ``REFERRALNET_SWEMWBS_HIGH_MIN`` (defaults 19.5 /
  27.5, metric score): low and high wellbeing (bottom and top ~15% of the Health Survey
  for England 2010-13; Ng Fat et al. 2017; *unverified*).
- ``REFERRALNET_WEMWBS_LOW_MAX`` / ``REFERRALNET_WEMWBS_HIGH_MIN`` (defaults 42 / 60).
"""

from __future__ import annotations

from dataclasses import dataclass

from referralnet.settings import settings
from schemas.measures import ONS4_ITEMS


@dataclass(frozen=True)
class Band:
    """Baseline scores ``low``..``high`` inclusive (``high`` None: no upper bound)."""

    name: str
    low: float
    high: float | None
    shown: str | None = None  # how the range reads, where low..high would read oddly

    def holds(self, score: float) -> bool:
        return score >= self.low and (self.high is None or score <= self.high)

    @property
    def label(self) -> str:
        if self.shown:
            return self.shown
        if self.high is None:
            return f">= {_num(self.low)}"
        return _num(self.low) if self.low == self.high else f"{_num(self.low)}-{_num(self.high)}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# ONS personal well-being thresholds (ONS, "Personal well-being user guidance").
_ONS4_POSITIVE = (Band("low", 0, 4), Band("medium", 5, 6), Band("high", 7, 8),
                  Band("very-high", 9, 10))  # fmt: skip
_ONS4_ANXIETY = (Band("very-low", 0, 1), Band("low", 2, 3), Band("medium", 4, 5),
                 Band("high", 6, 10))  # fmt: skip


def bands() -> dict[str, tuple[Band, ...]]:
    """Bands per measure key (``ons4.<item>`` for ONS4's items), settings applied."""
    cuts = settings()
    severe = cuts.ucla3_most_severe
    sw_low, sw_high = cuts.swemwbs_low_max, cuts.swemwbs_high_min
    we_low, we_high = cuts.wemwbs_low_max, cuts.wemwbs_high_min
    table: dict[str, tuple[Band, ...]] = {
        "ucla3": (
            Band("not-often-lonely", 3, 5),
            Band("lonely", 6, 9),
            Band("most-severely-lonely", severe, 9),
        ),
        "swemwbs": (
            Band("low-wellbeing", 7, sw_low),
            Band(
                "medium-wellbeing",
                sw_low + 0.01,
                sw_high - 0.01,
                f"> {_num(sw_low)} and < {_num(sw_high)}",
            ),
            Band("high-wellbeing", sw_high, 35),
        ),
        "wemwbs": (
            Band("low-wellbeing", 14, we_low),
            Band("medium-wellbeing", we_low + 1, we_high - 1),
            Band("high-wellbeing", we_high, 70),
        ),
        "activity-minutes": (
            Band("inactive", 0, 29.99, "< 30"),
            Band("fairly-active", 30, 149.99, "30-149"),
            Band("active", 150, None, ">= 150"),
        ),
    }
    for item in ONS4_ITEMS:
        table[f"ons4.{item}"] = _ONS4_ANXIETY if item == "anxious" else _ONS4_POSITIVE
    return table
