"""The ``embedgate`` command line (``embedgate.cli.main:main``)."""
