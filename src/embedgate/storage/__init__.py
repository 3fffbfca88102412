"""State stores: tenants, keys (digests only), the audit log, usage and console sessions,
one Protocol per record kind (``base``), composed in ``StateStore``."""
