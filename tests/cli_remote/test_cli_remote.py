"""`stamen api`, `stamen remote`, `stamen login/logout` as subprocesses against a running portal (real
PostgreSQL, NATS, moto Cognito/S3), with two tenants' credentials from tests/api's `world`."""

from __future__ import annotations

import csv
import io
import json
import socket
import stat
from pathlib import Path

from services.portal.api.routes import ROUTES
from stamen.customers.usage import CSV_COLUMNS
from tests.api.conftest import World
from tests.auth.cognito_lab import PASSWORD
from tests.cli_remote.runner import cli_env, stamen

DEMO_SPEC = (Path(__file__).resolve().parents[2] / "libs/stamen/demo/demo_workset.yaml").read_text()


def url_of(world: World) -> str:
    return str(world.client.make_url("")).rstrip("/")


def as_tenant_a(world: World, tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "config", STAMEN_URL=url_of(world), STAMEN_API_KEY=world.a.api_key)


async def test_api_ls_lists_exactly_the_route_table(world: World, tmp_path: Path) -> None:
    env = as_tenant_a(world, tmp_path)
    listed = await stamen(env, "api", "ls", "--json")
    assert listed.rc == 0, listed
    ops = {op["operation_id"]: op for op in listed.json()}
    # Parity with the server's route table: a route added there is listed (and callable) with no CLI change.
    assert sorted(ops) == sorted(r.name for r in ROUTES)
    for route in ROUTES:
        op = ops[route.name]
        assert (op["method"], op["path"], op["summary"]) == (route.method, route.full_path, route.summary)
        assert op["path_params"] == route.path_params
    text = await stamen(env, "api", "ls")
    assert text.rc == 0 and len(text.out.splitlines()) == len(ROUTES)
    assert any(
        line.split()[:3] == ["worksets_get", "GET", "/api/v1/worksets/{workset_id}"]
        for line in text.out.splitlines()
    )


async def test_a_tenant_key_sees_its_own_workset_and_not_the_other_tenants(
    world: World, tmp_path: Path
) -> None:
    env = as_tenant_a(world, tmp_path)
    mine, theirs = world.a.target.workset_id, world.b.target.workset_id

    listed = await stamen(env, "remote", "worksets", "ls", "--json")
    assert listed.rc == 0, listed
    page = listed.json()
    assert mine in {w["id"] for w in page["items"]} and {w["tenant"] for w in page["items"]} == {world.a.id}

    shown = await stamen(env, "remote", "worksets", "show", mine, "--json")
    assert shown.rc == 0, shown
    assert shown.json()["id"] == mine and shown.json()["tenant"] == world.a.id
    assert shown.json()["history"][0]["to_state"] == "submitted"
    text = await stamen(env, "remote", "worksets", "show", mine)
    assert text.rc == 0 and text.out.startswith(mine) and f"tenant={world.a.id}" in text.out

    generic = await stamen(env, "api", "call", "worksets_get", "--path", f"workset_id={mine}")
    assert generic.rc == 0 and json.loads(generic.out)["id"] == mine

    hidden = await stamen(env, "remote", "worksets", "show", theirs)
    assert hidden.rc == 1 and hidden.err.startswith("error [WORKSET_NOT_FOUND]: "), hidden
    assert hidden.out == ""
    hidden_json = await stamen(env, "api", "call", "worksets_get", "--path", f"workset_id={theirs}", "--json")
    assert hidden_json.rc == 1
    error = hidden_json.json()["error"]
    assert error["code"] == "WORKSET_NOT_FOUND" and error["status"] == 404 and theirs in error["message"]

    # --token beats STAMEN_API_KEY: the same environment with B's key on the command line sees B's worksets.
    as_b = await stamen(env, "remote", "worksets", "ls", "--token", world.b.api_key, "--json")
    assert as_b.rc == 0 and {w["tenant"] for w in as_b.json()["items"]} == {world.b.id}
    # STAMEN_TOKEN beats STAMEN_API_KEY too; a refused credential says where it came from, never what it was.
    bad = "stm_0123456789ab_" + "A" * 43
    refused = await stamen({**env, "STAMEN_TOKEN": bad}, "remote", "worksets", "ls")
    assert refused.rc == 1 and refused.err.startswith("error [API_KEY_INVALID]: "), refused
    assert "(the credential came from STAMEN_TOKEN)" in refused.err and bad not in refused.err


