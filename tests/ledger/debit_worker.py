"""One of the processes of test_concurrency.py: debits a wallet `count` times, all at once, and prints the outcome.

    python -m tests.ledger.debit_worker DATABASE_URL WALLET_NAME SINK_NAME KEY_PREFIX COUNT AMOUNT

It prints `ready` once its engine is connected, waits for a line on stdin (so that every process starts its
debits together), then prints one JSON object: {"ok": n, "insufficient": m}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from sqlalchemy import text

from paymux.core.clock import SystemClock
from paymux.core.db import Database
from paymux.ledger.errors import InsufficientFunds
from paymux.ledger.service import LedgerService
from tests.ledger.support import move, wallet


async def main(url: str, wallet_name: str, sink_name: str, prefix: str, count: int, amount: int) -> None:
    db = Database(url, pool_size=5, max_overflow=0)
    ledger = LedgerService(db, SystemClock())
    source, sink = wallet(wallet_name), wallet(sink_name, floor=None)
    try:
        async with db.reading() as session:
            await session.execute(text("SELECT 1"))
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def debit(index: int) -> bool:
            try:
                await ledger.transfer(move(source, sink, amount, key=f"{prefix}-{index}"))
            except InsufficientFunds:
                return False
            return True

        outcomes = await asyncio.gather(*(debit(index) for index in range(count)))
    finally:
        await db.dispose()
    sys.stdout.write(json.dumps({"ok": outcomes.count(True), "insufficient": outcomes.count(False)}) + "\n")


if __name__ == "__main__":
    url, wallet_name, sink_name, prefix, count, amount = sys.argv[1:7]
    asyncio.run(main(url, wallet_name, sink_name, prefix, int(count), int(amount)))
