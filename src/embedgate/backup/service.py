"""Back up and restore one tenant, completely: the tenant, its keys (digests), collections,
documents with their vectors (nothing is embedded again) and usage records.

Both directions stream, page by page: memory does not grow with the tenant. An import
reads the file twice: first it checks every line and the trailer (a truncated or altered
file is refused before anything is written), then it writes. The tenant is restored
suspended and gets its exported status back only once everything is in, so its keys do
not work on half a tenant; if the import fails, what it wrote is removed. The file never
carries the tenant's internal uid: an import creates a new incarnation with a fresh one
(``--replace`` first deletes the existing tenant, documents of its uid included).

Only a file signed under this server's secret is trusted. Any other (another server's, an
edited one, an unsigned version 1 file) is refused, or with ``untrusted=True`` imported
*re-keyed*: whatever its author could have written is left out. No API keys (the operator
issues new ones), the tenant stays suspended, its policy overrides are dropped (the plan's
defaults, of ``--plan`` or the default plan, apply), and its usage records are added, never
replacing this server's. See docs/backup.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from embedgate.backup.format import (
    FORMAT,
    VERSION,
    BackupError,
    CollectionLine,
    DocumentLine,
    Header,
    KeyLine,
    Line,
    TenantRecord,
    UsageLine,
    UsageWindow,
    encode_vector,
)
from embedgate.backup.io import (
    COUNTED,
    PAGE,
    USAGE_PAGE,
    Counts,
    Writer,
    atomic_output,
    read_backup,
)
from embedgate.backup.restore import Restorer
from embedgate.backup.signing import UnsignedBackup, signing_key
from embedgate.docstore.base import Collection, DocumentStore
from embedgate.storage.base import StateStore
from embedgate.storage.records import ApiKey, Conflict, Tenant, UsageRecord
from embedgate.tenancy.audit import AuditLog
from embedgate.tenancy.keys import KeyService
from embedgate.tenancy.policy import Policy
from embedgate.tenancy.tenants import DEFAULT_PLAN, tenant_not_found
from embedgate.tenancy.usage import month_start

UsageScope = Literal["all", "month", "none"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEY_CHECK = "embedgate backup: key check"  # digested under the server secret, see key_check


class Progress(Protocol):
    def start(self, label: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


class NoProgress:
    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a checked file holds."""

    header: Header
    counts: Counts
    models: dict[str, str]  # collection -> model
    trusted: bool = True  # signed under this server's secret; else imported re-keyed


