"""Configuration: ``settings`` (one ``Settings`` object: defaults < YAML config file <
``EMBEDGATE_*`` env < CLI flags), ``models`` (the model registry's entries) and ``plans``
(a tenant's ``Policy``)."""
