"""Typed keys for what a service's aiohttp application holds."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from stamen.bus.consumer import ConsumerSpec, DurableConsumer
from stamen.bus.publisher import JetStreamPublisher
from stamen.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICE_NAME = web.AppKey("service_name", str)
POOL = web.AppKey("pool", asyncpg.Pool)
NATS_CLIENT = web.AppKey("nats", NATS)
JETSTREAM = web.AppKey("jetstream", JetStreamContext)
PUBLISHER = web.AppKey("publisher", JetStreamPublisher)
CONSUMER_SPECS = web.AppKey("consumer_specs", list[ConsumerSpec])
CONSUMERS = web.AppKey("consumers", list[DurableConsumer])
