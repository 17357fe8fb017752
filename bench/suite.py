"""paymux's benchmark suite: paymux on PostgreSQL + Redis (production's setup), driven over HTTP by a load
generator on the same machine, every figure next to a baseline measured in the same run.

    .venv/bin/python bench/suite.py            # the full suite (make bench)
    .venv/bin/python bench/suite.py --quick    # about a minute (make bench-quick)
    .venv/bin/python bench/suite.py --soak     # 10 minutes at half of measured capacity (make bench-soak)
    .venv/bin/python bench/suite.py --interleaved   # create against the baseline, in turns (make bench-interleaved)

The baseline is bench/baseline.py: the same framework inserting one row with one commit per request, served
with the same number of processes, once before paymux's scenarios and once after; ratios are to the mean of the
two, and `baseline_drift` says how far the machine's speed moved in between. The load generator is bench/loadgen.mjs (Node.js, no dependencies), which
signs every paymux request with HMAC like a merchant's server.

Scenarios:
1. create PaymentIntent (HMAC, Idempotency-Key, rate limits on) at saturation and at a fixed 50% load;
2. the full QR lifecycle through PayPay's sandbox, to the merchant's webhook: completed payments per second at
   saturation, and the end-to-end latency at a fixed 50% of that;
3. retrieve and list under load;
4. ledger postings per second (bench/ledger_postings.py, in-process);
5. webhook deliveries per second (bench/webhook_delivery.py);
6. scale-out: scenarios 1, 2 and 3 with 1 API + 1 worker process, then 2 + 2, then 4 + 4, 8 + 8, ... while the
   machine has a core for each API process (or the layouts given with --layouts).

It prints a table and writes bench/results/suite-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from database import ensure_database
from machine import machine
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from paymux.cli import demo_provider_configs
from paymux.config import Settings
from paymux.container import Container
from paymux.core.db import to_async_url

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/paymux_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Processes:
    """Every process the suite started, stopped together."""

    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        self.running.append(process)
        return process

    def stop(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.running.clear()


@dataclass
class Tenant:
    client_id: str
    secret: str
    store_id: int

    def signing(self, api: str) -> dict[str, Any]:
        """What the load generator needs to sign this merchant's requests to paymux at `api`."""
        return {"base": api, "client_id": self.client_id, "secret": self.secret, "store_id": self.store_id}


