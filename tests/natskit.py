"""A NATS request as a lab system makes it: the reply comes under the tenant's own inbox prefix
(`_INBOX.<tenant>.`), the only reply subject the validator answers on (stamen.natsauth.reply_subject_allowed).
Works on any connection, so tests may use the services' one."""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from stamen.natsauth import inbox_prefix


async def tenant_request(
    nc: NATS, tenant: str, body: bytes, *, headers: dict[str, str] | None = None, timeout: float = 10
) -> Msg:
    inbox = f"{inbox_prefix(tenant)}.{uuid.uuid4().hex}"
    sub = await nc.subscribe(inbox, max_msgs=1)
    try:
        await nc.publish(f"stamen.intake.{tenant}", body, reply=inbox, headers=headers)
        return await asyncio.wait_for(sub.next_msg(timeout=timeout), timeout)
    finally:
        await sub.unsubscribe()
