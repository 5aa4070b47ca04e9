"""Cognito user flows as functions over an aiobotocore `cognito-idp` client: register, confirm, login,
logout, forgot/reset password; the user pool itself (created only for the embedded stack); the admin user
onboarding makes. Cognito's errors become `AuthError`s with stable codes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aioboto3  # type: ignore[import-untyped]
from botocore.exceptions import ClientError, ParamValidationError

from stamen.auth.errors import (
    AuthError,
    CodeInvalid,
    IdentityProviderError,
    IdentityRequestInvalid,
    LoginFailed,
    NewPasswordRequired,
    PasswordPolicy,
    TokenRevoked,
    UserDisabled,
    UserExists,
    UserNotConfirmed,
    UserNotFound,
)
from stamen.auth.tokens import TENANT_CLAIM
from stamen.aws_clients import client_config

TENANT_ATTRIBUTE = "customer_id"  # declared in the pool schema; appears as custom:customer_id
NEW_PASSWORD_CHALLENGE = "NEW_PASSWORD_REQUIRED"
APP_CLIENT_NAME = "stamen-portal"

_ERRORS: dict[str, type[AuthError]] = {
    "NotAuthorizedException": LoginFailed,
    "UserNotConfirmedException": UserNotConfirmed,
    "UsernameExistsException": UserExists,
    "AliasExistsException": UserExists,
    "UserNotFoundException": UserNotFound,
    "InvalidPasswordException": PasswordPolicy,
    "CodeMismatchException": CodeInvalid,
    "ExpiredCodeException": CodeInvalid,
    "InvalidParameterException": IdentityRequestInvalid,
}


def aws_code(error: ClientError) -> str:
    details: Any = error.response
    return str(details.get("Error", {}).get("Code", ""))


def translate(error: ClientError, action: str) -> AuthError:
    code = aws_code(error)
    cls = _ERRORS.get(code, IdentityProviderError)
    if cls is IdentityRequestInvalid:  # Cognito's words say which input and why
        reason: Any = error.response
        message = f"{action} refused by Cognito: {reason.get('Error', {}).get('Message', code)}"
    elif cls is IdentityProviderError:
        message = f"{action} failed: Cognito said {code}"
    else:
        message = f"{action} failed"
    return cls(message, aws_code=code)


@asynccontextmanager
async def cognito_client(
    region: str, endpoint_url: str | None = None, *, emulator: bool = False
) -> AsyncIterator[Any]:
    """`emulator`: sign with dummy credentials (moto accepts any; real ones are never sent to it)."""
    session = (
        aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        if emulator
        else aioboto3.Session()
    )
    async with session.client(
        "cognito-idp", region_name=region, endpoint_url=endpoint_url, config=client_config()
    ) as client:
        yield client


@dataclass(frozen=True)
class UserPool:
    user_pool_id: str
    app_client_id: str
    region: str


@dataclass(frozen=True)
class Tokens:
    id_token: str
    access_token: str
    refresh_token: str | None
    expires_in: int
    token_type: str = "Bearer"


@dataclass(frozen=True)
class CodeDelivery:
    destination: str
    medium: str
    # moto (the embedded stack) hands the reset code back in a response header instead of mailing it;
    # real Cognito never does, so this is None in production.
    emulator_code: str | None = None


async def ensure_user_pool(
    client: Any,
    *,
    name: str,
    operator_group: str = "operators",
    create: bool,
    user_pool_id: str | None = None,
) -> UserPool:
    """The pool (by id, else by name) with our app client and operators group; created only if `create`."""
    region = client.meta.region_name
    pool_id = user_pool_id
    if pool_id is None:
        paginator = client.get_paginator("list_user_pools")
        async for page in paginator.paginate(MaxResults=60):
            for pool in page.get("UserPools", []):
                if pool["Name"] == name:
                    pool_id = pool["Id"]
                    break
            if pool_id:
                break
    if pool_id is None:
        if not create:
            raise IdentityProviderError(
                f"Cognito user pool {name!r} not found; set STAMEN_COGNITO_USER_POOL_ID "
                "(or STAMEN_COGNITO_CREATE_POOL=true for the embedded stack)",
                aws_code="ResourceNotFoundException",
            )
        created = await client.create_user_pool(
            PoolName=name,
            UsernameAttributes=["email"],
            AutoVerifiedAttributes=["email"],
            Policies={
                "PasswordPolicy": {
                    "MinimumLength": 12,
                    "RequireUppercase": True,
                    "RequireLowercase": True,
                    "RequireNumbers": True,
                    "RequireSymbols": False,
                }
            },
            Schema=[
                {"Name": "email", "AttributeDataType": "String", "Required": True, "Mutable": True},
                {
                    "Name": TENANT_ATTRIBUTE,
                    "AttributeDataType": "String",
                    "Mutable": False,
                    "StringAttributeConstraints": {"MinLength": "1", "MaxLength": "63"},
                },
            ],
            AccountRecoverySetting={"RecoveryMechanisms": [{"Priority": 1, "Name": "verified_email"}]},
        )
        pool_id = created["UserPool"]["Id"]
    client_id: str | None = None
    paginator = client.get_paginator("list_user_pool_clients")
    async for page in paginator.paginate(UserPoolId=pool_id, MaxResults=60):
        for app in page.get("UserPoolClients", []):
            if app["ClientName"] == APP_CLIENT_NAME:
                client_id = app["ClientId"]
    if client_id is None:
        if not create:
            raise IdentityProviderError(
                f"user pool {pool_id} has no app client {APP_CLIENT_NAME!r}",
                aws_code="ResourceNotFoundException",
            )
        app = await client.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName=APP_CLIENT_NAME,
            GenerateSecret=False,
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
            ReadAttributes=["email", f"custom:{TENANT_ATTRIBUTE}"],
            WriteAttributes=["email"],  # users must not change their own tenant
            PreventUserExistenceErrors="ENABLED",
        )
        client_id = app["UserPoolClient"]["ClientId"]
    if create:
        try:
            await client.create_group(
                GroupName=operator_group, UserPoolId=pool_id, Description="stamen operators: see every tenant"
            )
        except ClientError as exc:
            if aws_code(exc) != "GroupExistsException":
                raise
    assert pool_id is not None and client_id is not None
    return UserPool(user_pool_id=pool_id, app_client_id=client_id, region=region)


def _tokens(result: dict[str, Any], *, refresh_token: str | None = None) -> Tokens:
    """Tokens from an AuthenticationResult (a refresh answer carries no new refresh token)."""
    return Tokens(
        id_token=result["IdToken"],
        access_token=result["AccessToken"],
        refresh_token=result.get("RefreshToken") or refresh_token,
        expires_in=int(result.get("ExpiresIn", 3600)),
        token_type=result.get("TokenType", "Bearer"),
    )


# --- self-service flows (public app client, no admin credentials) -----------------------------------
async def register(client: Any, *, app_client_id: str, email: str, password: str, customer_id: str) -> str:
    """sign_up; returns the new user's `sub`. The user must then be confirmed (code or admin)."""
    try:
        answer = await client.sign_up(
            ClientId=app_client_id,
            Username=email,
            Password=password,
            UserAttributes=[{"Name": "email", "Value": email}, {"Name": TENANT_CLAIM, "Value": customer_id}],
        )
    except ClientError as exc:
        raise translate(exc, "registration") from None
    return str(answer["UserSub"])


