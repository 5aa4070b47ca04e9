"""Channel adapters: SNS (aioboto3), Linear (GraphQL over aiohttp), webhooks (signed JSON over aiohttp)."""
