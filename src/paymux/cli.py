"""The `paymux` command. Names, options and JSON keys here are a contract that scripts rely on."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from paymux import migrations
from paymux.auth.devices import TOKEN_PATH as DEVICE_TOKEN_PATH
from paymux.auth.models import User
from paymux.auth.users import UserScope
from paymux.config import Settings
from paymux.container import Container
from paymux.core.db import to_async_url
from paymux.core.errors import PaymuxError
from paymux.core.logging import configure_logging
from paymux.gateway.principal import Principal, Role
from paymux.ledger.verify import LedgerReport, verify_ledger
from paymux.payments.service import TenantScope
from paymux.providers.sandboxes import (
    aupay_sandbox,
    create_sandbox_app,
    dpayment_sandbox,
    linepay_sandbox,
    paypay_sandbox,
    rakuten_sandbox,
)
from paymux.providers.settlement import LAYOUTS
from paymux.reconciliation.schemas import RunReport
from paymux.reconciliation.service import ImportRequest, ImportResult
from paymux.tenants.schemas import ProviderConfigSync
from paymux.tenants.service import BootstrapResult
from paymux.worker import Worker

T = TypeVar("T")

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="paymux: one API in front of many payment providers."
)
tenants_app = typer.Typer(no_args_is_help=True, help="Client partners, merchants and stores.")
clients_app = typer.Typer(no_args_is_help=True, help="API clients that sign server calls with HMAC.")
app.add_typer(tenants_app, name="tenants")
app.add_typer(clients_app, name="clients")
ledger_app = typer.Typer(no_args_is_help=True, help="The double-entry ledger.")
users_app = typer.Typer(no_args_is_help=True, help="Portal users.")
keys_app = typer.Typer(no_args_is_help=True, help="The keys that sign user access tokens.")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(ledger_app, name="ledger")
devices_app = typer.Typer(no_args_is_help=True, help="SmartPOS devices (OAuth2 private_key_jwt clients).")
app.add_typer(devices_app, name="devices")

console = Console(stderr=True)

DEMO_PARTNER = "demo-partner"
DEMO_MERCHANT = "DEMO-MERCHANT"
DEMO_STORE = "DEMO-STORE-001"
DEMO_CLIENT = "demo"


def _with_container(use: Callable[[Container], Awaitable[T]]) -> T:
    async def run() -> T:
        settings = Settings()
        configure_logging(settings.log_level, json=settings.log_json)  # on stderr: stdout is for --json
        container = Container.build(settings)
        try:
            return await use(container)
        finally:
            await container.close()

    try:
        return asyncio.run(run())
    except PaymuxError as exc:
        console.print(f"[red]error:[/red] {exc.detail or exc.title}")
        raise typer.Exit(code=1) from None


def _operator() -> Principal:
    """Who runs this command, as the audit log records it."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        name = "unknown"
    return Principal.operator(name)


def _print_json(value: dict[str, Any]) -> None:
    typer.echo(json.dumps(value, indent=2))


@app.command()
def migrate() -> None:
    """Apply database migrations to PAYMUX_DATABASE_URL."""
    settings = Settings()
    migrations.upgrade(settings.database_url)
    console.print("[green]migrated[/green] to the latest schema")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (PostgreSQL only: SQLite takes one).")] = 1,
) -> None:
    """Serve the HTTP API."""
    settings = Settings()
    if workers > 1 and to_async_url(settings.database_url).get_backend_name() == "sqlite":
        console.print(
            "[red]error:[/red] SQLite serves one process; use PostgreSQL (PAYMUX_DATABASE_URL) for --workers > 1"
        )
        raise typer.Exit(code=2)
    _serve(host, port, workers)


def _serve(host: str, port: int, workers: int = 1) -> None:
    keep_alive = Settings().http_keep_alive_seconds
    uvicorn.run(
        "paymux.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # paymux logs each request itself, with its request id
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=keep_alive,
    )


