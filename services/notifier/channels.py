"""The channel adapters the worker sends through, opened once per process (cleanup context)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aioboto3  # type: ignore[import-untyped]
import aiohttp
from aiohttp import web

from services.notifier.worker import DeliveryWorker
from stamen.aws_clients import client_config
from stamen.notifications.channels.base import ChannelAdapter
from stamen.notifications.channels.linear import LinearChannel
from stamen.notifications.channels.sns import SnsChannel
from stamen.notifications.channels.webhook import WebhookChannel, guarded_session
from stamen.notifications.preferences import Channel
from stamen.notifications.secrets import open_secret_store
from stamen.notifications.settings import NotifySettings
from stamen.service.keys import POOL, SETTINGS

NOTIFY_SETTINGS = web.AppKey("notify_settings", NotifySettings)
WORKER = web.AppKey("delivery_worker", DeliveryWorker)


@asynccontextmanager
async def open_channels(settings: NotifySettings) -> AsyncIterator[dict[Channel, ChannelAdapter]]:
    async with AsyncExitStack() as stack:
        secrets = await stack.enter_async_context(open_secret_store(settings))
        sns_client = await stack.enter_async_context(
            aioboto3.Session().client(
                "sns",
                region_name=settings.aws_region,
                endpoint_url=settings.aws_endpoint_url,
                config=client_config(),
            )
        )
        linear_http = await stack.enter_async_context(
            aiohttp.ClientSession(headers={"User-Agent": "stamen-notifier"})
        )
        webhook_http = await stack.enter_async_context(
            guarded_session(allow_private=settings.webhook_allow_private)
        )
        yield {
            Channel.SNS: SnsChannel(sns_client),
            Channel.LINEAR: LinearChannel(linear_http, settings.linear_api_url, secrets),
            Channel.WEBHOOK: WebhookChannel(
                webhook_http,
                secrets,
                allow_http=settings.webhook_allow_http,
                allow_private=settings.webhook_allow_private,
            ),
        }


async def delivery_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[NOTIFY_SETTINGS]
    async with open_channels(settings) as channels:
        worker = DeliveryWorker(app[POOL], channels, settings, region=app[SETTINGS].region)
        await worker.start()
        app[WORKER] = worker
        yield
        await worker.stop(app[SETTINGS].drain_timeout_seconds)
