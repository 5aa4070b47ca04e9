"""Which server to talk to and with what credentials: options, then the environment, then the session file
`stamen login` writes (`$STAMEN_CONFIG_DIR/session.json`, mode 0600 since it holds bearer tokens)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stamen.remote.errors import RemoteError

SESSION_FILE = "session.json"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("STAMEN_CONFIG_DIR"):
        return Path(env["STAMEN_CONFIG_DIR"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "stamen"


def session_path(env: Mapping[str, str] | None = None) -> Path:
    return config_dir(env) / SESSION_FILE


def normalize_url(url: str) -> str:
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class Session:
    url: str
    email: str
    id_token: str
    access_token: str
    token_type: str
    expires_at: float  # epoch seconds: when the id and access tokens stop being accepted

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


def load_session(path: Path) -> Session | None:
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RemoteError(
            "SESSION_UNREADABLE", f"{path}: {exc.strerror or exc}", {"path": str(path)}
        ) from None
    try:
        doc: Any = json.loads(raw)
        return Session(
            url=str(doc["url"]),
            email=str(doc["email"]),
            id_token=str(doc["id_token"]),
            access_token=str(doc["access_token"]),
            token_type=str(doc.get("token_type") or "Bearer"),
            expires_at=float(doc["expires_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(
            "SESSION_UNREADABLE",
            f"{path} is not a session file stamen wrote ({type(exc).__name__}: {exc}); "
            "delete it or run `stamen login` again",
            {"path": str(path)},
        ) from None


def save_session(path: Path, session: Session) -> None:
    """Written to a new 0600 file, then renamed over the old one: never readable by others, never half written."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(session), f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def delete_session(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class Connection:
    url: str
    credential: str | None
    source: str  # where the credential came from, for messages; never the secret itself


def resolve(
    url: str | None,
    token: str | None,
    *,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
) -> Connection:
    """URL: --url, STAMEN_URL, the session. Credential: --token, STAMEN_TOKEN, STAMEN_API_KEY, the session.

    The session's tokens are only sent to the server they came from, so `--url` aimed at another server
    never receives them."""
    env = os.environ if env is None else env
    path = session_path(env)
    session = load_session(path)
    chosen = url or env.get("STAMEN_URL") or (session.url if session else None)
    if not chosen:
        raise RemoteError(
            "URL_MISSING",
            "no server URL: pass --url, set STAMEN_URL (e.g. http://127.0.0.1:8080), "
            "or sign in with `stamen login --url URL --email EMAIL`",
        )
    base = normalize_url(chosen)
    if token:
        return Connection(base, token, "--token")
    for name in ("STAMEN_TOKEN", "STAMEN_API_KEY"):
        if env.get(name):
            return Connection(base, env[name], name)
    if session is None:
        return Connection(base, None, "none")
    if normalize_url(session.url) != base:
        return Connection(base, None, f"none (the session in {path} is for {session.url})")
    if session.expired(time.time() if now is None else now):
        raise RemoteError(
            "SESSION_EXPIRED",
            f"the session in {path} ({session.email} at {session.url}) expired at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(session.expires_at))}; "
            "run `stamen login` again",
            {"path": str(path), "expires_at": session.expires_at},
        )
    return Connection(base, session.id_token, f"the session file {path}")