@app.command()
def worker() -> None:
    """Run the outbox relay, webhook delivery and housekeeping until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)

    async def run() -> None:
        container = Container.build(settings)
        stop = asyncio.Event()
        process = Worker(container)
        loop = asyncio.get_running_loop()

        def shutdown() -> None:
            process.stop_soon()
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, shutdown)
        try:
            await process.run(stop)
        finally:
            await container.close()

    run_event_loop(run())


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed (uvicorn's standard extras bring it, and `paymux serve` runs
    on it): the worker's time goes mostly to socket reads and writes, which uvloop makes cheaper."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Migrate the database, seed a demo tenant, print its credentials and serve."""
    # One process: the worker runs inside the server, webhooks may go to local receivers, and the provider
    # sandboxes answer under /<provider> of the same server.
    base = f"http://{host}:{port}"
    os.environ.setdefault("PAYMUX_EMBEDDED_WORKER", "true")
    os.environ.setdefault("PAYMUX_WEBHOOKS_ALLOW_PRIVATE", "true")
    os.environ.setdefault("PAYMUX_MOUNT_SANDBOXES", "true")
    os.environ.setdefault("PAYMUX_SANDBOX_WEBHOOK_BASE", base)
    os.environ.setdefault("PAYMUX_PUBLIC_URL", base)
    settings = Settings()
    migrations.upgrade(settings.database_url)
    result = _with_container(
        lambda container: container.tenants.bootstrap(
            partner_name=DEMO_PARTNER,
            merchant_code=DEMO_MERCHANT,
            store_code=DEMO_STORE,
            client_name=DEMO_CLIENT,
            test_provider=True,
            reuse_client=True,
            actor=_operator(),
        )
    )

    async def point_at_sandboxes(container: Container) -> None:
        for config in demo_provider_configs(base):
            await container.tenants.configure_provider(result.store_id, config, actor=_operator())

    _with_container(point_at_sandboxes)
    # Plain lines, not a box: they must survive copy and paste at any terminal width.
    lines = [
        f"paymux demo: API on {base} (docs: {base}/docs), database {settings.database_url}",
        f"demo merchant {result.merchant_id}, store {result.store_id}, with the built-in test provider",
        "",
        "In another terminal, paste these lines, then follow the README tour:",
        "",
        f"export BASE={base}",
        f"export PAYMUX_CLIENT_ID={result.client_id}",
        f"export PAYMUX_CLIENT_SECRET={result.client_secret}",
        f"export PAYMUX_STORE_ID={result.store_id}",
        "",
    ]
    typer.echo("\n".join(lines), err=True)
    _serve(host, port)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    webhook_base: Annotated[
        str | None, typer.Option(help="paymux's base URL: webhooks go to <base>/v1/webhooks/<provider>.")
    ] = None,
) -> None:
    """Serve every provider's sandbox under /<provider> (e.g. http://H:P/paypay/v2/codes)."""
    uvicorn.run(create_sandbox_app(webhook_base), host=host, port=port, access_log=False, server_header=False)


def demo_provider_configs(base: str) -> list[ProviderConfigSync]:
    """The demo store's configs: every provider pointed at its sandbox under this server."""
    paypay = paypay_sandbox(None).credentials
    linepay = linepay_sandbox(None).credentials
    keyed = {
        "dpayment": dpayment_sandbox(None).credentials,
        "aupay": aupay_sandbox(None).credentials,
        "rakuten": rakuten_sandbox(None).credentials,
    }
    configs = [
        ProviderConfigSync(
            provider_code="paypay",
            credentials={
                "api_key": paypay.api_key,
                "api_secret": paypay.api_secret,
                "merchant_id": paypay.merchant_id,
            },
            base_url=f"{base}/paypay",
            webhook_secret=paypay.webhook_secret,
            options={"settlement_files": "daily"},  # the sandbox serves a settlement file per day
        ),
        ProviderConfigSync(
            provider_code="linepay",
            credentials={"channel_id": linepay.api_key, "channel_secret": linepay.api_secret},
            base_url=f"{base}/linepay",
            webhook_secret=linepay.webhook_secret,
        ),
    ]
    for code, credentials in keyed.items():
        configs.append(
            ProviderConfigSync(
                provider_code=code,
                credentials={
                    "api_key": credentials.api_key,
                    "api_secret": credentials.api_secret,
                    "merchant_id": credentials.merchant_id,
                },
                base_url=f"{base}/{code}",
                webhook_secret=credentials.webhook_secret,
            )
        )
    return configs


