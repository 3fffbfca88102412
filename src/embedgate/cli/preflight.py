"""What `embedgate serve` checks before it loads a model, so that a mistake costs one line
and a second, not a traceback after the model has loaded: the model paths, the data dir's
lock and the port.
"""

from __future__ import annotations

import errno
import re
import socket
from pathlib import Path

from embedgate.config.models import BUNDLED_MINILM, LocalModel
from embedgate.config.settings import Settings

# What huggingface_hub accepts as a repo id: `name` or `namespace/name`.
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


class PreflightError(Exception):
    """One line for the user: what is wrong and what to do."""


def server_url(settings: Settings) -> str:
    """The URL a client on this machine reaches the server at."""
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(  # noqa: S104
        settings.host, f"[{settings.host}]" if ":" in settings.host else settings.host
    )
    return f"http://{host}:{settings.port}"


def check_models(settings: Settings) -> None:
    for name, spec in settings.models.items():
        if isinstance(spec, LocalModel):
            _check_path(name, spec.path)


def _check_path(name: str, path: str) -> None:
    if path == BUNDLED_MINILM or Path(path).expanduser().is_dir():
        return
    where = f"model {name!r}: path {path!r}"
    if Path(path).expanduser().exists():
        raise PreflightError(f"{where} is a file; it must be a model directory")
    repo_id = _REPO_ID.match(path) is not None
    if repo_id and _in_hf_cache(path) is not False:
        return  # a Hugging Face id in the cache (or none can tell): the loader decides
    nor = ", nor a Hugging Face id in the local cache" if repo_id else ""
    raise PreflightError(f"{where}: no such directory ({Path(path).expanduser().resolve()}){nor}")


def _in_hf_cache(repo_id: str) -> bool | None:
    """Whether the Hugging Face cache holds ``repo_id`` (None: cannot tell)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # HFValidationError: not a repo id after all
        return False
    return isinstance(found, str)


def bind(settings: Settings) -> socket.socket:
    """The listening socket, bound now: a busy port is found before the model loads, and
    nobody can take the port while it does."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PreflightError(
                f"port {settings.port} on {settings.host} is already in use (another server?):"
                " choose another with --port (EMBEDGATE_PORT)"
            ) from None
        where = f"{settings.host}:{settings.port}"
        raise PreflightError(f"cannot listen on {where}: {exc.strerror}") from None
    return sock
