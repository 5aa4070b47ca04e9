"""A Cognito user pool on moto's server, made by our own `ensure_user_pool`, plus helpers for users."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
import jwt
from moto.utilities.utils import load_resource

from stamen.auth import cognito
from stamen.auth.settings import AuthSettings
from stamen.auth.tokens import CognitoTokenVerifier

REGION = "us-east-1"  # see test_logout: moto routes the unsigned GlobalSignOut to us-east-1 only
PASSWORD = "Correct-Horse-9-Battery"


def moto_signing_key() -> Any:
    """moto signs every pool's tokens with this fixed key (cognitoidp/resources/jwks-private.json)."""
    return jwt.PyJWK(load_resource("cognitoidp/resources/jwks-private.json")).key


@dataclass
class CognitoLab:
    endpoint: str
    pool: cognito.UserPool
    boto: Any

    @classmethod
    async def create(cls, endpoint: str) -> CognitoLab:
        async with cognito.cognito_client(REGION, endpoint) as client:
            pool = await cognito.ensure_user_pool(client, name=f"pool-{uuid.uuid4().hex[:8]}", create=True)
        return cls(endpoint, pool, boto3.client("cognito-idp", region_name=REGION, endpoint_url=endpoint))

    def settings(self, **overrides: Any) -> AuthSettings:
        values: dict[str, Any] = {
            "region": REGION,
            "aws_endpoint_url": self.endpoint,
            "cognito_user_pool_id": self.pool.user_pool_id,
            "cognito_app_client_ids": self.pool.app_client_id,
            "jwks_min_refresh_seconds": 0.0,
        }
        values.update(overrides)
        return AuthSettings.model_validate(values)

    def verifier(self, **overrides: Any) -> CognitoTokenVerifier:
        return CognitoTokenVerifier.from_settings(self.settings(**overrides))

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{REGION}.amazonaws.com/{self.pool.user_pool_id}"

    async def user(self, customer_id: str | None, *, operator: bool = False) -> tuple[str, cognito.Tokens]:
        """A confirmed user (registered through the self-service flow) and its fresh tokens."""
        email = f"u-{uuid.uuid4().hex[:8]}@lab.example"
        async with cognito.cognito_client(REGION, self.endpoint) as client:
            if customer_id is None:
                self.boto.admin_create_user(
                    UserPoolId=self.pool.user_pool_id,
                    Username=email,
                    TemporaryPassword=PASSWORD,
                    MessageAction="SUPPRESS",
                )
                self.boto.admin_set_user_password(
                    UserPoolId=self.pool.user_pool_id, Username=email, Password=PASSWORD, Permanent=True
                )
            else:
                await cognito.register(
                    client,
                    app_client_id=self.pool.app_client_id,
                    email=email,
                    password=PASSWORD,
                    customer_id=customer_id,
                )
                await cognito.admin_confirm(client, user_pool_id=self.pool.user_pool_id, username=email)
            if operator:
                await cognito.add_operator(client, user_pool_id=self.pool.user_pool_id, username=email)
            tokens = await cognito.login(
                client, app_client_id=self.pool.app_client_id, username=email, password=PASSWORD
            )
        return email, tokens


def resign(token: str, key: Any, *, headers: dict[str, Any] | None = None, **changes: Any) -> str:
    """The same claims (with `changes`) signed again with `key`."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    header = {"kid": "dummy", **(headers or {})}
    return jwt.encode(claims, key, algorithm="RS256", headers=header)


def now() -> int:
    return int(time.time())