class Bench:
    def __init__(self, database_url: str, redis_url: str, logs: Path) -> None:
        self.database_url = database_url
        self.analyzed = False  # whether the suite ran ANALYZE itself (the server's autovacuum is off)
        self.redis_url = redis_url
        self.logs = logs
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith("PAYMUX_")},
            "PAYMUX_DATABASE_URL": database_url,
            "PAYMUX_REDIS_URL": redis_url,
            "PAYMUX_MASTER_KEY": MASTER_KEY,
            "PAYMUX_LOG_LEVEL": "WARNING",
            "PAYMUX_WEBHOOKS_ALLOW_PRIVATE": "true",  # the merchant's receiver is on loopback
            # Rate limits stay on, high enough that only a deliberate burst meets them.
            "PAYMUX_RATELIMIT_MERCHANT": "1000000/minute",
            "PAYMUX_RATELIMIT_STORE": "1000000/minute",
            "PAYMUX_RATELIMIT_IP": "1000000/minute",
            "PAYMUX_RATELIMIT_GLOBAL": "1000000/minute",
        }

    # ------------------------------------------------------------------ setup

    def reset(self) -> None:
        """An empty, migrated database and an empty Redis database."""

        async def drop() -> None:
            await ensure_database(self.database_url)
            engine = create_async_engine(to_async_url(self.database_url))
            async with engine.begin() as connection:
                await connection.execute(text("DROP SCHEMA public CASCADE"))
                await connection.execute(text("CREATE SCHEMA public"))
                await connection.execute(
                    text("CREATE TABLE bench_rows (id bigserial PRIMARY KEY, value text NOT NULL)")
                )
            await engine.dispose()

        asyncio.run(drop())
        subprocess.run([PYTHON, "-m", "paymux", "migrate"], env=self.env, check=True, capture_output=True)
        subprocess.run(["redis-cli", "-u", self.redis_url, "flushdb"], check=True, capture_output=True)

    def tenant(self, sandbox: str, receiver: str | None) -> Tenant:
        """A merchant with a store whose PayPay config points at the sandbox, and its webhook endpoint."""
        made = subprocess.run(
            [PYTHON, "-m", "paymux", "tenants", "bootstrap", "--partner", "bench", "--merchant", "M-1",
             "--store", "S-1", "--test-provider", "--json"],
            env=self.env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        values = json.loads(made.stdout)
        tenant = Tenant(values["client_id"], values["client_secret"], values["store_id"])
        asyncio.run(self._point_paypay_at(sandbox, tenant.store_id))
        if receiver is not None:
            body = json.dumps({"url": receiver, "events": ["payment_intent.succeeded"]})
            response = signed_request(tenant, "POST", "/v1/webhook_endpoints", body, self.api)
            response.raise_for_status()
        return tenant

    async def _point_paypay_at(self, sandbox: str, store_id: int) -> None:
        """The store's PayPay config, as the demo sets it: the sandbox's URL and its credentials."""
        settings = Settings(
            database_url=self.database_url, redis_url=self.redis_url, master_key=SecretStr(MASTER_KEY)
        )
        container = Container.build(settings)
        try:
            for config in demo_provider_configs(sandbox):
                if config.provider_code == "paypay":
                    await container.tenants.configure_provider(store_id, config)
        finally:
            await container.close()

    def analyze(self) -> None:
        """Give the planner statistics, as autovacuum does in production, when this server's autovacuum is off
        (a fresh table otherwise has none, and a list may be planned as a scan of every row)."""

        async def run() -> bool:
            engine = create_async_engine(to_async_url(self.database_url))
            try:
                async with engine.begin() as connection:
                    if (await connection.scalar(text("SHOW autovacuum"))) == "on":
                        return False
                    await connection.execute(text("ANALYZE"))
                    return True
            finally:
                await engine.dispose()

        if asyncio.run(run()):
            self.analyzed = True

    # ------------------------------------------------------------------ processes

    @contextmanager
    def paymux(self, api_processes: int, workers: int) -> Iterator[str]:
        """paymux serve (with `api_processes` uvicorn workers), `workers` paymux workers and the sandbox."""
        processes = Processes()
        api_port, sandbox_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{api_port}"
        self.sandbox = f"http://127.0.0.1:{sandbox_port}"
        env = {**self.env, "PAYMUX_PUBLIC_URL": self.api}
        try:
            processes.start(
                [PYTHON, "-m", "paymux", "sandbox", "--port", str(sandbox_port), "--webhook-base", self.api],
                env, self.logs / "sandbox.log",
            )  # fmt: skip
            processes.start(
                [PYTHON, "-m", "paymux", "serve", "--port", str(api_port), "--workers", str(api_processes)],
                env, self.logs / "api.log",
            )  # fmt: skip
            for _ in range(workers):
                processes.start([PYTHON, "-m", "paymux", "worker"], env, self.logs / "worker.log")
            wait_until_up(f"{self.api}/readyz")
            wait_until_up(f"{self.sandbox}/paypay/_sandbox/settlements/2000-01-01.csv")
            self.pids = [process.pid for process in processes.running]
            yield self.api
        finally:
            processes.stop()

    @contextmanager
    def baseline(self, api_processes: int) -> Iterator[str]:
        processes = Processes()
        port = free_port()
        env = {**self.env, "BASELINE_DATABASE_URL": self.database_url}
        try:
            processes.start(
                [PYTHON, "-m", "uvicorn", "bench.baseline:app", "--port", str(port), "--workers",
                 str(api_processes), "--no-access-log", "--log-level", "warning"],
                env, self.logs / "baseline.log",
            )  # fmt: skip
            wait_until_up(f"http://127.0.0.1:{port}/docs")
            yield f"http://127.0.0.1:{port}"
        finally:
            processes.stop()


def signed_request(tenant: Tenant, method: str, path: str, body: str, base: str) -> httpx.Response:
    timestamp = int(time.time())
    message = f"{method}:{path}:{timestamp}:{body}".encode()
    signature = base64.b64encode(hmac.new(tenant.secret.encode(), message, hashlib.sha256).digest()).decode()
    headers = {"Authorization": f"HMAC-SHA256 {tenant.client_id}:{timestamp}:{signature}"}
    if body:
        headers["Content-Type"] = "application/json"
    return httpx.request(method, base + path, content=body.encode(), headers=headers, timeout=30)


def load(config: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("the load generator needs Node.js (node) on the PATH")
    finished = subprocess.run(
        [node, str(ROOT / "bench" / "loadgen.mjs"), json.dumps(config)],
        capture_output=True, text=True, check=True, timeout=config["seconds"] + 120,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(finished.stdout)
    return result


# ---------------------------------------------------------------------------------------------- layouts

Layout = tuple[int, int]  # API processes, workers


def default_layouts(cores: int) -> list[Layout]:
    """1 + 1 and 2 + 2 (scale-out's comparison), then 4 + 4, 8 + 8, ... while there is a core per API process."""
    layouts = [(1, 1), (2, 2)]
    processes = 4
    while processes <= cores:
        layouts.append((processes, processes))
        processes *= 2
    return layouts


def parse_layouts(text: str) -> list[Layout]:
    """`1+1,2+2,4+2`: API processes + workers, comma-separated."""
    layouts = []
    for part in text.split(","):
        api, plus, workers = part.strip().partition("+")
        if not plus or not api.strip().isdigit() or not workers.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} is not a layout like 2+2 (API processes+workers)"
            )
        layout = (int(api), int(workers))
        if layout[0] < 1 or layout[1] < 1:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r}: a layout has at least 1 API process and 1 worker"
            )
        layouts.append(layout)
    return layouts


