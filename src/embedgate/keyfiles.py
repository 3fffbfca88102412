"""Secrets on disk: refuse loose permissions, create new ones 0600, never print them."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import string
from pathlib import Path

from embedgate.config import Settings

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


def load_admin_key(settings: Settings) -> str:
    """The admin key: env, then key file, then ``<data_dir>/admin.key`` (created if absent)."""
    if settings.admin_key is not None:
        value = settings.admin_key.get_secret_value().strip()
        if not value:
            raise SecretFileError("EMBEDGATE_ADMIN_KEY is set but empty")
        return value
    if settings.admin_key_file is not None:
        return read_secret_file(settings.admin_key_file)
    path = settings.data_dir / "admin.key"
    if path.exists():
        return read_secret_file(path)
    write_new_secret(path, "admin_" + random_base62(43))
    log.warning("generated a new admin key in %s (mode 0600)", path.resolve())
    return read_secret_file(path)
