"""`paymux reconcile` as an operator runs it: a subprocess against a SQLite database file, after `paymux migrate`.
The payments it matches are made through the API of an app on the same database file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from paymux.app import create_app
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock, SystemClock
from tests.conftest import CLI_ON_SQLITE_ONLY
from tests.reconciliation.support import (
    Txn,
    csv_bytes,
    iso,
    matched_transactions,
    midnight,
    pay,
    refund,
    table_counts,
    write_file,
)
from tests.support import ServerClient, Tenant, bootstrap_tenant

pytestmark = CLI_ON_SQLITE_ONLY

PAYMUX = Path(sys.executable).parent / "paymux"


@dataclass
class Cli:
    env: dict[str, str]
    database_url: str
    master_key_file: Path

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PAYMUX), *map(str, args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def report(self, *args: str | Path) -> dict[str, Any]:
        result = self.run("reconcile", *args, "--json")
        assert result.returncode == 0, result.stderr
        return json_object(result.stdout)


def json_object(stdout: str) -> dict[str, Any]:
    """The JSON object `--json` prints, from its opening brace on (see test_json_is_all_that_is_printed)."""
    lines = stdout.splitlines()
    report: dict[str, Any] = json.loads("\n".join(lines[lines.index("{") :]))
    return report


def environment(tmp_path: Path) -> Cli:
    database_url = f"sqlite:///{tmp_path / 'paymux.db'}"
    master_key_file = tmp_path / "master.key"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYMUX_")}
    env |= {
        "PAYMUX_DATABASE_URL": database_url,
        "PAYMUX_MASTER_KEY_FILE": str(master_key_file),
        "PAYMUX_LOG_LEVEL": "WARNING",
        "COLUMNS": "400",  # so that the console does not wrap an error message
    }
    return Cli(env, database_url, master_key_file)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`paymux migrate` once for the module (a process start costs seconds); each test gets a copy."""
    folder = tmp_path_factory.mktemp("migrated")
    result = environment(folder).run("migrate")
    assert result.returncode == 0, result.stderr
    assert "migrated" in result.stderr
    return folder


@pytest.fixture
def cli(migrated: Path, tmp_path: Path) -> Cli:
    shutil.copyfile(migrated / "paymux.db", tmp_path / "paymux.db")
    if (migrated / "master.key").exists():
        shutil.copyfile(migrated / "master.key", tmp_path / "master.key")
    return environment(tmp_path)


@dataclass
class Shop:
    server: ServerClient
    tenant: Tenant
    clock: FrozenClock


@dataclass
class World:
    container: Container
    one: Shop
    two: Shop

    async def runs(self) -> int:
        return (await table_counts(self.container))["runs"]


