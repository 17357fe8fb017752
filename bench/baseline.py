"""The baseline of every HTTP figure: the same framework and stack as paymux (FastAPI, uvicorn, SQLAlchemy async,
asyncpg on PostgreSQL) answering one POST by inserting one row and committing it. Nothing durable over HTTP can
be cheaper on this machine, so paymux's figures are read as a fraction of this one.

    uvicorn bench.baseline:app  (with BASELINE_DATABASE_URL set)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from paymux.core.db import to_async_url

engine = create_async_engine(to_async_url(os.environ["BASELINE_DATABASE_URL"]), pool_size=10, max_overflow=20)


class Row(BaseModel):
    value: str


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.post("/rows", status_code=201)
async def insert(row: Row) -> dict[str, int]:
    async with engine.begin() as connection:
        inserted = await connection.execute(
            text("INSERT INTO bench_rows (value) VALUES (:value) RETURNING id"), {"value": row.value}
        )
        return {"id": int(inserted.scalar_one())}
