"""The CLI is a contract: command names, options and JSON keys that operators' scripts rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BOOTSTRAP_KEYS = {"client_partner_id", "merchant_id", "store_id", "client_id", "client_secret"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PAYMUX_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "PAYMUX_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }


def paymux(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "paymux", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def bootstrap(env: dict[str, str], *extra: str) -> dict[str, Any]:
    result = paymux(
        env,
        "tenants",
        "bootstrap",
        "--partner",
        "acme",
        "--merchant",
        "M-1",
        "--store",
        "S-1",
        "--json",
        *extra,
    )
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def test_migrate_then_bootstrap_prints_the_contract_keys(env: dict[str, str], tmp_path: Path) -> None:
    paymux(env, "migrate")
    created = bootstrap(env)
    assert set(created) == BOOTSTRAP_KEYS
    assert created["client_id"].startswith("cli_")
    assert created["client_secret"].startswith("sk_")
    assert all(isinstance(created[key], int) for key in ("client_partner_id", "merchant_id", "store_id"))
    assert (tmp_path / "master.key").exists()


def test_bootstrap_creates_only_what_is_missing_and_always_a_new_client(env: dict[str, str]) -> None:
    paymux(env, "migrate")
    first = bootstrap(env)
    second = bootstrap(env)
    assert {key: second[key] for key in ("client_partner_id", "merchant_id", "store_id")} == {
        key: first[key] for key in ("client_partner_id", "merchant_id", "store_id")
    }
    assert second["client_id"] != first["client_id"]
    other_store = paymux(
        env, "tenants", "bootstrap", "--partner", "acme", "--merchant", "M-1", "--store", "S-2", "--json"
    )
    assert json.loads(other_store.stdout)["store_id"] != first["store_id"]


def test_clients_create_for_a_partner(env: dict[str, str]) -> None:
    paymux(env, "migrate")
    tenant = bootstrap(env)
    result = paymux(
        env, "clients", "create", "--partner", str(tenant["client_partner_id"]), "--name", "portal", "--json"
    )
    client = json.loads(result.stdout)
    assert client["client_id"].startswith("cli_")
    assert client["merchant_id"] is None


def test_clients_create_for_an_unknown_partner_fails_with_a_message(env: dict[str, str]) -> None:
    paymux(env, "migrate")
    result = paymux(env, "clients", "create", "--partner", "999", "--json", check=False)
    assert result.returncode == 1
    assert "No client partner 999" in result.stderr


def test_help_lists_the_commands(env: dict[str, str]) -> None:
    output = paymux(env, "--help").stdout
    for command in ("migrate", "serve", "demo", "tenants", "clients"):
        assert command in output
