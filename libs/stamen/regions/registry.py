"""The region registry: per region its S3 endpoint and control bucket, NATS servers, PostgreSQL endpoint
and clusters. Read from a YAML file (STAMEN_REGIONS_FILE), else one region made from the connection
settings. Credentials never live here: probes take them from NATS_URL and DATABASE_URL.

```yaml
regions:
  - name: us-west-2
    primary: true
    s3: {endpoint_url: https://s3.us-west-2.amazonaws.com, control_bucket: stamen-control-usw2}
    nats: {servers: ["nats://nats-usw2:4222"]}
    postgres: {host: db-usw2.internal, port: 5432}
    clusters: [usw2-slurm]
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stamen.domain.regions import REGION_NAME_REGEX
from stamen.settings import Settings
from stamen.store.regions import RegionRecord


class RegionsFileError(ValueError):
    code = "REGIONS_FILE_INVALID"


class S3Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    endpoint_url: str | None = Field(default=None, description="Unset: AWS's own endpoint for the region.")
    control_bucket: str = Field(min_length=3, max_length=63)


class NatsEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    servers: list[str] = Field(min_length=1)


class PostgresEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = Field(min_length=1)
    port: int = Field(default=5432, ge=1, le=65535)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class RegionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=REGION_NAME_REGEX)
    primary: bool = False
    s3: S3Endpoint | None = None
    nats: NatsEndpoint | None = None
    postgres: PostgresEndpoint | None = None
    clusters: list[str] = []

    @model_validator(mode="after")
    def _something_to_probe(self) -> RegionSpec:
        if not (self.s3 or self.nats or self.postgres or self.clusters):
            raise ValueError("a region needs at least one of s3, nats, postgres or clusters to probe")
        return self

    def record(self) -> RegionRecord:
        return RegionRecord(
            name=self.name,
            is_primary=self.primary,
            s3_endpoint=self.s3.endpoint_url if self.s3 else None,
            control_bucket=self.s3.control_bucket if self.s3 else None,
            nats_servers=tuple(strip_credentials(s) for s in self.nats.servers) if self.nats else (),
            postgres_endpoint=self.postgres.address if self.postgres else None,
            clusters=tuple(self.clusters),
        )


class RegionsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    regions: list[RegionSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> RegionsFile:
        names = [r.name for r in self.regions]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"region names must be unique; repeated: {', '.join(repeated)}")
        primaries = [r.name for r in self.regions if r.primary]
        if len(primaries) > 1:
            raise ValueError(f"only one region may be primary; marked: {', '.join(primaries)}")
        return self


@dataclass(frozen=True)
class RegionRegistry:
    regions: tuple[RegionSpec, ...]

    @property
    def primary(self) -> RegionSpec:
        """The region marked primary, else the first one."""
        return next((r for r in self.regions if r.primary), self.regions[0])

    def get(self, name: str) -> RegionSpec | None:
        return next((r for r in self.regions if r.name == name), None)

    def records(self) -> list[RegionRecord]:
        primary = self.primary.name
        return [r.model_copy(update={"primary": r.name == primary}).record() for r in self.regions]


def read_regions_file(path: Path) -> RegionRegistry:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegionsFileError(f"{path}: cannot read the regions file: {exc}") from None
    try:
        parsed = RegionsFile.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise RegionsFileError(f"{path}: {problems} (expected a mapping with a `regions:` list)") from None
    return RegionRegistry(tuple(parsed.regions))


def default_registry(settings: Settings) -> RegionRegistry:
    """One region, this deployment's (STAMEN_REGION), probed through the connections the services use."""
    nats = NatsEndpoint(servers=nats_servers(settings.nats_url)) if settings.nats_url else None
    postgres = None
    if settings.database_url:
        hosts = PostgresUrl.parse(settings.database_url).hosts
        postgres = PostgresEndpoint(host=hosts[0][0], port=hosts[0][1]) if len(hosts) == 1 else None
    return RegionRegistry((RegionSpec(name=settings.region, primary=True, nats=nats, postgres=postgres),))


def load_registry(settings: Settings, regions_file: Path | None) -> RegionRegistry:
    return read_regions_file(regions_file) if regions_file else default_registry(settings)


# -- connection strings ----------------------------------------------------------------------------


def nats_servers(url: str | None) -> list[str]:
    """NATS_URL may list several servers, comma-separated (every node of a cluster)."""
    return [part.strip() for part in (url or "").split(",") if part.strip()]


def strip_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if sep else url


def nats_url_for(server: str, credentials_from: str | None) -> str:
    """`server` with the user and password of the services' NATS_URL, unless it carries its own."""
    scheme, sep, rest = server.partition("://")
    if not sep or "@" in rest or not credentials_from:
        return server
    first = nats_servers(credentials_from)[0]
    _, _, other = first.partition("://")
    userinfo = other.rsplit("@", 1)[0] if "@" in other else ""
    return f"{scheme}://{userinfo}@{rest}" if userinfo else server


@dataclass(frozen=True)
class PostgresUrl:
    """A PostgreSQL URL, possibly listing several hosts (`postgresql://u@h1:5432,h2:5432/db?...`)."""

    scheme: str
    userinfo: str
    hosts: tuple[tuple[str, int], ...]
    database: str
    query: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, url: str) -> PostgresUrl:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("postgres", "postgresql"):
            raise ValueError(f"not a PostgreSQL URL: {strip_credentials(url)!r}")
        rest, _, query = rest.partition("?")
        authority, _, database = rest.partition("/")
        userinfo, _, hostlist = authority.rpartition("@")
        hosts = []
        for item in hostlist.split(","):
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
            hosts.append((host or "localhost", int(port) if port else 5432))
        return cls(scheme, userinfo, tuple(hosts), database, tuple(parse_qsl(query)))

    def with_hosts(self, hosts: list[tuple[str, int]], **query: str) -> str:
        params = {**dict(self.query), **query}
        params = {k: v for k, v in params.items() if v}
        auth = f"{self.userinfo}@" if self.userinfo else ""
        hostlist = ",".join(f"{h}:{p}" for h, p in hosts)
        tail = f"?{urlencode(params)}" if params else ""
        return f"{self.scheme}://{auth}{hostlist}/{self.database}{tail}"

    def for_host(self, host: str, port: int) -> str:
        """This URL aimed at one server, whatever its role (for probes and the failover coordinator)."""
        return self.with_hosts([(host, port)], target_session_attrs="")


def multi_host_dsn(database_url: str, endpoints: list[PostgresEndpoint]) -> str:
    """The DSN services use across regions: every PostgreSQL endpoint, and only the writable one accepted."""
    url = PostgresUrl.parse(database_url)
    return url.with_hosts([(e.host, e.port) for e in endpoints], target_session_attrs="read-write")