async def test_request_mistakes_are_named_before_anything_is_sent(world: World, tmp_path: Path) -> None:
    env = as_tenant_a(world, tmp_path)
    missing = await stamen(env, "api", "call", "worksets_get")
    assert missing.rc == 1 and missing.err.startswith("error [PATH_PARAMETER_MISSING]: "), missing
    assert "workset_id" in missing.err and "--path workset_id=VALUE" in missing.err
    as_json = await stamen(env, "api", "call", "worksets_cancel", "--json")
    assert as_json.rc == 1 and as_json.json()["error"]["details"]["missing"] == ["workset_id"]

    unknown_param = await stamen(env, "api", "call", "worksets_get", "--path", "id=x")
    assert "PATH_PARAMETER_UNKNOWN" in unknown_param.err and "it takes: workset_id" in unknown_param.err
    unknown_query = await stamen(env, "api", "call", "worksets_list", "--query", "colour=red")
    assert "QUERY_PARAMETER_UNKNOWN" in unknown_query.err and "cursor" in unknown_query.err
    malformed = await stamen(env, "api", "call", "worksets_list", "--query", "state")
    assert malformed.err.startswith("error [PARAMETER_MALFORMED]: --query 'state' is not NAME=VALUE")
    typo = await stamen(env, "api", "call", "worksets_gett", "--json")
    assert typo.rc == 1 and typo.json()["error"]["code"] == "OPERATION_UNKNOWN"
    assert "worksets_get" in typo.json()["error"]["details"]["suggestions"]
    no_body = await stamen(env, "api", "call", "api_keys_create")
    assert no_body.rc == 1 and no_body.err.startswith("error [BODY_REQUIRED]: api_keys_create"), no_body
    bad_body = await stamen(env, "api", "call", "api_keys_create", "--body", "{name: x")
    assert bad_body.rc == 1 and bad_body.err.startswith("error [BODY_INVALID]: --body is not valid JSON")

    # The server's own refusals keep the server's code; its details are shown so they can be fixed.
    invalid = await stamen(env, "api", "call", "api_keys_create", "--body", '{"name": ""}')
    assert invalid.rc == 1 and invalid.err.startswith("error [REQUEST_INVALID]: "), invalid
    assert "\n  name: " in invalid.err