@dataclass(frozen=True, slots=True)
class Backup:
    state: StateStore
    documents: DocumentStore
    audit: AuditLog
    keys: KeyService
    plans: Mapping[str, Policy]
    models: frozenset[str]  # the model names (and aliases) this server serves
    clock: Callable[[], datetime]
    progress: Progress = field(default_factory=NoProgress)
    actor: str = "cli"

    def key_check(self) -> str:
        """Tells whether two servers share the secret keys are digested under (a restored
        key works only then), without revealing it."""
        return self.keys.digest(KEY_CHECK)[:16]

    def _read(self, path: Path, on_bytes: Callable[[int], None] | None = None
              ) -> Iterator[tuple[int, Header | Line]]:  # fmt: skip
        return read_backup(path, signing_key(self.keys.digest), self.key_check(), on_bytes)

    # export

    async def export(self, tenant_id: str, path: Path, *, usage: UsageScope = "all"
                     ) -> dict[str, Any]:  # fmt: skip
        tenant = await self.state.tenants.get(tenant_id)
        if tenant is None:
            raise tenant_not_found()
        now = self.clock()
        window = _window(usage, now)
        keys = await self.state.keys.export(tenant_id)
        collections = await self.documents.list_collections(tenant.uid)
        with atomic_output(path) as stream:
            self.progress.start(
                f"exporting {tenant_id}", sum(c.document_count for c in collections)
            )
            out = Writer(stream, signing_key(self.keys.digest))
            record = TenantRecord(**{f: getattr(tenant, f) for f in Tenant.__slots__
                                     if f != "uid"})  # fmt: skip
            out.write(Header(format=FORMAT, version=VERSION, exported_at=now, usage=window,
                             key_check=self.key_check(), tenant=record))  # fmt: skip
            for key, digest in keys:
                out.write(_key_line(key, digest))
            for collection in collections:
                await self._export_collection(out, tenant.uid, collection)
            if window is not None:
                await self._export_usage(out, tenant_id, window)
            out.end()
        counts = out.counts.as_dict()
        await self.audit.record("tenant.exported", actor=self.actor, tenant_id=tenant_id,
                                format_version=VERSION, counts=counts)  # fmt: skip
        return {"tenant": tenant_id, "file": str(path), "exported_at": now.isoformat(), **counts}

    async def _export_collection(self, out: Writer, tenant: str, c: Collection) -> None:
        out.write(CollectionLine(name=c.name, model=c.model, dimensions=c.dimensions,
                                 metadata=c.metadata, created_at=c.created_at))  # fmt: skip
        handle = self.documents.collection(tenant, c.name)
        after: str | None = None
        while page := await handle.export_documents(after=after, limit=PAGE):
            for item in page:
                doc, vector = item.document, item.vector
                assert vector is not None  # exported documents always carry theirs
                out.write(DocumentLine(collection=c.name, id=doc.id, text=doc.text,
                                       metadata=doc.metadata, text_hash=item.text_hash,
                                       vector=encode_vector(vector)))  # fmt: skip
            self.progress.advance(len(page))
            after = page[-1].document.id

    async def _export_usage(self, out: Writer, tenant: str, window: UsageWindow) -> None:
        after = 0
        while page := await self.state.usage.export(tenant, window.start, window.end,
                                                    after_id=after, limit=USAGE_PAGE):  # fmt: skip
            for _, record in page:
                values = {f: getattr(record, f) for f in UsageRecord.__slots__}
                del values["tenant_id"], values["tenant_uid"]
                out.write(UsageLine(**values))
            after = page[-1][0]

    # import

    def check(self, path: Path, *, untrusted: bool = False) -> Manifest:
        """Read the whole file once, checking every line and the signature; nothing is
        written. A file this server did not sign is refused unless ``untrusted``."""
        self.progress.start(f"checking {path.name}", path.stat().st_size)
        header, counts, models, trusted = None, Counts(), {}, True
        lines = self._read(path, self.progress.advance)
        try:
            for _, line in lines:
                if isinstance(line, Header):
                    header = line
                elif isinstance(line, CollectionLine):
                    models[line.name] = line.model
                kind = COUNTED.get(type(line))
                if kind is not None:
                    setattr(counts, kind, getattr(counts, kind) + 1)
        except UnsignedBackup as exc:
            if not untrusted:
                raise BackupError(
                    f"{exc}. Refused: only files signed under this server's "
                    "secret are trusted; --untrusted-source imports it without "
                    "its keys, policy or status (docs/backup.md)"
                ) from None
            trusted = False
        assert header is not None  # read_backup begins with it or raises
        return Manifest(header, counts, models, trusted)

    async def restore(self, path: Path, *, replace: bool = False, plan: str | None = None,
                      untrusted: bool = False) -> dict[str, Any]:  # fmt: skip
        manifest = self.check(path, untrusted=untrusted)
        tenant, trusted = manifest.header.tenant, manifest.trusted
        plan = self._check_plan(plan or (tenant.plan if trusted else DEFAULT_PLAN))
        await self._make_room(tenant.id, replace)
        # A fresh uid (Tenant's default): whatever the file says, this is a new incarnation.
        created = Tenant(**{**tenant.model_dump(), "plan": plan, "status": "suspended",
                            **({} if trusted else {"policy": {}})})  # fmt: skip
        try:
            await self.state.tenants.create(created)
        except Conflict:
            raise BackupError(f"tenant {tenant.id} was created meanwhile") from None
        try:
            await self._restore(path, manifest, created.uid)
        except BaseException:
            await self._remove(created)
            raise
        if trusted:  # an untrusted tenant stays suspended until the operator reviews it
            await self.state.tenants.update(tenant.id, tenant.updated_at, status=tenant.status)
        counts = {**manifest.counts.as_dict(), **({} if trusted else {"keys": 0})}
        await self.audit.record("tenant.imported", actor=self.actor, tenant_id=tenant.id,
                                exported_at=manifest.header.exported_at.isoformat(),
                                replaced=replace, trusted=trusted, counts=counts)  # fmt: skip
        return {"tenant": tenant.id, "file": str(path), "replaced": replace, **counts,
                "plan": plan, "trusted": trusted, "keys_work": trusted,
                "unknown_models": sorted({m for m in manifest.models.values()
                                          if m not in self.models}),
                **({} if trusted else {"left_out": _left_out(manifest)})}  # fmt: skip

    def _check_plan(self, plan: str) -> str:
        if self.plans and plan not in self.plans:
            known = ", ".join(sorted(self.plans))
            raise BackupError(f"the plan {plan!r} is not in this server's config (its plans: "
                              f"{known}); add it, or choose one with --plan")  # fmt: skip
        return plan

    async def _make_room(self, tenant_id: str, replace: bool) -> None:
        existing = await self.state.tenants.get(tenant_id)
        if existing is None:
            return  # a new uid has no documents anywhere: nothing can be left over
        if not replace:
            raise BackupError(f"tenant {tenant_id} already exists: pass --replace to delete "
                              "all of its data and restore the file in its place")  # fmt: skip
        await self._remove(existing)

    async def _remove(self, tenant: Tenant) -> None:
        """Documents first, by uid: the store then refuses that uid's writes for good."""
        await self.documents.delete_tenant(tenant.uid)
        await self.state.tenants.delete(tenant.id)

    async def _restore(self, path: Path, manifest: Manifest, uid: str) -> None:
        tenant, window = manifest.header.tenant, manifest.header.usage
        self.progress.start(f"importing {tenant.id}", manifest.counts.documents)
        if window is not None and manifest.trusted:  # the file's window replaces ours
            await self.state.usage.delete(tenant.id, window.start, window.end)
        restorer = Restorer(self.state, self.documents, tenant.id, uid, self.progress.advance,
                            keys=manifest.trusted)  # fmt: skip
        try:
            for _, line in self._read(path):
                if isinstance(line, Header) and line != manifest.header:
                    raise BackupError("the file changed since it was checked")
                await restorer.take(line)
        except UnsignedBackup:
            # A trusted file that no longer verifies was changed since the check: the
            # caller removes what was written (the tenant was suspended all along).
            if manifest.trusted:
                raise
        await restorer.finish()


def _left_out(manifest: Manifest) -> dict[str, Any]:
    """What an untrusted file asked for and did not get."""
    tenant = manifest.header.tenant
    return {"keys": manifest.counts.keys, "status": tenant.status, "plan": tenant.plan,
            "policy": tenant.policy}  # fmt: skip


def _key_line(key: ApiKey, digest: str) -> KeyLine:
    values = {f: getattr(key, f) for f in ApiKey.__slots__ if f not in ("tenant_id", "tenant_uid")}
    return KeyLine.model_validate({**values, "scopes": list(key.scopes), "digest": digest})


def _window(usage: UsageScope, now: datetime) -> UsageWindow | None:
    if usage == "none":
        return None
    return UsageWindow(start=EPOCH if usage == "all" else month_start(now), end=now)
