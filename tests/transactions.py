"""Counting PostgreSQL transactions from the client side (every statement asyncpg sends, through its query
logger): a statement outside BEGIN … COMMIT is a transaction of its own, as PostgreSQL counts it. Shared by the
services' transaction-count tests."""

from __future__ import annotations

import asyncio
from functools import partial

import asyncpg
from asyncpg.connection import LoggedQuery


class TransactionCounter:
    """Transactions (and their statements) run on the connections of a pool made with `init`."""

    def __init__(self) -> None:
        self.transactions: list[list[str]] = []
        self.sent: list[str] = []  # every statement, BEGIN and COMMIT included (a round trip each)
        self._open: dict[int, list[str]] = {}

    async def init(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(partial(self._logged, id(conn)))

    def _logged(self, key: int, record: LoggedQuery) -> None:
        text = " ".join(record.query.split())
        self.sent.append(text)
        words = text.upper().split(" ", 2)
        word = words[0].rstrip(";")
        if word == "BEGIN":
            self._open[key] = []
        elif word in ("COMMIT", "ROLLBACK") and words[1:2] != ["TO"]:  # ROLLBACK TO SAVEPOINT stays in it
            self.transactions.append(self._open.pop(key, []))
        elif key in self._open:
            self._open[key].append(text)
        else:
            self.transactions.append([text])

    async def count(self) -> int:
        for _ in range(3):  # the loggers are called soon after each statement, not during it
            await asyncio.sleep(0)
        return len(self.transactions)
