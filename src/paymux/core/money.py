"""Money is an integer number of minor units with an ISO 4217 currency; no float ever holds money.

The exponent (how many minor units make a major unit) comes from the ISO 4217 list: JPY has 0, USD 2, BHD 3.
Amounts cross the API as JSON integers; decimal strings appear only at the edge of providers that speak them
(EPIC/FPX "100.50"), through `to_decimal_string` and `parse_decimal_string`, which never round.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Annotated

import iso4217
from pydantic import AfterValidator, Field

#: The largest amount paymux accepts: 12 digits, the width of an ISO 8583 amount field (DE4).
MAX_AMOUNT = 999_999_999_999


class CurrencyError(ValueError):
    pass


@cache
def currency_exponent(code: str) -> int:
    """The ISO 4217 minor-unit exponent of an active currency; `CurrencyError` for anything else."""
    if len(code) != 3 or not code.isascii() or not code.isupper():
        raise CurrencyError(f"{code!r} is not an ISO 4217 currency code (three upper-case letters)")
    try:
        currency = iso4217.Currency(code)
    except ValueError:
        raise CurrencyError(f"{code!r} is not an ISO 4217 currency code") from None
    exponent = currency.exponent
    if exponent is None:
        # XAU, XXX and friends have no minor unit: they are not currencies one can take payments in.
        raise CurrencyError(f"{code} has no minor unit in ISO 4217 and cannot carry an amount")
    return int(exponent)


def _check_currency(code: str) -> str:
    currency_exponent(code)
    return code


CurrencyCode = Annotated[
    str,
    Field(
        min_length=3,
        max_length=3,
        description="ISO 4217 alphabetic code, upper case",
        examples=["JPY", "USD", "MYR"],
    ),
    AfterValidator(_check_currency),
]

Amount = Annotated[
    int,
    Field(
        strict=True,
        gt=0,
        le=MAX_AMOUNT,
        description="Amount in the currency's minor unit (JPY 100 = 100, USD 1.00 = 100); a JSON integer",
        examples=[100000],
    ),
]


def to_decimal_string(amount: int, currency: str) -> str:
    """1050 USD -> "10.50"; 100000 JPY -> "100000"."""
    exponent = currency_exponent(currency)
    if exponent == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}"


def parse_decimal_string(text: str, currency: str) -> int:
    """ "100.50" MYR -> 10050. More decimals than the currency has is an error, never a rounding."""
    exponent = currency_exponent(currency)
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise CurrencyError(f"{text!r} is not a decimal amount") from None
    if not value.is_finite():
        raise CurrencyError(f"{text!r} is not a finite amount")
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise CurrencyError(f"{text!r} has more than {exponent} decimal places, the minor unit of {currency}")
    return int(minor)
