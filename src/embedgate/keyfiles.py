"""Secrets on disk: refuse loose permissions, create new ones 0600, never print them."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import string
from pathlib import Path

from pydantic import SecretStr

from embedgate.config.settings import Settings

log = logging.getLogger("embedgate.keys")

BASE62 = string.ascii_letters + string.digits


class SecretFileError(ValueError):
    """A secret file is missing, empty or readable by others."""


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def read_secret_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecretFileError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(
            f"secret file {path} is accessible by group or others; run: chmod 600 {path}"
        )
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise SecretFileError(f"secret file {path} is empty")
    return value


def write_new_secret(path: Path, value: str) -> None:
    """Create ``path`` with mode 0600 atomically; never overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")


def ensure_data_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _load(
    env: SecretStr | None, file: Path | None, name: str, path: Path, fresh: str | None
) -> str:
    """From the environment, else its file, else ``path`` (created 0600 if absent and
    ``fresh`` is given)."""
    if env is not None:
        value = env.get_secret_value().strip()
        if not value:
            raise SecretFileError(f"EMBEDGATE_{name.upper()} is set but empty")
        return value
    if file is not None:
        return read_secret_file(file)
    if path.exists() or fresh is None:
        return read_secret_file(path)
    write_new_secret(path, fresh)
    log.warning("generated a new %s in %s (mode 0600)", name.replace("_", " "), path.resolve())
    return read_secret_file(path)


def load_admin_key(settings: Settings) -> str:
    """The admin key: env, then key file, then ``<data_dir>/admin.key`` (created if absent)."""
    return _load(settings.admin_key, settings.admin_key_file, "admin_key",
                 settings.data_dir / "admin.key", "admin_" + random_base62(43))  # fmt: skip


def load_server_secret(settings: Settings, *, create: bool = True) -> bytes:
    """The HMAC secret for API keys. Replicas sharing a database must share it, so with
    ``database_url`` set it is never generated per machine; nor by the CLI (``create=False``),
    which must hash keys exactly as the server does."""
    configured = settings.secret_key is not None or settings.secret_key_file is not None
    if settings.database_url is not None and not configured:
        raise SecretFileError(
            "with EMBEDGATE_DATABASE_URL set, set EMBEDGATE_SECRET_KEY or "
            "EMBEDGATE_SECRET_KEY_FILE too: every replica must hash keys alike"
        )
    fresh = random_base62(64) if create else None
    value = _load(settings.secret_key, settings.secret_key_file, "secret_key",
                  settings.data_dir / "secret.key", fresh)  # fmt: skip
    return value.encode("utf-8")
