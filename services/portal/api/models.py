"""Request and response bodies of the JSON API. Their JSON Schemas are the OpenAPI components."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema

from stamen.customers.model import MAX_CONCURRENT_WORKSETS, CustomerStatus
from stamen.domain.clusters import ClusterSpec
from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import TENANT_ID_REGEX
from stamen.retry import RequeueChanges
from stamen.tenancy.buckets import GrantAccess
from stamen.tenancy.buckets import Source as BucketSource
from stamen.worksets.findings import Finding
from stamen.worksets.rules import BUCKET_NAME_REGEX

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
TENANT = TENANT_ID_REGEX


def inline_enum(enum: type[StrEnum]) -> WithJsonSchema:
    """A domain enum's values in place in the JSON Schema (as a Literal's are), not a $ref: query
    parameters have no components to point into."""
    return WithJsonSchema({"type": "string", "enum": [member.value for member in enum]})


WorksetStateName = Annotated[WorksetState, inline_enum(WorksetState)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable; see docs/api.md.")
    message: str
    details: dict[str, Any]


class OkResponse(BaseModel):
    ok: bool


# --- auth -----------------------------------------------------------------------------------------
class RegisterRequest(Body):
    email: str = Field(pattern=EMAIL, max_length=254)
    password: str = Field(min_length=1, max_length=256)
    customer_id: str = Field(pattern=TENANT)
    confirm: bool = Field(default=False, description="Confirm at once (operators only; no mail needed).")


class RegisterResponse(BaseModel):
    user_sub: str
    username: str
    confirmed: bool


class ConfirmRequest(Body):
    email: str = Field(pattern=EMAIL, max_length=254)
    code: str = Field(min_length=1, max_length=64)


class LoginRequest(Body):
    email: str = Field(pattern=EMAIL, max_length=254)
    password: str = Field(min_length=1, max_length=256)


class NewPasswordRequest(Body):
    email: str = Field(pattern=EMAIL, max_length=254)
    session: str = Field(
        min_length=20,
        max_length=2048,
        description="`details.session` of the login's AUTH_NEW_PASSWORD_REQUIRED answer.",
    )
    new_password: str = Field(min_length=1, max_length=256)


class TokensResponse(BaseModel):
    id_token: str
    access_token: str
    refresh_token: str | None
    expires_in: int
    token_type: str


class ForgotPasswordRequest(Body):
    email: str = Field(pattern=EMAIL, max_length=254)


class CodeDeliveryResponse(BaseModel):
    destination: str
    medium: str
    emulator_code: str | None = Field(description="Only the local emulator (moto) returns the code.")


class ResetPasswordRequest(Body):
    email: str = Field(pattern=EMAIL, max_length=254)
    code: str = Field(min_length=1, max_length=64)
    new_password: str = Field(min_length=1, max_length=256)


# --- customers ------------------------------------------------------------------------------------
class CustomerCreate(Body):
    customer_name: str = Field(min_length=1, max_length=200)
    email: str = Field(pattern=EMAIL, max_length=254)
    customer_id: str | None = Field(default=None, pattern=TENANT)
    max_concurrent_worksets: int | None = Field(default=None, ge=0, le=MAX_CONCURRENT_WORKSETS)
    max_storage_gb: float | None = Field(default=None, ge=0, le=1e9)
    billing_account_id: str | None = Field(default=None, max_length=200)
    cost_center: str | None = Field(default=None, max_length=200)


class CustomerOut(BaseModel):
    customer_id: str
    customer_name: str
    email: str
    s3_bucket: str
    max_concurrent_worksets: int
    max_storage_gb: float
    region: str
    status: str
    created_at: datetime
    billing_account_id: str | None
    cost_center: str | None
    sns_topic_arn: str | None


class CustomerCreated(BaseModel):
    customer: CustomerOut
    created: bool


class CustomerList(BaseModel):
    items: list[CustomerOut]
    next_cursor: str | None


class CustomerListQuery(Body):
    status: CustomerStatus | None = None
    cursor: str | None = Field(default=None, pattern=TENANT, description="next_cursor of the previous page")
    limit: int = Field(default=100, ge=1, le=500)


class UsageQuery(Body):
    month: str | None = Field(
        default=None, pattern=r"^\d{4}-\d{2}$", description="YYYY-MM; default: this month"
    )
    format: Literal["json", "csv"] = "json"


class UsageOut(BaseModel):
    customer_id: str
    month: str
    worksets_by_state: dict[str, int]
    worksets_total: int
    vcpu_hours: float
    steps_measured: int
    steps_unmeasured: int
    storage_gb: float | None
    storage_measured_at: datetime | None
    max_storage_gb: float
    estimated_cost_usd: float
    worksets_with_estimate: int
    worksets_without_estimate: int
    actual_cost_usd: float
    caveats: list[str]


# --- worksets -------------------------------------------------------------------------------------
class Links(BaseModel):
    self: str


class SubmitResponse(BaseModel):
    ok: bool
    workset_id: str
    state: str
    created: bool
    warnings: list[Finding]
    links: Links


class WorksetListQuery(Body):
    state: WorksetStateName | None = None
    tenant: str | None = Field(default=None, pattern=TENANT, description="Operators: one tenant only.")
    cursor: str | None = Field(default=None, max_length=200, description="next_cursor of the previous page")
    limit: int = Field(default=50, ge=1, le=500)


class WorksetSummary(BaseModel):
    id: str
    tenant: str
    name: str
    state: str
    priority: str
    region: str
    created_at: datetime
    dead_letter_reason: str | None = Field(
        default=None,
        description="Set when dead-lettered: retries_exhausted, not_retryable or retries_disabled.",
    )


class WorksetList(BaseModel):
    items: list[WorksetSummary]
    next_cursor: str | None


class HistoryItem(BaseModel):
    version: int
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    event_id: str | None
    at: datetime


class DiagnosisOut(BaseModel):
    attempt: int
    code: str
    retry_class: str
    retryable: bool
    step: str | None
    candidates: list[dict[str, Any]]
    report: str
    created_at: datetime


class ActualOut(BaseModel):
    """What a finished workset really used, to set beside `validation.estimate` (docs/cost-model.md)."""

    attempts: int
    step_runs: int
    cpu_seconds: float | None
    vcpu_hours: float | None
    elapsed_seconds: float | None = Field(description="Summed step run time.")
    max_rss_mb: float | None
    wall_seconds: float | None = Field(description="Time holding a slot, admission to release, all attempts.")
    cost_usd: float | None = Field(
        description="Measured CPU time x list spot price x the cluster's price factor."
    )
    recorded_at: datetime


class DeadLetterOut(BaseModel):
    workset_id: str
    tenant_id: str
    reason: str = Field(
        description="Why stamen stopped: retries_exhausted, not_retryable or retries_disabled."
    )
    detail: str = Field(description="The same in one sentence.")
    attempts: int
    last_code: str | None = Field(description="The error code of the last diagnosis.")
    parked_at: datetime


class WorksetDetail(BaseModel):
    id: str
    tenant: str
    name: str
    state: str
    priority: str
    region: str
    version: int
    idempotency_key: str | None
    cluster: str | None = Field(description="The cluster the scheduler placed it on (None before admission).")
    placement_reason: str | None = Field(description="Why that cluster, in words (affinity, load, price).")
    placement_scores: dict[str, float] | None = Field(description="Each candidate cluster's admission score.")
    attempt: int
    retry_count: int
    max_retries: int
    cancel_requested_by: str | None
    spec: dict[str, Any]
    validation: dict[str, Any] | None
    actual: ActualOut | None = Field(description="Set once the workset completed.")
    history: list[HistoryItem]
    diagnoses: list[DiagnosisOut]
    dead_letter: DeadLetterOut | None = Field(
        default=None, description="Set while dead-lettered: why stamen will not run it again, and since when."
    )


class CancelRequest(Body):
    reason: str = Field(default="", max_length=500)


class CancelResponse(BaseModel):
    workset_id: str
    state: str
    pending: bool = Field(description="True while the scheduler still has to stop a running job.")


class WorksetStateResponse(BaseModel):
    workset_id: str
    state: str


class RequeueRequest(Body):
    changes: RequeueChanges = Field(
        default_factory=RequeueChanges,
        description="Send only the fields to change; each replaces the workset's value (and its spec's).",
    )


class ValidateQuery(Body):
    dry_run: bool = Field(default=False, description="Check the document only; touch no storage.")
    strict: bool = False


class GenerateYamlResponse(BaseModel):
    ok: bool
    files: dict[str, str]
    findings: list[Finding]


class JsonDocument(RootModel[dict[str, Any]]):
    pass


class S3EventsResponse(BaseModel):
    folders: list[dict[str, Any]]
    ignored: list[str]


# --- diagnosis of a failure log -------------------------------------------------------------------
class DiagnoseRequest(Body):
    text: str = Field(description="The failure log (its end is what counts: the last 2,000 lines are read).")
    exit_code: int | None = Field(
        default=None, ge=-255, le=255, description="The job's exit code; negative: killed by that signal."
    )
    signal: int | None = Field(default=None, ge=1, le=64, description="The signal that ended the job.")
    job_state: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z_+ 0-9-]*$",
        description="The state Slurm reported (e.g. OUT_OF_MEMORY), or stamen's MAX_DURATION / LOST.",
    )
    top: int = Field(default=5, ge=1, le=20, description="How many candidates to return, best first.")


class EvidenceOut(BaseModel):
    line: int = Field(description="1-based line number in the text sent.")
    text: str
    pattern: str | None = Field(description="The catalog pattern that matched; null for a log tail.")


class DiagnosisCandidateOut(BaseModel):
    code: str = Field(description="Error code; docs/errors.md explains each.")
    name: str
    category: str
    severity: str
    retry_class: str
    retryable: bool = Field(description="Whether stamen retries failures of this class automatically.")
    score: float
    facts: list[str] = Field(description="Non-log evidence that matched, e.g. 'exit code 137'.")
    evidence: list[EvidenceOut]
    summary: str
    remediation: list[str]
    docs: str


class DiagnoseResponse(BaseModel):
    unknown: bool = Field(description="True when no catalog entry matched (the one candidate is WS-UNK-000).")
    candidates: list[DiagnosisCandidateOut]


# --- clusters, regions, dead letters --------------------------------------------------------------
# stamen.domain.clusters.ClusterSpec: the clusters file and `stamen cluster add` take the same.
class ClusterCreate(ClusterSpec):
    pass


class ClusterOut(BaseModel):
    name: str
    region: str
    executor: str
    max_concurrent: int
    price_factor: float
    data_locations: list[str] = Field(description="Customers do not see other customers' buckets here.")
    status: str
    running: int = Field(
        description="Worksets running there: all of them for operators, a customer's own "
        "for a customer (other tenants' load is not shown)."
    )


class ClusterRemoved(BaseModel):
    name: str
    removed: bool


class ClusterList(BaseModel):
    items: list[ClusterOut]


class DeadLetterQuery(Body):
    tenant: str | None = Field(default=None, pattern=TENANT)


class DeadLetterList(BaseModel):
    items: list[DeadLetterOut]


class RunOut(BaseModel):
    attempt: int
    cluster: str
    holder: str = Field(description="The scheduler instance that admitted it.")
    admitted_at: datetime
    released_at: datetime | None
    outcome: str | None


class DeadLetterDetail(BaseModel):
    dead_letter: DeadLetterOut
    workset: WorksetDetail
    runs: list[RunOut] = Field(description="Every attempt, oldest first: where it ran and how it ended.")


class ParkedEventOut(BaseModel):
    id: int = Field(description="The outbox row.")
    event_id: str
    subject: str
    size_bytes: int
    attempts: int
    last_error: str = Field(description="The broker's last answer, e.g. MaxPayloadError.")
    created_at: datetime
    parked_at: datetime


class ParkedEventList(BaseModel):
    items: list[ParkedEventOut]


class OutboxRetryRequest(Body):
    ids: list[int] = Field(default_factory=list, max_length=1000, description="Parked outbox rows to retry.")
    all: bool = Field(default=False, description="Retry every parked event.")


class OutboxRetryResponse(BaseModel):
    retried: list[int]
    not_parked: list[int] = Field(
        description="Ids that were not parked (published, retried already, unknown)."
    )


# --- API keys -------------------------------------------------------------------------------------
class ApiKeyCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    ttl_days: int | None = Field(default=None, ge=1, le=3650)
    expires_at: datetime | None = None
    customer_id: str | None = Field(default=None, pattern=TENANT, description="Operators: whose key.")


class ApiKeyOut(BaseModel):
    id: str
    customer_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(BaseModel):
    key: str = Field(description="The key itself: shown once, never again.")
    record: ApiKeyOut


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


class NatsCredentialCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    customer_id: str | None = Field(default=None, pattern=TENANT, description="Operators: whose credential.")


class NatsCredentialOut(BaseModel):
    id: str
    customer_id: str
    name: str
    public_key: str = Field(description="The NKEY public key nats-server knows the lab system by.")
    intake_subject: str = Field(description="The one subject this credential may publish to.")
    inbox_prefix: str = Field(description="Connect with this inbox prefix; replies come only there.")
    created_at: datetime
    revoked_at: datetime | None


class NatsCredentialCreated(BaseModel):
    seed: str = Field(description="The NKEY seed (the private key): shown once, never stored.")
    record: NatsCredentialOut


class NatsCredentialList(BaseModel):
    items: list[NatsCredentialOut]


class TenantQuery(Body):
    tenant: str | None = Field(default=None, pattern=TENANT, description="Operators: which tenant.")


# --- parked messages (the STAMEN_DLQ stream; dead letters, the dead-lettered worksets, are /dlq)
PARK_REASONS = r"^(max_deliver|malformed|unknown_type|undecodable)$"


class DlqMessageQuery(Body):
    consumer: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,100}$",
                                 description="Only this consumer's, e.g. validator-submitted.")  # fmt: skip
    reason: str | None = Field(default=None, pattern=PARK_REASONS, description="Why they were parked.")
    limit: int = Field(default=100, ge=1, le=1000)
    after: int = Field(
        default=0, ge=0, le=2**63 - 2, description="Only messages after this sequence (paging: next_after)."
    )


class DlqMessageOut(BaseModel):
    seq: int = Field(description="The message's sequence in STAMEN_DLQ.")
    reason: str = Field(
        description="max_deliver (its handler kept failing), malformed, unknown_type, undecodable."
    )
    consumer: str
    parked_at: datetime
    event_id: str | None
    event_type: str | None
    workset_id: str | None
    tenant_id: str | None
    original_subject: str
    deliveries: int | None
    error: str
    replayable: bool
    not_replayable_because: str | None
    handled_since: bool = Field(description="The consumer has handled the event since (its inbox has it).")
    replays: int = Field(description="How often the event was replayed to this consumer already.")


class DlqMessageList(BaseModel):
    items: list[DlqMessageOut]
    next_after: int | None = Field(description="Pass as ?after= for the next page; null at the end.")


class DlqMessageDetail(DlqMessageOut):
    workset_state: str | None
    action: dict[str, Any] | None = Field(description="What was done with it, if anything (being removed).")
    headers: dict[str, str]
    body: str = Field(description="The message body as text (the first 16 KiB).")


class DlqMessageReplayed(BaseModel):
    seq: int
    consumer: str
    event_id: str | None
    subject: str = Field(description="Where it was sent back: its original events subject.")
    replayed: bool = Field(description="False: it had been replayed or resolved already; nothing was sent.")
    detail: str


# --- buckets a tenant may use (stamen.tenancy) ---------------------------------------------------------


class BucketOut(BaseModel):
    bucket: str
    access: GrantAccess
    source: BucketSource = Field(
        description="own: the customer's bucket from onboarding; grant: granted by an operator."
    )
    granted_by: str | None
    note: str


class BucketList(BaseModel):
    tenant: str
    items: list[BucketOut]


class BucketGrantCreate(Body):
    tenant: str = Field(pattern=TENANT)
    bucket: str = Field(pattern=BUCKET_NAME_REGEX, description="An S3 bucket name (no s3://).")
    access: GrantAccess
    note: str = Field(default="", max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")


class BucketGrantOut(BaseModel):
    tenant: str
    bucket: str
    access: GrantAccess
    granted_by: str
    granted_at: datetime
    note: str


class BucketGrantCreated(BucketGrantOut):
    created: bool = Field(description="False when an existing grant was changed.")
