"""Per-store fee rules: a percentage in basis points plus a fixed amount, in the currency's minor unit.

The rounding rule (docs/ledger.md): the percentage part is rounded half up to a whole minor unit, then the fixed
part is added, and the fee never exceeds the amount it is charged on. Integer arithmetic only: 2.9 % + 30 of
1,005 cents is (1,005 x 290 + 5,000) // 10,000 = 29 (29.145 rounds down), plus 30 = 59 cents.
"""

from __future__ import annotations

from dataclasses import dataclass

BASIS_POINTS = 10_000


@dataclass(frozen=True, slots=True)
class FeeRule:
    currency: str
    percent_bps: int = 0
    fixed_amount: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.percent_bps <= BASIS_POINTS:
            raise ValueError("percent_bps is between 0 and 10,000 (100 %)")
        if self.fixed_amount < 0:
            raise ValueError("fixed_amount is not negative")

    def fee_for(self, amount: int) -> int:
        percentage = (amount * self.percent_bps + BASIS_POINTS // 2) // BASIS_POINTS
        return min(percentage + self.fixed_amount, amount)
