"""The CLI is a contract: command names, options and JSON keys that operators' scripts rely on."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI_ON_SQLITE_ONLY

pytestmark = CLI_ON_SQLITE_ONLY

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


def _idle_connection_survives(port: int, idle_seconds: float) -> bool:
    """Send a request, stay idle, then ask again on the same connection: True if the server kept it open."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        first = connection.getresponse()
        first.read()
        assert first.status == 200
        assert connection.sock is not None
        local_address = connection.sock.getsockname()
        time.sleep(idle_seconds)
        try:
            connection.request("GET", "/healthz")
            second = connection.getresponse()
            second.read()
        except (http.client.HTTPException, OSError):
            return False
        # The same connection answered, not a new one.
        return (
            second.status == 200
            and connection.sock is not None
            and connection.sock.getsockname() == local_address
        )
    finally:
        connection.close()


@pytest.mark.parametrize(("keep_alive", "idle", "survives"), [("1", 2.5, False), (None, 6.5, True)])
def test_serve_keeps_idle_connections_for_its_keep_alive(
    env: dict[str, str], tmp_path: Path, keep_alive: str | None, idle: float, survives: bool
) -> None:
    # The default (75 s) outlives uvicorn's own 5 s, which load balancers with a 60 s idle timeout race.
    paymux(env, "migrate")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if keep_alive is not None:
        env = {**env, "PAYMUX_HTTP_KEEP_ALIVE_SECONDS": keep_alive}
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "paymux", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        assert _idle_connection_survives(port, idle) is survives
    finally:
        server.terminate()
        server.wait(timeout=30)
