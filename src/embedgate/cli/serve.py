"""`embedgate serve`. Every setting is a flag whose help names its env var."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic.fields import FieldInfo

from embedgate import allocator, datalock
from embedgate.cli.common import load_settings
from embedgate.cli.preflight import PreflightError, bind, check_models, server_url
from embedgate.config.settings import NOT_ON_COMMAND_LINE, Settings
from embedgate.keyfiles import SecretFileError, ensure_data_dir, load_admin_key, load_server_secret

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _click_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _click_type(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in args])
    if annotation is Path:
        return click.Path(path_type=Path)
    return {int: click.INT, float: click.FLOAT, bool: click.BOOL}.get(annotation, click.STRING)


def _option(name: str, field: FieldInfo) -> Callable[[Any], Any]:
    flag = "--" + name.replace("_", "-")
    default = field.get_default(call_default_factory=True)
    decls = [f"{flag}/--no-{flag[2:]}"] if field.annotation is bool else [flag]
    return click.option(
        *decls,
        name,
        type=None if field.annotation is bool else _click_type(field.annotation),
        default=None,
        envvar=f"EMBEDGATE_{name.upper()}",
        show_envvar=True,
        show_default=str(default) if default is not None else False,
        help=field.description,
    )


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for name, field in reversed(Settings.model_fields.items()):
        if name not in NOT_ON_COMMAND_LINE:
            command = _option(name, field)(command)
    return command


@click.command()
@settings_options
def serve(**flags: Any) -> None:
    """Run the server (default http://127.0.0.1:8000, embedded model, ./embedgate-data).

    Secrets are never flags: set EMBEDGATE_ADMIN_KEY or EMBEDGATE_ADMIN_KEY_FILE.
    """
    settings = load_settings(flags)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    os.umask(0o077)  # everything the server writes (database, indexes, keys) is private
    try:  # fail before loading models, with one clear line
        check_models(settings)
        ensure_data_dir(settings.data_dir)
        load_admin_key(settings)
        load_server_secret(settings)
    except (PreflightError, SecretFileError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:  # re-executes this process once, before anything large is allocated
        allocator.ensure(settings.allocator)
    except allocator.AllocatorError as exc:
        raise click.ClickException(str(exc)) from exc
    try:  # after the re-execution: a lock and a socket would not survive it
        lock = datalock.acquire(settings.data_dir, server_url(settings))
    except (datalock.DataDirBusy, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    with lock:  # held until the process ends; the kernel drops it on a crash too
        try:
            sock = bind(settings)
        except PreflightError as exc:
            raise click.ClickException(str(exc)) from exc
        with sock:
            _run(settings, sock)


def _run(settings: Settings, sock: socket.socket) -> None:
    import uvicorn

    from embedgate.api.connections import Gate
    from embedgate.api.slow_clients import GuardedProtocol
    from embedgate.app import create_app
    from embedgate.cli import gc_policy

    config = uvicorn.Config(
        create_app(settings, on_started=gc_policy.settle),
        host=settings.host,
        port=settings.port,
        http=GuardedProtocol.configured(Gate.from_settings(settings)),
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default (or from its own
        # FORWARDED_ALLOW_IPS variable); embedgate believes only the proxies it is told of.
        proxy_headers=bool(settings.forwarded_allow_ips.strip()),
        forwarded_allow_ips=settings.forwarded_allow_ips.strip() or "",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run does
        server.run(sockets=[sock])  # the socket bound before the model loaded
    if not server.started:  # the lifespan failed (model, stores): uvicorn logged why
        sys.exit(3)