async def test_bodies_from_json_and_yaml_files(world: World, tmp_path: Path) -> None:
    env = as_tenant_a(world, tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(DEMO_SPEC)
    checked = await stamen(
        env, "api", "call", "worksets_validate", "--query", "dry_run=true", "--body", f"@{spec}"
    )
    assert checked.rc == 0, checked
    assert json.loads(checked.out)["ok"] is True
    key_request = tmp_path / "key.json"
    key_request.write_text(json.dumps({"name": "from-cli", "customer_id": world.a.id}))
    refused = await stamen(env, "api", "call", "api_keys_create", "--body", f"@{key_request}", "--json")
    assert refused.rc != 0 and "AUTH_FORBIDDEN" in refused.out  # an API key does not mint API keys
    as_user = cli_env(tmp_path / "config-user", STAMEN_URL=url_of(world), STAMEN_TOKEN=world.a.id_token)
    created = await stamen(as_user, "api", "call", "api_keys_create", "--body", f"@{key_request}", "--json")
    assert created.rc == 0, created
    assert created.json()["key"].startswith("stm_") and created.json()["record"]["name"] == "from-cli"
    listed = await stamen(env, "api", "call", "api_keys_list")
    assert "from-cli" in {k["name"] for k in json.loads(listed.out)["items"]}


async def test_submit_and_the_workset_commands(world: World, tmp_path: Path) -> None:
    env = as_tenant_a(world, tmp_path)
    spec = tmp_path / "workset.yaml"
    spec.write_text(DEMO_SPEC)
    first = await stamen(env, "remote", "submit", str(spec), "--idempotency-key", "cli-run-1", "--json")
    assert first.rc == 0, first
    doc = first.json()
    assert doc["created"] is True and doc["state"] == "submitted"
    again = await stamen(env, "remote", "submit", str(spec), "--idempotency-key", "cli-run-1")
    assert again.rc == 0 and again.out.startswith(
        f"already submitted (same idempotency key): {doc['workset_id']}"
    )
    shown = await stamen(env, "remote", "worksets", "show", doc["workset_id"], "--json")
    assert shown.json()["tenant"] == world.a.id and shown.json()["idempotency_key"] == "cli-run-1"

    cancelled = await stamen(
        env, "remote", "worksets", "cancel", doc["workset_id"], "--reason", "wrong run", "--json"
    )
    assert cancelled.rc == 0 and cancelled.json()["state"] == "cancelled", cancelled
    retried = await stamen(env, "remote", "worksets", "retry", doc["workset_id"])
    assert retried.rc == 1 and retried.err.startswith("error [WORKSET_NOT_REQUEUEABLE]: "), retried
    archived = await stamen(env, "remote", "worksets", "archive", doc["workset_id"])
    assert archived.rc == 0 and archived.out.strip() == f"{doc['workset_id']}: archived", archived
    history = (await stamen(env, "remote", "worksets", "show", doc["workset_id"], "--json")).json()["history"]
    assert [h["to_state"] for h in history][-2:] == ["cancelled", "archived"]
    assert any("wrong run" in h["reason"] for h in history if h["to_state"] == "cancelled")

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\npipeline: fastq-qc\nsamples: []\n")
    refused = await stamen(env, "remote", "submit", str(broken))
    assert refused.rc == 1 and refused.err.startswith("error [VALIDATION_FAILED]: "), refused
    assert "\n  error " in refused.err  # each finding on its own line, with its field and fix

    other = await stamen(env, "remote", "worksets", "archive", world.b.target.workset_id, "--json")
    assert other.rc == 1 and other.json()["error"]["code"] == "WORKSET_NOT_FOUND"


async def test_usage_as_csv_is_printed_as_csv(world: World, tmp_path: Path) -> None:
    env = as_tenant_a(world, tmp_path)
    usage = await stamen(
        env, "api", "call", "customers_usage", "--path", f"customer_id={world.a.id}", "--query", "format=csv"
    )
    assert usage.rc == 0, usage
    rows = list(csv.reader(io.StringIO(usage.out)))
    assert rows[0] == list(CSV_COLUMNS) and len(rows) == 2 and rows[1][0] == world.a.id
    as_json = await stamen(env, "api", "call", "customers_usage", "--path", f"customer_id={world.a.id}")
    assert json.loads(as_json.out)["customer_id"] == world.a.id
    theirs = await stamen(
        env, "api", "call", "customers_usage", "--path", f"customer_id={world.b.id}", "--query", "format=csv"
    )
    assert theirs.rc == 1 and theirs.err.startswith("error [CUSTOMER_NOT_FOUND]: ") and theirs.out == ""


async def test_login_keeps_a_private_session_and_logout_ends_it(world: World, tmp_path: Path) -> None:
    email, _ = await world.lab.user(world.a.id)
    config = tmp_path / "config"
    env = cli_env(config)  # no URL, no key: login must say where, then the session supplies both
    session_file = config / "session.json"

    wrong = await stamen(
        env, "login", "--url", url_of(world), "--email", email, "--password-stdin", stdin="not-the-password\n"
    )
    assert wrong.rc == 1 and wrong.err.startswith("error [AUTH_LOGIN_FAILED]: "), wrong
    assert "credential" not in wrong.err  # a wrong password, not a missing token
    assert not session_file.exists()

    nobody = await stamen(env, "remote", "worksets", "ls")
    assert nobody.rc == 1 and nobody.err.startswith("error [URL_MISSING]: ")

    signed_in = await stamen(
        env,
        "login",
        "--url",
        url_of(world) + "/",
        "--email",
        email,
        "--password-stdin",
        "--json",
        stdin=PASSWORD + "\n",
    )
    assert signed_in.rc == 0, signed_in
    assert signed_in.json()["tenant"] == world.a.id and signed_in.json()["session_file"] == str(session_file)
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    session = json.loads(session_file.read_text())
    assert session["url"] == url_of(world) and session["email"] == email and session["access_token"]
    assert PASSWORD not in session_file.read_text() and PASSWORD not in signed_in.out

    listed = await stamen(env, "remote", "worksets", "ls", "--json")
    assert listed.rc == 0, listed
    assert {w["tenant"] for w in listed.json()["items"]} == {world.a.id}

    out = await stamen(env, "logout")
    assert out.rc == 0 and out.out.startswith(f"signed out of {url_of(world)} ({email})"), out
    assert not session_file.exists()
    # Signed out on the server too: the access token is refused at once.
    refused = await world.client.get("/api/v1/worksets", headers=world.bearer(session["access_token"]))
    assert refused.status == 401 and (await refused.json())["code"] == "AUTH_TOKEN_REVOKED"

    anonymous = await stamen({**env, "STAMEN_URL": url_of(world)}, "remote", "worksets", "ls")
    assert anonymous.rc == 1 and anonymous.err.startswith("error [AUTH_TOKEN_MISSING]: "), anonymous
    assert "no credentials were sent" in anonymous.err
    again = await stamen(env, "logout")
    assert again.rc == 0 and again.out.startswith("not signed in")


async def test_an_unreachable_server_is_connection_failed_with_its_url(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = cli_env(tmp_path / "config", STAMEN_URL=url, STAMEN_API_KEY="stm_unused")
    failed = await stamen(env, "remote", "worksets", "ls", "--json")
    assert failed.rc == 1
    error = failed.json()["error"]
    assert (
        error["code"] == "CONNECTION_FAILED"
        and url in error["message"]
        and error["details"]["url"].startswith(url)
    )