@tenants_app.command("bootstrap")
def tenants_bootstrap(
    partner: Annotated[str, typer.Option(help="Client partner name (created if missing).")],
    merchant: Annotated[str, typer.Option(help="Merchant code (created if missing).")],
    store: Annotated[str, typer.Option(help="Store code (created if missing).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    test_provider: Annotated[
        bool, typer.Option("--test-provider", help="Give the store a config for the built-in test provider.")
    ] = False,
    client_name: Annotated[str, typer.Option(help="Name of the new API client.")] = "bootstrap",
) -> None:
    """Create what does not exist of partner -> merchant -> store, and a new API client for the merchant."""
    result: BootstrapResult = _with_container(
        lambda container: container.tenants.bootstrap(
            partner_name=partner,
            merchant_code=merchant,
            store_code=store,
            client_name=client_name,
            test_provider=test_provider,
            actor=_operator(),
        )
    )
    values = {
        "client_partner_id": result.client_partner_id,
        "merchant_id": result.merchant_id,
        "store_id": result.store_id,
        "client_id": result.client_id,
        "client_secret": result.client_secret,
    }
    if as_json:
        _print_json(values)
    else:
        for name, value in values.items():
            typer.echo(f"{name}: {value}")


@clients_app.command("create")
def clients_create(
    partner: Annotated[int, typer.Option(help="Client partner id.")],
    merchant: Annotated[int | None, typer.Option(help="Merchant id: scope the client to it.")] = None,
    store: Annotated[int | None, typer.Option(help="Store id: scope the client to it.")] = None,
    name: Annotated[str, typer.Option(help="A name to recognise the client by.")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create an API client scoped to a partner (config sync), a merchant or a store; prints its secret once."""
    client_id, secret = _with_container(
        lambda container: container.tenants.create_client(
            name=name, partner_id=partner, merchant_id=merchant, store_id=store, actor=_operator()
        )
    )
    values = {
        "client_id": client_id,
        "client_secret": secret,
        "client_partner_id": partner,
        "merchant_id": merchant,
        "store_id": store,
    }
    if as_json:
        _print_json(values)
    else:
        for key, value in values.items():
            typer.echo(f"{key}: {value}")


@app.command()
def reconcile(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The file to import.")
    ],
    provider: Annotated[str, typer.Option(help="Whose file it is: " + ", ".join(LAYOUTS) + ".")],
    merchant: Annotated[int | None, typer.Option(help="Match only this merchant's transactions.")] = None,
    partner: Annotated[int | None, typer.Option(help="Match only this partner's transactions.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Import a provider's settlement CSV or a camt.053 bank statement and match it against paymux.

    The same file twice changes nothing (the earlier report is printed). Exits 0 when the run completed, whatever
    it found; the report says what did not match.
    """
    if merchant is not None and partner is None:
        # The run belongs to the merchant's partner too, so the merchant's API clients see it.
        partner, _, _ = _with_container(
            lambda container: container.tenants.resolve_scope(
                partner_id=None, merchant_id=merchant, store_id=None
            )
        )
    scope = TenantScope(client_partner_id=partner, merchant_id=merchant)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=as_json or not console.is_terminal,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def advance(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        result: ImportResult = _with_container(
            lambda container: container.reconciliation.import_file(
                ImportRequest(path=file, provider=provider, scope=scope, source="cli", created_by="cli"),
                progress=advance,
            )
        )
    report = RunReport.of(result.run, replayed=result.replayed).model_dump(mode="json")
    if as_json:
        _print_json(report)
        return
    if result.replayed:
        console.print("[yellow]this file was imported before[/yellow]: its report, nothing changed")
    for key in (
        "id",
        "provider",
        "format",
        "period_start",
        "period_end",
        "lines",
        "matched",
        "missing_in_paymux",
        "missing_in_file",
        "amount_mismatch",
        "currency_mismatch",
        "duplicates",
    ):
        typer.echo(f"{key}: {report[key]}")


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="The user's email, used to sign in.")],
    role: Annotated[Role, typer.Option(help="SYSTEM_OP, PSP_ADMIN, MERCHANT_ADMIN, STORE_MANAGER or STAFF.")],
    partner: Annotated[int | None, typer.Option(help="Client partner id (PSP_ADMIN).")] = None,
    merchant: Annotated[int | None, typer.Option(help="Merchant id (MERCHANT_ADMIN).")] = None,
    store: Annotated[int | None, typer.Option(help="Store id (STORE_MANAGER, STAFF).")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the user as one JSON object.")] = False,
) -> None:
    """Create a portal user. The narrowest id given completes the scope (a store names its merchant and partner)."""
    if not password_stdin:
        console.print(
            "[red]error:[/red] pass the password on stdin with --password-stdin (never as an argument)"
        )
        raise typer.Exit(code=2)
    password = sys.stdin.readline().rstrip("\r\n")

    async def create(container: Container) -> User:
        partner_id, merchant_id, store_id = await container.tenants.resolve_scope(
            partner_id=partner, merchant_id=merchant, store_id=store
        )
        return await container.users.create(
            email=email,
            password=password,
            role=role,
            scope=UserScope(client_partner_id=partner_id, merchant_id=merchant_id, store_id=store_id),
            actor=_operator(),
        )

    user = _with_container(create)
    values = {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "client_partner_id": user.client_partner_id,
        "merchant_id": user.merchant_id,
        "store_id": user.store_id,
    }
    if as_json:
        _print_json(values)
    else:
        for key, value in values.items():
            typer.echo(f"{key}: {value}")


@keys_app.command("rotate")
def keys_rotate(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Start signing access tokens with a new key. The previous key stays published in the JWKS (and accepted)
    until the tokens it signed have expired."""
    kid = _with_container(lambda container: container.signing_keys.rotate(_operator()))
    if as_json:
        _print_json({"kid": kid})
    else:
        typer.echo(f"kid: {kid}")


@devices_app.command("register")
def devices_register(
    store: Annotated[int, typer.Option(help="The store the device belongs to.")],
    serial: Annotated[str, typer.Option(help="The device's serial number.")],
    jwk: Annotated[Path, typer.Option(help="A file holding the device's EC P-256 public key as a JWK.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated scopes, e.g. payment:create,payment:read.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the device as one JSON object.")] = False,
) -> None:
    """Register a POS device; prints its client_id, which it names as iss and sub of its client assertions."""
    try:
        key = json.loads(jwk.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] cannot read a JWK from {jwk}: {exc}")
        raise typer.Exit(code=2) from None
    device = _with_container(
        lambda container: container.devices.register(
            _operator(), store_id=store, serial_number=serial, jwk=key, scopes=scopes.split(",")
        )
    )
    values = {
        "client_id": device.id,
        "serial_number": device.serial_number,
        "client_partner_id": device.client_partner_id,
        "merchant_id": device.merchant_id,
        "store_id": device.store_id,
        "scopes": device.scopes,
        "token_endpoint": f"{Settings().public_url.rstrip('/')}{DEVICE_TOKEN_PATH}",
    }
    if as_json:
        _print_json(values)
    else:
        for key_name, value in values.items():
            typer.echo(f"{key_name}: {value}")


@ledger_app.command("verify")
def ledger_verify(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check every ledger invariant; exits 1 when any is violated.

    Entries balance per currency and have two postings or more; postings are in their account's currency; each
    account's balance equals the sum of its postings and its pending sums equal its pending holds; no available
    balance is below its floor.
    """
    report: LedgerReport = _with_container(lambda container: verify_ledger(container.db))
    if as_json:
        _print_json(
            {
                "ok": report.ok,
                "accounts": report.accounts,
                "entries": report.entries,
                "postings": report.postings,
                "pending_holds": report.pending_holds,
                "violations": [
                    {"check": v.check, "subject": v.subject, "detail": v.detail} for v in report.violations
                ],
            }
        )
    else:
        for violation in report.violations:
            console.print(f"[red]{violation.check}[/red] {violation.subject}: {violation.detail}")
        summary = (
            f"{report.accounts} accounts, {report.entries} entries, {report.postings} postings, "
            f"{report.pending_holds} pending holds"
        )
        if report.ok:
            console.print(f"[green]ledger ok[/green]: {summary}")
        else:
            console.print(f"[red]{len(report.violations)} violation(s)[/red] in {summary}")
    if not report.ok:
        raise typer.Exit(code=1)


def main() -> None:
    app()
