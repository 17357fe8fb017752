from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from paymux.core.money import (
    MAX_AMOUNT,
    Amount,
    CurrencyCode,
    CurrencyError,
    currency_exponent,
    parse_decimal_string,
    to_decimal_string,
)


class Priced(BaseModel):
    amount: Amount
    currency: CurrencyCode


@pytest.mark.parametrize(("code", "exponent"), [("JPY", 0), ("USD", 2), ("MYR", 2), ("BHD", 3), ("CLF", 4)])
def test_iso_4217_exponents(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize("code", ["usd", "US", "USDT", "ABC", "XXX", "XAU", ""])
def test_codes_that_cannot_carry_an_amount(code: str) -> None:
    with pytest.raises(CurrencyError):
        currency_exponent(code)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1050, "USD", "10.50"),
        (5, "USD", "0.05"),
        (100000, "JPY", "100000"),
        (1, "BHD", "0.001"),
        (-250, "USD", "-2.50"),
    ],
)
def test_to_decimal_string(amount: int, currency: str, text: str) -> None:
    assert to_decimal_string(amount, currency) == text


@pytest.mark.parametrize(
    ("text", "currency", "amount"),
    [("100.50", "MYR", 10050), ("100.5", "MYR", 10050), ("7", "JPY", 7), (" 1.000 ", "BHD", 1000)],
)
def test_parse_decimal_string(text: str, currency: str, amount: int) -> None:
    assert parse_decimal_string(text, currency) == amount


@pytest.mark.parametrize(
    ("text", "currency"),
    [("100.505", "MYR"), ("1.5", "JPY"), ("abc", "USD"), ("NaN", "USD"), ("Infinity", "USD")],
)
def test_parse_never_rounds_and_rejects_non_amounts(text: str, currency: str) -> None:
    with pytest.raises(CurrencyError):
        parse_decimal_string(text, currency)


@given(
    st.integers(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT), st.sampled_from(["JPY", "USD", "BHD", "CLF"])
)
def test_decimal_strings_round_trip(amount: int, currency: str) -> None:
    assert parse_decimal_string(to_decimal_string(amount, currency), currency) == amount


@pytest.mark.parametrize("amount", [100.0, 100.5, "100", 0, -1, MAX_AMOUNT + 1, True])
def test_amount_is_a_positive_json_integer(amount: object) -> None:
    with pytest.raises(ValidationError):
        Priced.model_validate({"amount": amount, "currency": "JPY"})


def test_a_valid_price() -> None:
    assert Priced.model_validate({"amount": MAX_AMOUNT, "currency": "JPY"}).amount == MAX_AMOUNT
