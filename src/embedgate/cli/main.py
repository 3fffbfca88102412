"""The ``embedgate`` command: one module per command group beside this one."""

from __future__ import annotations

import click

from embedgate import __version__
from embedgate.cli.audit import audit
from embedgate.cli.ingest import ingest
from embedgate.cli.keys import keys
from embedgate.cli.serve import serve
from embedgate.cli.tenants import tenants
from embedgate.cli.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="embedgate")
def main() -> None:
    """embedgate: many tenants, one embedding model, an OpenAI-compatible API."""


main.add_command(serve)
main.add_command(tenants)
main.add_command(keys)
main.add_command(usage)
main.add_command(audit)
main.add_command(ingest)
