"""Money rules (design invariant 1): integer minor units with an ISO 4217 currency, through the API and through
`paymux.core.money`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paymux.core.money import (
    MAX_AMOUNT,
    CurrencyError,
    currency_exponent,
    parse_decimal_string,
    to_decimal_string,
)
from tests.support import ServerClient, Tenant, intent_body

PROBLEM_JSON = "application/problem+json"


def assert_validation_problem(response: httpx.Response, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem["code"] == "validation_error"
    assert problem["type"] == "urn:paymux:problem:validation_error"
    assert problem["status"] == 422
    assert problem["title"]
    assert problem["request_id"] == response.headers["x-request-id"]
    assert [issue["loc"] for issue in problem["errors"]] == [["body", field]]
    return problem


async def assert_nothing_created(server: ServerClient) -> None:
    listed = await server.get("/v1/payment_intents")
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == []


# ---------------------------------------------------------------------------------------------- through the API


@pytest.mark.parametrize(
    "amount",
    [
        100.5,
        100.0,
        0.0,
        "100",
        "1000",
        0,
        -1,
        -1000,
        MAX_AMOUNT + 1,
        10**30,
        True,
        False,
        None,
        [100],
        {"v": 1},
    ],
    ids=repr,
)
async def test_create_rejects_amounts_that_are_not_positive_json_integers(
    server: ServerClient, tenant: Tenant, amount: Any
) -> None:
    body = intent_body(tenant)
    body["amount"] = amount
    assert_validation_problem(await server.post("/v1/payment_intents", body), "amount")
    await assert_nothing_created(server)


@pytest.mark.parametrize("raw_amount", [b"1e3", b"1000.0", b"1E+3", b"1000.000001"])
async def test_create_rejects_json_numbers_written_as_floats(
    server: ServerClient, tenant: Tenant, raw_amount: bytes
) -> None:
    body = intent_body(tenant, amount=424242)
    raw = httpx.Request("POST", "/", json=body).content  # the body as JSON, then the amount swapped verbatim
    raw = raw.replace(b"424242", raw_amount)
    assert raw_amount in raw
    assert_validation_problem(await server.post("/v1/payment_intents", raw=raw), "amount")
    await assert_nothing_created(server)


async def test_create_rejects_a_missing_amount(server: ServerClient, tenant: Tenant) -> None:
    body = intent_body(tenant)
    del body["amount"]
    assert_validation_problem(await server.post("/v1/payment_intents", body), "amount")


@pytest.mark.parametrize("amount", [1, 100, 40000, MAX_AMOUNT])
async def test_create_keeps_integer_amounts_exactly(
    server: ServerClient, tenant: Tenant, amount: int
) -> None:
    created = await server.create_intent(tenant, amount=amount, processing_mode="external")
    assert created["amount"] == amount
    assert type(created["amount"]) is int
    fetched = await server.get(f"/v1/payment_intents/{created['id']}")
    assert fetched.json()["amount"] == amount


@pytest.mark.parametrize(
    "currency",
    [
        "jpy",
        "Jpy",
        "usd",
        "ZZZ",
        "ABC",
        "XXX",
        "XAU",
        "XAG",
        "JP",
        "JPYY",
        "",
        " JPY",
        "\uff2a\uff30\uff39",
        392,
        None,
    ],
    ids=repr,
)
async def test_create_rejects_unknown_lower_case_and_unit_less_currencies(
    server: ServerClient, tenant: Tenant, currency: Any
) -> None:
    body = intent_body(tenant)
    body["currency"] = currency
    assert_validation_problem(await server.post("/v1/payment_intents", body), "currency")
    await assert_nothing_created(server)


@pytest.mark.parametrize("currency", ["JPY", "USD", "BHD", "MYR", "EUR", "KWD"])
async def test_create_accepts_iso_currencies_with_a_minor_unit(
    server: ServerClient, tenant: Tenant, currency: str
) -> None:
    created = await server.create_intent(tenant, amount=1050, currency=currency, processing_mode="external")
    assert (created["amount"], created["currency"]) == (1050, currency)


@pytest.mark.parametrize("currency", ["USD", "BHD"])
async def test_provider_payment_keeps_minor_units(
    server: ServerClient, tenant: Tenant, currency: str
) -> None:
    created = await server.create_intent(tenant, amount=1050, currency=currency)
    confirmed = await server.post(f"/v1/payment_intents/{created['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["status"], confirmed.json()["amount_captured"]) == ("succeeded", 1050)
    assert confirmed.json()["currency"] == currency


@pytest.mark.parametrize("amount", [100.5, 100.0, "100", 0, -5, MAX_AMOUNT + 1], ids=repr)
async def test_capture_amount_follows_the_same_rules(
    server: ServerClient, tenant: Tenant, amount: Any
) -> None:
    created = await server.create_intent(tenant, processing_mode="external")
    response = await server.post(
        f"/v1/payment_intents/{created['id']}/capture", {"status": "success", "amount": amount}
    )
    assert_validation_problem(response, "amount")
    fetched = await server.get(f"/v1/payment_intents/{created['id']}")
    assert fetched.json()["status"] == "requires_payment_method"


# ---------------------------------------------------------------------------------------------- paymux.core.money


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("JPY", 0), ("KRW", 0), ("USD", 2), ("EUR", 2), ("MYR", 2), ("BHD", 3), ("KWD", 3), ("TND", 3)],
)
def test_currency_exponent(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize(
    "code", ["usd", "Usd", "XXX", "XAU", "ZZZ", "US", "USDD", "", "\uff35\uff33\uff24", "U$D"]
)
def test_currency_exponent_rejects_what_is_not_a_payable_currency(code: str) -> None:
    with pytest.raises(CurrencyError):
        currency_exponent(code)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1050, "USD", "10.50"),
        (5, "USD", "0.05"),
        (100, "USD", "1.00"),
        (0, "USD", "0.00"),
        (-1050, "USD", "-10.50"),
        (-5, "USD", "-0.05"),
        (100000, "JPY", "100000"),
        (1, "JPY", "1"),
        (1, "BHD", "0.001"),
        (1234567, "BHD", "1234.567"),
        (MAX_AMOUNT, "USD", "9999999999.99"),
    ],
)
def test_to_decimal_string(amount: int, currency: str, text: str) -> None:
    assert to_decimal_string(amount, currency) == text


@pytest.mark.parametrize(
    ("text", "currency", "amount"),
    [
        ("100.50", "MYR", 10050),
        ("10.5", "USD", 1050),
        ("10", "USD", 1000),
        (" 7.00 ", "USD", 700),
        ("0.01", "USD", 1),
        ("100", "JPY", 100),
        ("1.234", "BHD", 1234),
        ("0.001", "BHD", 1),
        ("-10.50", "USD", -1050),
    ],
)
def test_parse_decimal_string(text: str, currency: str, amount: int) -> None:
    parsed = parse_decimal_string(text, currency)
    assert parsed == amount
    assert type(parsed) is int


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("1.001", "USD"),
        ("10.505", "MYR"),
        ("0.5", "JPY"),
        ("100.1", "JPY"),
        ("1.2345", "BHD"),
        ("0.0001", "BHD"),
        ("abc", "USD"),
        ("", "USD"),
        ("1,00", "USD"),
        ("NaN", "USD"),
        ("Infinity", "USD"),
        ("-Infinity", "JPY"),
        ("10.00", "XXX"),
    ],
)
def test_parse_decimal_string_never_rounds_and_rejects_non_amounts(text: str, currency: str) -> None:
    with pytest.raises(CurrencyError):
        parse_decimal_string(text, currency)


@settings(database=None, max_examples=300)
@given(
    amount=st.integers(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT),
    currency=st.sampled_from(["JPY", "USD", "BHD", "MYR", "KWD"]),
)
def test_decimal_strings_round_trip(amount: int, currency: str) -> None:
    text = to_decimal_string(amount, currency)
    exponent = currency_exponent(currency)
    if exponent == 0:
        assert "." not in text
    else:
        assert len(text.split(".")[1]) == exponent
    assert parse_decimal_string(text, currency) == amount
