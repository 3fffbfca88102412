"""How an admin command finds its target, and the one line it says when it cannot: the
admin key for ``--server``; a data dir that holds a server's data (else which server answers,
and ``--data-dir``).

Local commands work beside a running server on the same data dir (SQLite lets them; a
restore suspends its tenant while it writes, docs/backup.md), so the server's lock on the
data dir (``embedgate.datalock``) refuses a second server, never these; the CLI reads it to
say where the server on the data dir listens when ``--server`` points elsewhere.
"""

from __future__ import annotations

import httpx

from embedgate import datalock
from embedgate.cli.preflight import server_url
from embedgate.config.settings import Settings
from embedgate.keyfiles import SecretFileError, read_secret_file


class TargetError(Exception):
    """Why the CLI cannot reach its target, in one line with what to do."""


def admin_key(settings: Settings) -> str:
    if settings.admin_key is not None:
        return str(settings.admin_key.get_secret_value())
    try:
        return read_secret_file(settings.admin_key_file or settings.data_dir / "admin.key")
    except SecretFileError as exc:
        raise TargetError(
            f"{exc}; with --server, set EMBEDGATE_ADMIN_KEY (or EMBEDGATE_ADMIN_KEY_FILE) to the"
            " server's admin key, or pass --data-dir of the server's data dir (its admin.key)"
        ) from None


async def local_data_check(settings: Settings) -> None:
    """Refuse, in one line and before anything is created, a data dir with no server data."""
    if settings.database_url is not None:
        return
    data_dir = settings.data_dir
    configured = settings.secret_key is not None or settings.secret_key_file is not None
    if configured or (data_dir / "secret.key").exists():
        return
    running = await _server_answering(server_url(settings))
    where = (f"; a server answers at {running}: pass its data dir with --data-dir, or use"
             f" --server {running} with EMBEDGATE_ADMIN_KEY") if running else (
             "; start `embedgate serve` there once, or pass --data-dir DIR of the server's"
             " data dir (EMBEDGATE_DATA_DIR)")  # fmt: skip
    what = (f"{data_dir.resolve()} holds no server secret (secret.key)" if data_dir.is_dir()
            else f"no embedgate data dir at {data_dir.resolve()}")  # fmt: skip
    raise TargetError(f"{what}{where}")


async def _server_answering(url: str) -> str | None:
    try:
        async with httpx.AsyncClient(timeout=0.5) as client:
            answer = await client.get(f"{url}/health")
    except httpx.HTTPError:
        return None
    return url if answer.status_code in (200, 503) else None


def elsewhere_hint(settings: Settings, tried: str) -> str:
    """Where the server that holds the data dir listens, when that is not ``tried``."""
    held = datalock.holder(settings.data_dir)
    if held is None or not held.url or held.url.rstrip("/") == tried.rstrip("/"):
        return ""
    return f"; the `embedgate serve` on {settings.data_dir.resolve()} listens at {held.url}"
