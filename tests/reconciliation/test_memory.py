"""An import streams: memory stays bounded whatever the file's size (docs/reconciliation.md, Idempotent and
streaming). Files of 5,000 and 50,000 lines, nearly all unknown to paymux, go through the service while
tracemalloc measures the Python heap's peak: ten times the lines may not take much more memory, and the peak
stays far below the file's size.

Each line is matched and written (an exception row), which under tracemalloc costs about half a millisecond a
line on SQLite, so the large file has 50,000 lines, not more: the test stays well within a minute. The lines
carry an acquirer's usual extra columns (ignored by the layout), so that the file, at some 50 MB, is large beside
the heap; anything that held the file, or a structure per line, would show."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from paymux.container import Container
from paymux.core.clock import FrozenClock
from tests.reconciliation.support import TEST_HEADER, Txn, import_path, iso, midnight, pay, scope_of
from tests.support import ServerClient, Tenant

MiB = 1 << 20


@dataclass(frozen=True)
class Measured:
    lines: int
    size: int
    peak: int
    seconds: float


EXTRA_HEADER = [
    "merchant_account",
    "store_name",
    "terminal_id",
    "card_brand",
    "masked_pan",
    "auth_code",
    "batch_no",
    "payout_date",
    "items",
]
ITEMS = (
    '"Green tea set (Uji, 100 g) x2; Cast iron teapot 0.6 l, black; Tea cups, porcelain, set of 5; '
    "Bamboo tea scoop; Gift wrapping with noshi paper; Delivery 9-12, call the customer before shipping; "
    "Loyalty points used: 120; Coupon SPRING-10 applied to the teapot only; Receipt requested by e-mail; "
    "Matcha powder, ceremonial grade, 30 g tin x3; Chasen whisk, 100 prongs; Chawan bowl, Hagi ware; "
    "Sencha, first flush, 200 g; Hojicha tea bags x40; Genmaicha, 500 g family pack; Kyusu strainer, stainless; "
    "Furoshiki cloth, indigo, 70 cm; Tea caddy, cherry bark; Wagashi assortment, 12 pieces, keep refrigerated; "
    'Gift message: Happy birthday from all of us at the office"'
)


def write_big_file(path: Path, lines: int, prefix: str, real: list[Txn], at: str) -> int:
    """`lines` lines in the `test` layout with an acquirer's usual extra columns (ignored by the layout), the
    real payments spread through the file, the rest unknown."""
    every = lines // (len(real) + 1)
    blank = "," * len(EXTRA_HEADER)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join([*TEST_HEADER, *EXTRA_HEADER]) + "\n")
        pending = list(real)
        for n in range(lines - len(real)):
            if pending and n and n % every == 0:
                out.write(",".join(pending.pop(0).row()) + blank + "\n")
            out.write(f"payment,test_ch_{prefix}{n:09d},pi_{prefix}{n:09d},{100 + n % 9000},JPY,0,{at},")
            out.write(
                f"SakuraTradingJP,Sakura Trading Shinjuku,TERM-{n % 997:06d},VISA,411111******{n % 10000:04d},"
                f"A{n % 100000:05d},B{n // 500:06d},{at[:10]},{ITEMS}\n"
            )
        for txn in pending:
            out.write(",".join(txn.row()) + blank + "\n")
    return path.stat().st_size


async def measure(container: Container, tenant: Tenant, path: Path, lines: int, real: list[Txn]) -> Measured:
    at = iso(real[0].updated_at)
    size = await asyncio.to_thread(write_big_file, path, lines, path.stem, real, at)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = await import_path(container, path, scope_of(tenant))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.perf_counter() - started
    run = result.run
    assert (run.status, run.lines, run.matched, run.missing_in_paymux) == (
        "completed",
        lines,
        len(real),
        lines - len(real),
    )
    return Measured(lines, size, peak, seconds)


@pytest.mark.slow
async def test_memory_stays_bounded_whatever_the_files_size(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant, tmp_path: Path
) -> None:
    clock.set(midnight(clock.now()).replace(hour=9))
    real = [await pay(server, clock, tenant, amount) for amount in (1000, 2000, 3000, 4000)]
    small = await measure(container, tenant, tmp_path / "s", 5_000, real[:2])
    large = await measure(container, tenant, tmp_path / "l", 50_000, real[2:])
    print(  # noqa: T201 - the figures, for `pytest -s`
        f"\n5k lines: {small.size / MiB:.1f} MiB file, peak {small.peak / MiB:.2f} MiB, {small.seconds:.1f} s"
        f"\n50k lines: {large.size / MiB:.1f} MiB file, peak {large.peak / MiB:.2f} MiB, {large.seconds:.1f} s"
    )
    assert large.size > 9 * small.size
    # Ten times the lines: the peak may not grow with them (2x and 2 MiB leave room for noise)...
    assert large.peak < 2 * small.peak + 2 * MiB, (small, large)
    # ...and stays far below the file itself.
    assert large.peak < large.size / 4, (small, large)
