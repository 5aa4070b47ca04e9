from collections.abc import AsyncIterator

import pytest

from stamen.inputs.demo import DEMO_BUCKET
from tests.api.conftest import World, moto_endpoint, world
from tests.intake.s3kit import grant

__all__ = ["moto_endpoint", "world"]


@pytest.fixture(autouse=True)
async def demo_bucket_granted(world: World) -> AsyncIterator[None]:
    """The CLI tests submit the demo workset: both tenants may use the bucket its reads are in."""
    for tenant in (world.a, world.b):
        await grant(world.pool, tenant.id, DEMO_BUCKET)
    yield
