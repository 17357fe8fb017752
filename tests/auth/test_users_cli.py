"""`paymux users create` and `paymux keys rotate`: options and JSON keys are a contract operators' scripts rely on.

Each test runs the real command in a subprocess against its own migrated SQLite file (a copy of one migrated and
bootstrapped once per module), then signs in through a real served app on that same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from paymux.app import create_app
from paymux.config import Settings
from paymux.container import Container
from tests.conftest import CLI_ON_SQLITE_ONLY
from tests.live import serving

pytestmark = CLI_ON_SQLITE_ONLY

PASSWORD = "correct horse battery staple"
USER_KEYS = {"id", "email", "role", "client_partner_id", "merchant_id", "store_id"}


def environment(directory: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYMUX_")}
    env.update(
        PAYMUX_DATABASE_URL=f"sqlite:///{directory / 'cli.db'}",
        PAYMUX_MASTER_KEY_FILE=str(directory / "master.key"),
        PAYMUX_LOG_LEVEL="WARNING",
    )
    return env


def paymux(
    env: dict[str, str], command: str, *, stdin: str = "", check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `paymux <command>` (split like a shell would) with `stdin` as its input."""
    result = subprocess.run(
        [sys.executable, "-m", "paymux", *shlex.split(command)],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@dataclass(frozen=True)
class Installation:
    directory: Path
    env: dict[str, str]
    tree: dict[str, Any]  # `paymux tenants bootstrap --json` of acme/M-1/S-1
    other: dict[str, Any]  # ... of globex/G-1/GS-1

    def users(self) -> list[tuple[str, str]]:
        connection = sqlite3.connect(self.directory / "cli.db")
        try:
            rows = connection.execute("SELECT email, role FROM users ORDER BY email").fetchall()
        finally:
            connection.close()
        return [(str(email), str(role)) for email, role in rows]

    def signing_keys(self) -> dict[str, bool]:
        """kid -> still the signer (not retired)."""
        connection = sqlite3.connect(self.directory / "cli.db")
        try:
            rows = connection.execute("SELECT kid, retired_at IS NULL FROM signing_keys").fetchall()
        finally:
            connection.close()
        return {str(kid): bool(active) for kid, active in rows}

    def create_user(
        self, options: str, *, password: str = PASSWORD, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`printf '%s\\n' "$PASSWORD" | paymux users create <options>`"""
        return paymux(self.env, f"users create {options}", stdin=f"{password}\n", check=check)

    def rotate(self) -> str:
        printed = json.loads(paymux(self.env, "keys rotate --json").stdout)
        assert set(printed) == {"kid"}
        kid: str = printed["kid"]
        return kid


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Migrated once per module; `tenants bootstrap --json` run as operators do."""
    directory = tmp_path_factory.mktemp("cli-template")
    env = environment(directory)
    paymux(env, "migrate")
    trees = []
    for partner, merchant, store in (("acme", "M-1", "S-1"), ("globex", "G-1", "GS-1")):
        command = f"tenants bootstrap --partner {partner} --merchant {merchant} --store {store} --json"
        trees.append(json.loads(paymux(env, command).stdout))
    return directory, trees[0], trees[1]


@pytest.fixture
def installation(template: tuple[Path, dict[str, Any], dict[str, Any]], tmp_path: Path) -> Installation:
    source, tree, other = template
    for path in source.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    return Installation(tmp_path, environment(tmp_path), tree, other)


@pytest.fixture
def served_settings(installation: Installation) -> Settings:
    return Settings(
        database_url=f"sqlite:///{installation.directory / 'cli.db'}",
        master_key=None,
        master_key_file=installation.directory / "master.key",
        redis_url=None,
        log_level="WARNING",
    )


# ---------------------------------------------------------------------------------------------- users create


def test_users_create_prints_exactly_the_contract_keys(installation: Installation) -> None:
    tree = installation.tree
    result = installation.create_user(
        f"--email Ops@Example.com --role MERCHANT_ADMIN --merchant {tree['merchant_id']} --password-stdin --json"
    )
    created = json.loads(result.stdout)
    assert set(created) == USER_KEYS
    assert created["id"].startswith("usr_")
    assert {key: value for key, value in created.items() if key != "id"} == {
        "email": "ops@example.com",
        "role": "MERCHANT_ADMIN",
        "client_partner_id": tree["client_partner_id"],
        "merchant_id": tree["merchant_id"],
        "store_id": None,
    }
    assert PASSWORD not in result.stdout + result.stderr
    assert installation.users() == [("ops@example.com", "MERCHANT_ADMIN")]


def test_the_narrowest_id_completes_the_scope(installation: Installation) -> None:
    tree = installation.tree
    p, m, s = tree["client_partner_id"], tree["merchant_id"], tree["store_id"]

    def scope_of(options: str) -> tuple[str, int | None, int | None, int | None]:
        created = json.loads(installation.create_user(f"{options} --password-stdin --json").stdout)
        assert set(created) == USER_KEYS
        return created["role"], created["client_partner_id"], created["merchant_id"], created["store_id"]

    assert scope_of(f"--email staff@example.com --role STAFF --store {s}") == ("STAFF", p, m, s)
    assert scope_of(f"--email sm@example.com --role STORE_MANAGER --store {s}") == ("STORE_MANAGER", p, m, s)
    assert scope_of(f"--email psp@example.com --role PSP_ADMIN --partner {p}") == ("PSP_ADMIN", p, None, None)
    assert scope_of("--email op@example.com --role SYSTEM_OP") == ("SYSTEM_OP", None, None, None)

    # Without --json: one `key: value` line per contract key.
    plain = installation.create_user(
        f"--email manager@example.com --role STORE_MANAGER --store {s} --password-stdin"
    )
    lines = dict(line.split(": ", 1) for line in plain.stdout.strip().splitlines())
    assert set(lines) == USER_KEYS
    assert (lines["role"], lines["merchant_id"], lines["store_id"]) == ("STORE_MANAGER", str(m), str(s))


@pytest.mark.parametrize(
    ("role", "scope", "message"),
    [
        ("PSP_ADMIN", "merchant", "A PSP_ADMIN user is bound to a partner"),
        ("STAFF", "merchant", "A STAFF user is bound to a store"),
        ("STORE_MANAGER", "partner", "A STORE_MANAGER user is bound to a store"),
        ("MERCHANT_ADMIN", "store", "A MERCHANT_ADMIN user is bound to a merchant"),
        ("SYSTEM_OP", "partner", "A SYSTEM_OP user is bound to no tenant"),
        ("MERCHANT_ADMIN", "nothing", "A MERCHANT_ADMIN user is bound to a merchant"),
        ("STAFF", "store of another merchant", "belongs to merchant"),
        ("STAFF", "unknown store", "No store 999"),
    ],
)
def test_a_scope_that_does_not_fit_fails_with_a_clear_message(
    installation: Installation, role: str, scope: str, message: str
) -> None:
    tree, other = installation.tree, installation.other
    options = {
        "partner": f"--partner {tree['client_partner_id']}",
        "merchant": f"--merchant {tree['merchant_id']}",
        "store": f"--store {tree['store_id']}",
        "nothing": "",
        "store of another merchant": f"--merchant {tree['merchant_id']} --store {other['store_id']}",
        "unknown store": "--store 999",
    }[scope]
    result = installation.create_user(
        f"--email x@example.com --role {role} {options} --password-stdin --json", check=False
    )
    assert result.returncode == 1, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert installation.users() == []


def test_the_password_never_travels_as_an_argument(installation: Installation) -> None:
    base = f"users create --email ops@example.com --role MERCHANT_ADMIN --merchant {installation.tree['merchant_id']}"
    missing = paymux(installation.env, f"{base} --json", stdin=f"{PASSWORD}\n", check=False)
    assert missing.returncode == 2
    assert "--password-stdin" in missing.stderr
    assert missing.stdout == ""
    as_argument = paymux(installation.env, f"{base} --password '{PASSWORD}' --json", check=False)
    assert as_argument.returncode == 2
    assert "No such option" in as_argument.stderr
    unknown_role = installation.create_user(
        "--email a@example.com --role ADMIN --password-stdin", check=False
    )
    assert unknown_role.returncode == 2
    assert installation.users() == []


def test_a_short_password_or_a_taken_email_is_refused(installation: Installation) -> None:
    options = f"--role MERCHANT_ADMIN --merchant {installation.tree['merchant_id']} --password-stdin --json"
    short = installation.create_user(f"--email ops@example.com {options}", password="x" * 11, check=False)
    assert short.returncode == 1
    assert "at least 12 characters" in short.stderr
    assert installation.users() == []

    installation.create_user(f"--email ops@example.com {options}")
    taken = installation.create_user(f"--email OPS@example.com {options}", check=False)
    assert taken.returncode == 1
    assert "ops@example.com already has an account" in taken.stderr
    assert installation.users() == [("ops@example.com", "MERCHANT_ADMIN")]


# ---------------------------------------------------------------------------------------------- keys rotate


def test_keys_rotate_prints_a_new_kid_each_time(installation: Installation) -> None:
    first = installation.rotate()
    assert first.startswith("key_")
    assert installation.signing_keys() == {first: True}
    second = installation.rotate()
    assert second != first
    assert installation.signing_keys() == {first: False, second: True}  # the first retires, kept to verify
    plain = paymux(installation.env, "keys rotate").stdout.strip()
    assert plain.startswith("kid: key_")
    third = plain.removeprefix("kid: ")
    assert installation.signing_keys() == {first: False, second: False, third: True}


# ---------------------------------------------------------------------------------------------- served


async def test_a_user_the_cli_created_signs_in_on_a_served_app(
    installation: Installation, served_settings: Settings
) -> None:
    tree = installation.tree
    created = json.loads(
        installation.create_user(
            f"--email Staff@Example.com --role STAFF --store {tree['store_id']} --password-stdin --json"
        ).stdout
    )
    old_kid, new_kid = installation.rotate(), installation.rotate()

    application = create_app(served_settings)
    container: Container = application.state.container
    try:
        async with serving(application) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            refused = await http.post(
                "/api/v1/auth/login", json={"email": "staff@example.com", "password": "nope"}
            )
            assert refused.status_code == 401
            response = await http.post(
                "/api/v1/auth/login", json={"email": "staff@example.com", "password": PASSWORD}
            )
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
            assert jwt.get_unverified_header(token)["kid"] == new_kid  # the CLI's newest key signs
            claims = jwt.decode(token, options={"verify_signature": False})
            assert (
                claims["sub"],
                claims["role"],
                claims["psp_id"],
                claims["merchant_id"],
                claims["store_id"],
            ) == (
                created["id"],
                "STAFF",
                tree["client_partner_id"],
                tree["merchant_id"],
                tree["store_id"],
            )
            listed = await http.get("/api/v1/merchants", headers={"Authorization": f"Bearer {token}"})
            assert [merchant["id"] for merchant in listed.json()["data"]] == [tree["merchant_id"]]

            jwks = (await http.get("/.well-known/jwks.json")).json()
            assert [key["kid"] for key in jwks["keys"]] == [new_kid, old_kid]
            client = jwt.PyJWKClient(f"{base_url}/.well-known/jwks.json")
            key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
            verified = jwt.decode(
                token, key.key, audience="paymux", issuer="svc-portal-users", algorithms=["ES256"]
            )
            assert verified == claims
    finally:
        await container.close()
