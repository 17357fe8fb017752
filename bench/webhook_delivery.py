"""Webhook deliveries per second to a local receiver, with 1 and 2 `paymux worker` processes.

Runs on PostgreSQL (production's database). The events are committed first; the clock starts when the workers
start and stops when every delivery has succeeded, so the figure is delivery throughput alone. The receiver is
a separate uvicorn process answering 200 at once.

    .venv/bin/python bench/webhook_delivery.py [--events 2000] [--endpoints 8] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from paymux import migrations
from paymux.config import Settings
from paymux.container import Container
from paymux.core.db import to_async_url
from paymux.gateway.principal import CallerType, Principal
from paymux.payments.schemas import PaymentIntentCreate
from paymux.providers.base import PaymentMethodType
from paymux.webhooks.models import DeliveryStatus, WebhookDelivery
from paymux.webhooks.schemas import WebhookEndpointCreate

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
RECEIVER = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def reset(url: str) -> None:
    engine = create_async_engine(to_async_url(url))
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


async def prepare(settings: Settings, receiver_url: str, events: int, endpoints: int) -> int:
    container = Container.build(settings)
    try:
        tenant = await container.tenants.bootstrap(
            partner_name="bench", merchant_code="B-1", store_code="BS-1", test_provider=True
        )
        principal = Principal(
            caller_type=CallerType.API_CLIENT,
            caller_id=tenant.client_id,
            client_partner_id=tenant.client_partner_id,
            merchant_id=tenant.merchant_id,
        )
        for number in range(endpoints):
            await container.webhooks.create(
                principal,
                WebhookEndpointCreate(
                    url=f"{receiver_url}/endpoint-{number}", events=["payment_intent.created"]
                ),
            )
        for start in range(0, events, 50):
            await asyncio.gather(
                *(
                    container.payments.create(
                        principal,
                        PaymentIntentCreate(
                            merchant_ref_id=f"BENCH-{index}",
                            amount=100,
                            currency="JPY",
                            store_id=tenant.store_id,
                            payment_method_type=PaymentMethodType.CREDIT_CARD,
                        ),
                    )
                    for index in range(start, min(start + 50, events))
                )
            )
        return events * endpoints
    finally:
        await container.close()


async def delivered(settings: Settings) -> int:
    container = Container.build(settings)
    try:
        async with container.db.reading() as session:
            statement = select(func.count()).where(WebhookDelivery.status == DeliveryStatus.SUCCEEDED.value)
            return int((await session.execute(statement)).scalar_one())
    finally:
        await container.close()


def run(
    url: str, workers: int, events: int, endpoints: int, receiver_url: str, env: dict[str, str]
) -> dict[str, float]:
    asyncio.run(reset(url))
    migrations.upgrade(url)
    settings = Settings(database_url=url, master_key=MASTER_KEY, webhooks_allow_private=True)  # type: ignore[arg-type]
    expected = asyncio.run(prepare(settings, receiver_url, events, endpoints))
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "paymux", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        while (done := asyncio.run(delivered(settings))) < expected:
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {done} of {expected} delivered after 600 s")
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    return {
        "workers": workers,
        "deliveries": expected,
        "seconds": round(elapsed, 2),
        "per_second": round(expected / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "PAYMUX_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/paymux_bench"
        ),
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    port = free_port()
    receiver_dir = Path(__file__).parent / "results"
    (receiver_dir / "bench_receiver.py").write_text(RECEIVER)
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_receiver:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=receiver_dir,
    )
    time.sleep(1.5)
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PAYMUX_")},
        "PAYMUX_DATABASE_URL": args.database_url,
        "PAYMUX_MASTER_KEY": MASTER_KEY,
        "PAYMUX_WEBHOOKS_ALLOW_PRIVATE": "true",
        "PAYMUX_WORKER_POLL_SECONDS": "0.05",
        "PAYMUX_LOG_LEVEL": "WARNING",
    }
    try:
        results = [
            run(args.database_url, workers, args.events, args.endpoints, f"http://127.0.0.1:{port}", env)
            for workers in args.workers
        ]
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
        (receiver_dir / "bench_receiver.py").unlink(missing_ok=True)
    base = results[0]["per_second"]
    print(f"{'workers':>7} {'deliveries':>10} {'seconds':>8} {'per second':>10} {'vs 1 worker':>11}")
    for row in results:
        print(
            f"{row['workers']:>7} {row['deliveries']:>10} {row['seconds']:>8} {row['per_second']:>10} {row['per_second'] / base:>10.2f}x"
        )
    out = receiver_dir / "webhook_delivery.json"
    out.write_text(json.dumps({"machine_cores": os.cpu_count(), "results": results}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