async def confirm_with_code(client: Any, *, app_client_id: str, username: str, code: str) -> None:
    try:
        await client.confirm_sign_up(ClientId=app_client_id, Username=username, ConfirmationCode=code)
    except ClientError as exc:
        raise translate(exc, "confirmation") from None


async def login(client: Any, *, app_client_id: str, username: str, password: str) -> Tokens:
    """initiate_auth with USER_PASSWORD_AUTH. A challenge (new password, MFA) is reported as LoginFailed
    with `details.challenge` for the caller to handle."""
    try:
        answer = await client.initiate_auth(
            ClientId=app_client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
    except ClientError as exc:
        raise translate(exc, "login") from None
    result = answer.get("AuthenticationResult")
    if not result and answer.get("ChallengeName") == NEW_PASSWORD_CHALLENGE:
        raise NewPasswordRequired(
            "the password is a temporary one: choose a new password (POST /api/v1/auth/new-password with this "
            "session, or `stamen login`)",
            challenge=NEW_PASSWORD_CHALLENGE,
            session=answer.get("Session"),
        )
    if not result:
        raise LoginFailed(
            "login needs another step", challenge=answer.get("ChallengeName"), session=answer.get("Session")
        )
    return _tokens(result)


async def refresh(client: Any, *, app_client_id: str, refresh_token: str) -> Tokens:
    """initiate_auth with REFRESH_TOKEN_AUTH: fresh id and access tokens (the refresh token stays the same;
    Cognito refuses it once the user was signed out globally or disabled)."""
    try:
        answer = await client.initiate_auth(
            ClientId=app_client_id,
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": refresh_token},
        )
    except ClientError as exc:
        raise translate(exc, "session refresh") from None
    result = answer.get("AuthenticationResult") or {}
    if "AccessToken" not in result:
        raise LoginFailed("the session could not be refreshed; sign in again")
    return _tokens(result, refresh_token=refresh_token)


async def answer_new_password(
    client: Any, *, app_client_id: str, username: str, session: str, new_password: str
) -> Tokens:
    """RespondToAuthChallenge NEW_PASSWORD_REQUIRED: the invited user's first sign-in, with the session
    `login` handed out; returns the user's tokens."""
    try:
        answer = await client.respond_to_auth_challenge(
            ClientId=app_client_id,
            ChallengeName=NEW_PASSWORD_CHALLENGE,
            Session=session,
            ChallengeResponses={"USERNAME": username, "NEW_PASSWORD": new_password},
        )
    except ClientError as exc:
        # An expired, foreign or made-up session (Cognito: NotAuthorized; moto: ResourceNotFound), or no such
        # user: the caller signs in again with the temporary password.
        if aws_code(exc) in (
            "NotAuthorizedException",
            "ResourceNotFoundException",
            "UserNotFoundException",
            "ExpiredCodeException",
            "CodeMismatchException",
        ):
            raise LoginFailed(
                "the sign-in session is not valid or has expired: sign in again with the temporary password"
            ) from None
        raise translate(exc, "setting the new password") from None
    except ParamValidationError as exc:  # botocore's own checks (lengths, characters) of what was sent
        raise IdentityRequestInvalid(f"setting the new password refused: {exc}") from None
    result = answer.get("AuthenticationResult")
    if not result:
        raise LoginFailed(
            "setting the new password needs another step", challenge=answer.get("ChallengeName")
        )
    return _tokens(result)


async def logout(client: Any, *, access_token: str) -> None:
    """global_sign_out: Cognito revokes the user's refresh tokens and stops accepting its access tokens.
    JWTs already issued still verify offline until `exp`; `CognitoTenantResolver` notices the revocation."""
    try:
        await client.global_sign_out(AccessToken=access_token)
    except ClientError as exc:
        raise translate(exc, "logout") from None


async def forgot_password(client: Any, *, app_client_id: str, username: str) -> CodeDelivery:
    try:
        answer = await client.forgot_password(ClientId=app_client_id, Username=username)
    except ClientError as exc:
        raise translate(exc, "password reset") from None
    delivery = answer.get("CodeDeliveryDetails", {})
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return CodeDelivery(
        destination=str(delivery.get("Destination", "")),
        medium=str(delivery.get("DeliveryMedium", "")),
        emulator_code=headers.get("x-moto-forgot-password-confirmation-code") or None,
    )


async def reset_password(
    client: Any, *, app_client_id: str, username: str, code: str, new_password: str
) -> None:
    try:
        await client.confirm_forgot_password(
            ClientId=app_client_id, Username=username, ConfirmationCode=code, Password=new_password
        )
    except ClientError as exc:
        raise translate(exc, "password reset") from None


# --- admin flows (server credentials) ---------------------------------------------------------------
async def admin_confirm(client: Any, *, user_pool_id: str, username: str) -> None:
    """admin_confirm_sign_up: the embedded stack has no mail, so an operator (or the demo) confirms."""
    try:
        await client.admin_confirm_sign_up(UserPoolId=user_pool_id, Username=username)
    except ClientError as exc:
        raise translate(exc, "confirmation") from None


async def admin_logout(client: Any, *, user_pool_id: str, username: str) -> None:
    """admin_user_global_sign_out, for a server that has already verified the caller's token."""
    try:
        await client.admin_user_global_sign_out(UserPoolId=user_pool_id, Username=username)
    except ClientError as exc:
        raise translate(exc, "logout") from None


async def add_operator(client: Any, *, user_pool_id: str, username: str, group: str = "operators") -> None:
    try:
        await client.admin_add_user_to_group(UserPoolId=user_pool_id, Username=username, GroupName=group)
    except ClientError as exc:
        raise translate(exc, "adding the user to the operators group") from None


async def user_exists(client: Any, *, user_pool_id: str, username: str) -> bool:
    try:
        await client.admin_get_user(UserPoolId=user_pool_id, Username=username)
    except ClientError as exc:
        if aws_code(exc) == "UserNotFoundException":
            return False
        raise
    return True


async def create_customer_admin(
    client: Any, *, user_pool_id: str, email: str, customer_id: str, temporary_password: str | None = None
) -> str:
    """admin_create_user with custom:customer_id; Cognito mails an invitation with a temporary password
    (unless one is given here, then the invitation is suppressed). Returns the username."""
    return await admin_create_user(
        client,
        user_pool_id=user_pool_id,
        email=email,
        customer_id=customer_id,
        temporary_password=temporary_password,
    )


async def admin_create_user(
    client: Any,
    *,
    user_pool_id: str,
    email: str,
    customer_id: str | None,
    temporary_password: str | None = None,
) -> str:
    """A user of `customer_id` (None: no tenant, e.g. an operator), e-mail verified. Cognito mails an
    invitation with a temporary password unless one is given (then nothing is mailed). Returns the username."""
    attributes = [{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}]
    if customer_id is not None:
        attributes.append({"Name": TENANT_CLAIM, "Value": customer_id})
    kwargs: dict[str, Any] = {
        "UserPoolId": user_pool_id,
        "Username": email,
        "UserAttributes": attributes,
        "DesiredDeliveryMediums": ["EMAIL"],
    }
    if temporary_password is not None:
        kwargs["TemporaryPassword"] = temporary_password
        kwargs["MessageAction"] = "SUPPRESS"
    try:
        await client.admin_create_user(**kwargs)
    except ClientError as exc:
        raise translate(exc, "creating the user") from None
    return email


async def admin_set_password(client: Any, *, user_pool_id: str, username: str, password: str) -> None:
    """A permanent password: the user signs in with it, no challenge."""
    try:
        await client.admin_set_user_password(
            UserPoolId=user_pool_id, Username=username, Password=password, Permanent=True
        )
    except ClientError as exc:
        raise translate(exc, "setting the password") from None


async def delete_user(client: Any, *, user_pool_id: str, username: str) -> None:
    """Idempotent: a user that is already gone is fine."""
    try:
        await client.admin_delete_user(UserPoolId=user_pool_id, Username=username)
    except ClientError as exc:
        if aws_code(exc) != "UserNotFoundException":
            raise


class CognitoTenantResolver:
    """For access tokens (which carry no custom attributes): ask Cognito's GetUser for the user's
    custom:customer_id. GetUser also fails once the user signed out everywhere, so this doubles as a
    revocation check. Answers are cached per token for `ttl_seconds`."""

    def __init__(self, client: Any, *, ttl_seconds: float = 60.0, max_entries: int = 10_000) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._max = max_entries
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()

    async def __call__(self, token: str, claims: Mapping[str, Any]) -> str | None:
        key = str(claims.get("jti") or token)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        try:
            user = await self._client.get_user(AccessToken=token)
        except ClientError as exc:
            if aws_code(exc) == "NotAuthorizedException":  # signed out, or the user is disabled
                raise TokenRevoked("Cognito no longer accepts this access token") from None
            if aws_code(exc) == "UserNotFoundException":  # the user was deleted: the caller's fault, not ours
                raise UserDisabled("the user of this token no longer exists") from None
            raise IdentityProviderError("Cognito GetUser failed", aws_code=aws_code(exc)) from None
        attributes = {a["Name"]: a["Value"] for a in user.get("UserAttributes", [])}
        tenant = attributes.get(TENANT_CLAIM)
        self._cache[key] = (now, tenant)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return tenant


class CognitoUserCheck:
    """Is the user of a verified token still there and enabled? A Cognito JWT verifies offline until its
    `exp` (an hour), so without this a disabled or deleted user's id token would keep working that long.
    AdminGetUser answers, cached per user for `ttl_seconds` (default 60): a user disabled or deleted is
    refused (AUTH_USER_DISABLED) by every replica within that time."""

    def __init__(
        self, client: Any, user_pool_id: str, *, ttl_seconds: float = 60.0, max_entries: int = 10_000
    ) -> None:
        self._client = client
        self._pool = user_pool_id
        self._ttl = ttl_seconds
        self._max = max_entries
        self._cache: OrderedDict[str, tuple[float, bool]] = OrderedDict()

    async def __call__(self, username: str) -> None:
        now = time.monotonic()
        hit = self._cache.get(username)
        if hit is None or now - hit[0] >= self._ttl:
            try:
                user = await self._client.admin_get_user(UserPoolId=self._pool, Username=username)
                usable = bool(user.get("Enabled", True))
            except ClientError as exc:
                if aws_code(exc) != "UserNotFoundException":
                    raise IdentityProviderError(
                        "Cognito AdminGetUser failed", aws_code=aws_code(exc)
                    ) from None
                usable = False
            hit = (now, usable)
            self._cache[username] = hit
            self._cache.move_to_end(username)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        if not hit[1]:
            raise UserDisabled(
                "the user of this token has been disabled or deleted; sign in again as an active user"
            )