@pytest.fixture
async def world(cli: Cli) -> AsyncIterator[World]:
    """Two merchants with the `test` provider on the CLI's database, each with its signed server client."""
    clock = FrozenClock(SystemClock().now())
    settings = Settings(
        database_url=cli.database_url,
        master_key_file=cli.master_key_file,
        redis_url=None,
        log_level="WARNING",
    )
    application = create_app(settings, clock=clock)
    container: Container = application.state.container
    try:
        one = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")
        two = await bootstrap_tenant(container, partner="globex", merchant="G-1", store="GS-1")
        transport = httpx.ASGITransport(app=application, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://paymux.test") as http:
            yield World(
                container,
                Shop(ServerClient(http, one.client_id, one.client_secret, clock), one, clock),
                Shop(ServerClient(http, two.client_id, two.client_secret, clock), two, clock),
            )
    finally:
        await container.close()


async def day_of(shop: Shop, amounts: tuple[int, ...]) -> list[Txn]:
    shop.clock.set(midnight(shop.clock.now()).replace(hour=9))
    return [await pay(shop.server, shop.clock, shop.tenant, amount) for amount in amounts]


async def test_reconcile_prints_a_json_report_and_a_replay_changes_nothing(
    cli: Cli, world: World, tmp_path: Path
) -> None:
    shop = world.one
    payments = await day_of(shop, (1000, 2000, 3000))
    money_back = await refund(shop.server, shop.clock, payments[0], 250)
    rows = [
        payments[0].row(),
        money_back.row(),
        payments[1].row(amount="1999"),
        # More lines than a batch (2,000), so that progress is reported half way through the file too.
        *(
            ["payment", f"test_ch_N{n}", f"pi_N{n}", "10", "JPY", "0", iso(payments[0].updated_at)]
            for n in range(2500)
        ),
    ]
    path = await write_file(tmp_path / "settlement-test.csv", csv_bytes(rows))

    report = cli.report(path, "--provider", "test")
    assert report["object"] == "reconciliation_run"
    assert report["id"].startswith("rcn_")
    assert report["source"] == "cli"
    assert report["file_name"] == "settlement-test.csv"
    assert report["merchant_id"] is None
    assert report["replayed"] is False
    assert {
        key: report[key] for key in ("status", "lines", "matched", "missing_in_paymux", "missing_in_file")
    } == {
        "status": "completed",
        "lines": 2503,
        "matched": 2,
        "missing_in_paymux": 2500,
        "missing_in_file": 1,  # payments[2]
    }
    assert report["amount_mismatch"] == 1
    assert await world.runs() == 1

    again = cli.report(path, "--provider", "test")
    assert again["replayed"] is True
    assert again["id"] == report["id"]
    assert again | {"replayed": False} == report
    assert await world.runs() == 1

    # Without --json: the report as lines, and a note that it is a replay.
    plain = cli.run("reconcile", path, "--provider", "test")
    assert plain.returncode == 0, plain.stderr
    assert f"id: {report['id']}" in plain.stdout.splitlines()
    assert "matched: 2" in plain.stdout.splitlines()
    assert "imported before" in plain.stderr


async def test_json_is_all_that_is_printed(cli: Cli, tmp_path: Path) -> None:
    path = await write_file(tmp_path / "empty.csv", csv_bytes([]))
    result = cli.run("reconcile", path, "--provider", "test", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["lines"] == 0


async def test_reconcile_scoped_to_a_merchant(cli: Cli, world: World, tmp_path: Path) -> None:
    one, two = world.one, world.two
    mine = await day_of(one, (1000, 2000))
    theirs = await day_of(two, (1000, 5000))
    path = await write_file(
        tmp_path / "both.csv", csv_bytes([mine[0].row(), theirs[0].row(), theirs[1].row()])
    )

    report = cli.report(path, "--provider", "test", "--merchant", str(one.tenant.merchant_id))
    assert report["merchant_id"] == one.tenant.merchant_id
    assert (report["lines"], report["matched"], report["missing_in_paymux"], report["missing_in_file"]) == (
        3,
        1,
        2,  # the other merchant's lines
        1,  # mine[1]; the other merchant's payments are not this run's business
    )
    # The same file for the other merchant is another run, and its transactions are still unclaimed.
    other = cli.report(path, "--provider", "test", "--merchant", str(two.tenant.merchant_id))
    assert other["id"] != report["id"]
    assert (other["matched"], other["missing_in_paymux"], other["missing_in_file"], other["duplicates"]) == (
        2,
        1,
        0,
        0,
    )
    assert set(await matched_transactions(world.container)) == {mine[0].id, theirs[0].id, theirs[1].id}


async def test_reconcile_exits_1_naming_the_line(cli: Cli, world: World, tmp_path: Path) -> None:
    decimals = csv_bytes(
        [
            ["payment", "test_ch_1", "pi_1", "1000", "JPY", "0", "2026-11-21T09:30:00Z"],
            ["refund", "test_re_1", "txn_1", "12.5", "JPY", "0", "2026-11-21T09:31:00Z"],
        ]
    )
    for body, says in [(decimals, "line 3:"), (b"kind,amount\npayment,1000\n", "line 1:")]:
        path = await write_file(tmp_path / "bad.csv", body)
        result = cli.run("reconcile", path, "--provider", "test", "--json")
        assert result.returncode == 1, result.stdout
        assert result.stdout == ""
        assert "error" in result.stderr
        assert says in result.stderr, result.stderr
    assert await world.runs() == 0
