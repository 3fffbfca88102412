"""What every `embedgate` command group shares: settings from flags, env and the config
file; the target flags (``--server``, ``--config``, ``--data-dir``); output files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import click
from pydantic import ValidationError

from embedgate.config.settings import Settings


def load_settings(flags: dict[str, Any]) -> Settings:
    """CLI flags on top of env and the config file; a clear message instead of a traceback."""
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc


def target_flags(command: Callable[..., Any], *, env: bool, server: bool = True) -> Any:
    def envvar(name: str) -> dict[str, Any]:
        return {"envvar": name, "show_envvar": True} if env else {}

    remote = click.option(
        "--server",
        **envvar("EMBEDGATE_SERVER"),
        help="A running server's URL; default: the data dir or database.",
    )
    for option in (
        *([remote] if server else []),
        click.option("--config", type=click.Path(path_type=Path), **envvar("EMBEDGATE_CONFIG"),
                     help="YAML config file (for its plans)."),
        click.option("--data-dir", type=click.Path(path_type=Path),
                     **envvar("EMBEDGATE_DATA_DIR"),
                     help="Data directory (default ./embedgate-data)."),
    ):  # fmt: skip
        command = option(command)
    return command


def target_options(group: Callable[..., None]) -> Any:
    return click.pass_context(target_flags(group, env=True))


def remember(ctx: click.Context, **options: Any) -> None:
    ctx.obj = options


def target_flags_on_command(command: Callable[..., Any]) -> Any:
    return target_flags(command, env=False)


def override(ctx: click.Context, **options: Any) -> None:
    """Target flags given after the subcommand win over the group's (and the environment)."""
    ctx.obj = {**ctx.obj, **{k: v for k, v in options.items() if v is not None}}


def target_flags_after(command: Callable[..., Any]) -> Any:
    """Let a subcommand take ``--server``, ``--config`` and ``--data-dir`` after its name,
    as well as before it (``embedgate tenants list --data-dir DIR``); below ``pass_context``.
    """

    @functools.wraps(command)
    def wrapper(ctx: click.Context, /, *args: Any, server: Any = None, config: Any = None,
                data_dir: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        override(ctx, server=server, config=config, data_dir=data_dir)
        return command(ctx, *args, **kwargs)

    return target_flags_on_command(wrapper)


def output_option(command: Callable[..., Any]) -> Any:
    return click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
                        help="Write to this file instead of standard output.")(command)  # fmt: skip


def open_output(output: Path | None) -> IO[str]:
    return click.open_file(str(output) if output else "-", "w", encoding="utf-8")


def unreachable(url: str, exc: Exception) -> str:
    """One line for a server that cannot be reached, naming its URL."""
    reason = str(exc) or type(exc).__name__
    if reason == "All connection attempts failed":  # httpx's async words for it
        reason = "connection refused or unreachable"
    return (f"cannot reach the embedgate server at {url} ({reason}): is it running? Point"
            " --server (EMBEDGATE_SERVER) at it")  # fmt: skip