# ---------------------------------------------------------------------------------------------- measurements


def process_tree(pids: list[int]) -> list[int]:
    """The processes and their descendants (uvicorn's worker processes are children of `paymux serve`)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in process_tree(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def connections(database_url: str, redis_url: str) -> tuple[int, int]:
    async def postgres() -> int:
        engine = create_async_engine(to_async_url(database_url))
        async with engine.connect() as connection:
            count = (
                await connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                )
            ).scalar_one()
        await engine.dispose()
        return int(count) - 1  # not this one

    info = subprocess.run(["redis-cli", "-u", redis_url, "info", "clients"], capture_output=True, text=True)
    redis_clients = next(
        (
            int(line.split(":")[1])
            for line in info.stdout.splitlines()
            if line.startswith("connected_clients:")
        ),
        0,
    )
    return asyncio.run(postgres()), redis_clients - 1


def ids_of(tenant: Tenant, api: str, count: int = 200) -> list[str]:
    response = signed_request(tenant, "GET", "/v1/payment_intents?limit=100", "", api)
    ids = [intent["id"] for intent in response.json()["data"]]
    return ids[:count]


def row(name: str, result: dict[str, Any], baseline: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        **extra,
        "throughput": result["throughput"],
        "p50_ms": result["latency_ms"]["p50"],
        "p99_ms": result["latency_ms"]["p99"],
        "errors": result["errors"],
        "vs_baseline": round(result["throughput"] / baseline, 2) if baseline else None,
        "raw": result,
    }


def http_scenarios(bench: Bench, layout: Layout, seconds: float) -> list[dict[str, Any]]:
    api_n, worker_n = layout
    tag = f"{api_n} API + {worker_n} worker"
    bench.reset()
    before = measure_baseline(bench, api_n, seconds)
    floor = before["throughput"]
    rows = [row("baseline: insert one row, one commit", before, floor, layout=tag)]
    receiver_port = free_port()
    with bench.paymux(api_n, worker_n) as api:
        tenant = bench.tenant(bench.sandbox, f"http://127.0.0.1:{receiver_port}/")
        common = tenant.signing(api)
        create = load(
            {**common, "scenario": "create", "mode": "closed", "connections": 32, "seconds": seconds}
        )
        rows.append(row("1. create PaymentIntent, saturation", create, floor, layout=tag))
        half = load({**common, "scenario": "create", "mode": "open", "connections": 64,
                     "rate": max(1, round(create["throughput"] / 2)), "seconds": seconds})  # fmt: skip
        rows.append(row("1. create PaymentIntent, 50% load", half, floor, layout=tag))
        bench.analyze()
        ids = ids_of(tenant, api)
        retrieve = load({**common, "scenario": "retrieve", "ids": ids, "mode": "closed", "connections": 32,
                         "seconds": seconds})  # fmt: skip
        rows.append(row("3. retrieve PaymentIntent", retrieve, floor, layout=tag))
        listed = load({**common, "scenario": "list", "mode": "closed", "connections": 32, "seconds": seconds})
        rows.append(row("3. list PaymentIntents (10)", listed, floor, layout=tag))
        qr = load({**common, "scenario": "qr", "mode": "closed", "connections": 64, "seconds": seconds,
                   "sandbox": f"{bench.sandbox}/paypay", "receiver_port": receiver_port})  # fmt: skip
        rows.append(row("2. QR lifecycle, saturation", qr, floor, layout=tag))
        qr_half = load({**common, "scenario": "qr", "mode": "open", "connections": 64, "seconds": seconds,
                        "rate": max(1, round(qr["throughput"] / 2)), "sandbox": f"{bench.sandbox}/paypay",
                        "receiver_port": receiver_port})  # fmt: skip
        rows.append(row("2. QR lifecycle, 50% load", qr_half, floor, layout=tag))
    # The machine's speed drifts over minutes: the baseline is measured again after paymux's scenarios, and
    # every ratio is to the mean of the two. How far they differ says how far to trust the ratios.
    after = measure_baseline(bench, api_n, seconds)
    rows.insert(1, row("baseline, measured again after", after, floor, layout=tag))
    floor = (before["throughput"] + after["throughput"]) / 2
    for item in rows:
        item["vs_baseline"] = round(item["throughput"] / floor, 2)
        item["baseline_drift"] = round(after["throughput"] / before["throughput"] - 1, 3)
    return rows


def measure_baseline(bench: Bench, api_processes: int, seconds: float) -> dict[str, Any]:
    with bench.baseline(api_processes) as url:
        return load({"base": url, "scenario": "baseline", "mode": "closed", "connections": 32,
                     "seconds": seconds})  # fmt: skip


def in_process(script: str, args: list[str]) -> dict[str, Any]:
    """Scenarios 4 and 5, which have their own scripts; their JSON is taken in whole."""
    finished = subprocess.run(
        [PYTHON, str(ROOT / "bench" / script), *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    written = next(line for line in finished.stdout.splitlines() if line.startswith("written to "))
    path = Path(written.removeprefix("written to ").strip())
    print(finished.stdout)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def interleaved(bench: Bench, layout: Layout, rounds: int, seconds: float) -> dict[str, Any]:
    """Create PaymentIntent at saturation against the baseline, measured in turns: baseline, create, baseline,
    create, ..., baseline, with both servers up throughout (each idles while the other is measured). Each create
    is divided by the mean of the two baselines around it. The machine's speed moves by tens of percent within
    minutes; measured this way a drift shows in the baselines next to each create instead of in its ratio."""
    api_n, worker_n = layout
    bench.reset()
    with bench.paymux(api_n, worker_n) as api, bench.baseline(api_n) as base:
        tenant = bench.tenant(bench.sandbox, None)
        saturation = {"mode": "closed", "connections": 32, "seconds": seconds}
        create = {**tenant.signing(api), "scenario": "create", **saturation}
        baseline = {"base": base, "scenario": "baseline", **saturation}
        load({**create, "seconds": 3})  # warm both up: connections, prepared statements, caches
        load({**baseline, "seconds": 3})
        baselines = [load(baseline)]
        creates = []
        for _ in range(rounds):
            creates.append(load(create))
            baselines.append(load(baseline))
    ratios = [
        created["throughput"] / ((baselines[turn]["throughput"] + baselines[turn + 1]["throughput"]) / 2)
        for turn, created in enumerate(creates)
    ]
    errors = sum(sum(result["errors"].values()) for result in [*creates, *baselines])
    return {
        "layout": f"{api_n} API + {worker_n} worker",
        "rounds": rounds,
        "seconds": seconds,
        "baseline_per_s": [round(result["throughput"], 1) for result in baselines],
        "create_per_s": [round(result["throughput"], 1) for result in creates],
        "create_p99_ms": [result["latency_ms"]["p99"] for result in creates],
        "ratios": [round(ratio, 3) for ratio in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "errors": errors,
    }


def print_interleaved(result: dict[str, Any]) -> None:
    print(f"{result['layout']}: {result['rounds']} rounds of {result['seconds']:g} s")
    print(f"{'round':>5} {'baseline before':>16} {'create':>8} {'baseline after':>15} {'x base':>7}")
    baselines = result["baseline_per_s"]
    for turn, (created, ratio) in enumerate(zip(result["create_per_s"], result["ratios"], strict=True)):
        print(
            f"{turn + 1:>5} {baselines[turn]:>16.1f} {created:>8.1f} {baselines[turn + 1]:>15.1f} {ratio:>7.2f}"
        )
    print(f"median ratio {result['median_ratio']:.2f}, errors {result['errors']}")


def soak(bench: Bench, minutes: float) -> dict[str, Any]:
    """Half of measured create capacity for `minutes`; RSS and connection counts sampled every 10 s."""
    bench.reset()
    with bench.paymux(1, 1) as api:
        tenant = bench.tenant(bench.sandbox, None)
        common = tenant.signing(api)
        capacity = load({**common, "scenario": "create", "mode": "closed", "connections": 32, "seconds": 10})
        rate = max(1, round(capacity["throughput"] / 2))
        config = {**common, "scenario": "create", "mode": "open", "connections": 64, "rate": rate,
                  "seconds": minutes * 60}  # fmt: skip
        node = shutil.which("node") or "node"
        generator = subprocess.Popen(
            [node, str(ROOT / "bench" / "loadgen.mjs"), json.dumps(config)], stdout=subprocess.PIPE, text=True
        )
        samples = []
        started = time.monotonic()
        while generator.poll() is None:
            postgres, redis_clients = connections(bench.database_url, bench.redis_url)
            samples.append({"t": round(time.monotonic() - started), "rss_mib": rss_mib(bench.pids),
                            "postgres_connections": postgres, "redis_clients": redis_clients})  # fmt: skip
            print(f"  soak {samples[-1]}", file=sys.stderr, flush=True)
            time.sleep(10)
        result = json.loads(generator.stdout.read() if generator.stdout else "{}")
    warm = [sample for sample in samples if sample["t"] >= 60] or samples
    growth = (warm[-1]["rss_mib"] - warm[0]["rss_mib"]) / warm[0]["rss_mib"] if warm else 0.0
    return {"rate": rate, "capacity": capacity["throughput"], "load": result, "samples": samples,
            "rss_growth_after_first_minute": round(growth, 4)}  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'scenario':<44} {'layout':<20} {'per s':>8} {'x base':>7} {'p50 ms':>8} {'p99 ms':>8}  errors"
    print(header)
    print("-" * len(header))
    for item in rows:
        ratio = "" if item["vs_baseline"] is None else f"{item['vs_baseline']:.2f}"
        print(
            f"{item['name']:<44} {item.get('layout', ''):<20} {item['throughput']:>8.1f} {ratio:>7} "
            f"{item['p50_ms'] or 0:>8.1f} {item['p99_ms'] or 0:>8.1f}  {item['errors'] or '-'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="about a minute: 5 s per scenario, 1 + 1 only")
    parser.add_argument("--soak", action="store_true", help="only the soak: 10 minutes at 50%% of capacity")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="only create against the baseline, in turns, in each layout",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --interleaved (default 5)")
    parser.add_argument(
        "--layouts",
        type=parse_layouts,
        default=None,
        help="API processes+workers to measure, e.g. 1+1,2+2,4+2 (default: 1+1 and 2+2, then 4+4, 8+8, ... "
        "while the machine has a core per API process; 1+1 with --quick)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="seconds per HTTP scenario (default 20; 5 with --quick, 10 with --interleaved)",
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("PAYMUX_BENCH_DATABASE_URL", DEFAULT_DATABASE)
    )
    parser.add_argument("--redis-url", default=os.environ.get("PAYMUX_BENCH_REDIS_URL", DEFAULT_REDIS))
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    layouts = args.layouts or ([(1, 1)] if args.quick else default_layouts(os.cpu_count() or 1))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = ROOT / "var" / "bench" / stamp
    logs.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.database_url, args.redis_url, logs)
    out: dict[str, Any] = {
        "machine": machine(),
        "started_at": stamp,
        "mode": "quick" if args.quick else "full",
    }
    if args.interleaved:
        out["mode"] = "interleaved"
        seconds = args.seconds or 10.0
        out["interleaved"] = [interleaved(bench, layout, args.rounds, seconds) for layout in layouts]
        for result in out["interleaved"]:
            print_interleaved(result)
    elif args.soak:
        out["mode"] = "soak"
        out["soak"] = soak(bench, args.soak_minutes)
        print(json.dumps({key: value for key, value in out["soak"].items() if key != "samples"}, indent=2))
    else:
        seconds = args.seconds or (5.0 if args.quick else 20.0)
        rows = [item for layout in layouts for item in http_scenarios(bench, layout, seconds)]
        out["http"] = rows
        out["analyzed_by_the_suite"] = bench.analyzed
        if not args.quick:
            out["ledger_postings"] = in_process("ledger_postings.py", ["--database-url", args.database_url])
            out["webhook_delivery"] = in_process("webhook_delivery.py", ["--database-url", args.database_url])
        print()
        print_table(rows)
    path = ROOT / "bench" / "results" / f"suite-{out['mode']}-{stamp}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
