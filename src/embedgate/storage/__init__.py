"""State stores: tenants, keys (digests only) and the audit log, behind one Protocol."""
