"""How an admin command finds its target, and the one line it says when it cannot: the
admin key for ``--server``; a data dir that holds a server's data (else which server answers,
and ``--data-dir``); a running server's lock on the files a command would change.
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


async def local_data_check(settings: Settings, *, needs_exclusive: bool = False) -> None:
    """Refuse, in one line and before anything is created, a data dir with no server data."""
    if settings.database_url is not None:
        return
    data_dir = settings.data_dir
    held = datalock.holder(data_dir)
    if held is not None and needs_exclusive:
        url = held.url or "URL"  # an unreadable lock file still means a server holds it
        raise TargetError(
            f"`embedgate serve` (pid {held.pid}, {url}) is running on {data_dir.resolve()},"
            f" and this command must not change its files under it: use --server {url}"
            " (with the admin key), or stop the server first"
        )
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
