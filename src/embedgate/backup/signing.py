"""The signature of a tenant backup file: HMAC-SHA256 of every byte before the trailer,
under a subkey of the server secret, and the reason a file is not trusted when it fails.

A plain checksum anyone can recompute would let an edited file import; only the server's
secret can make this signature. See docs/backup.md (signed files and untrusted imports).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from embedgate.backup.format import SIGNING_LABEL, BackupError, EndLine, Header


class UnsignedBackup(BackupError):
    """The file is whole and well-formed, but not signed under this server's secret: it may
    only be imported as untrusted (see ``Backup.restore``)."""


def signing_key(digest: Callable[[str], str]) -> bytes:
    """The backup signing key, HMAC-SHA256(server secret, ``SIGNING_LABEL``), given the
    server's keyed digest: a subkey of its own, so the secret is never used directly as a
    MAC key here, and no stored API key digest can equal it (keys read ``tenant_...``)."""
    return bytes.fromhex(digest(SIGNING_LABEL))


def signer(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def check_signature(number: int, end: EndLine, header: Header, computed: str,
                     key_check: str) -> None:  # fmt: skip
    """Nothing, for a file this server signed; else why it is not trusted."""
    if header.version == 1:
        if end.sha256 is None or not hmac.compare_digest(end.sha256, computed):
            raise BackupError(f"line {number}: the checksum does not match: the file was "
                              "changed")  # fmt: skip
        raise UnsignedBackup("the file is format version 1, from an older embedgate: it is not "
                             "signed")  # fmt: skip
    if end.signature is None:
        raise BackupError(f"line {number}: the trailer has no signature")
    if hmac.compare_digest(end.signature, computed):
        return
    if not hmac.compare_digest(header.key_check, key_check):
        raise UnsignedBackup(f"the file is signed under another server secret (its key check "
                             f"{header.key_check}, this server's {key_check})")  # fmt: skip
    raise UnsignedBackup(f"line {number}: the signature does not match: the file was changed "
                         "after it was exported")  # fmt: skip
