"""`embedgate ingest COLLECTION FILE`: stream a file's documents into a collection over HTTP.

Uses a tenant key (``EMBEDGATE_API_KEY``, or ``--key-file``), never a flag. Formats:

- ``txt``: one document per non-empty line, id ``<prefix>:<line number>``;
- ``jsonl``: one JSON object per line, ``{"id"?, "text", "metadata"?}``;
- ``md``: one document per paragraph, with the heading it sits under as metadata.

Documents go in batches; re-ingesting a file re-embeds only the lines that changed (ids are
stable). 429 and 503 answers are retried after their Retry-After, so an ingest runs within
the tenant's rate limits instead of failing on them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

from embedgate.cli.common import unreachable
from embedgate.keyfiles import SecretFileError, read_secret_file

RETRIES = 8
FORMATS = ("txt", "jsonl", "md")


class IngestError(click.ClickException):
    pass


def detect_format(path: Path, given: str) -> str:
    if given != "auto":
        return given
    suffix = path.suffix.lower().lstrip(".")
    return {"jsonl": "jsonl", "ndjson": "jsonl", "md": "md", "markdown": "md"}.get(suffix, "txt")


def read_documents(path: Path, fmt: str, prefix: str) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        if fmt == "md":
            yield from _markdown(lines, prefix)
            return
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if fmt == "txt":
                yield {"id": f"{prefix}:{number}", "text": line.rstrip("\n")}
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise IngestError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                raise IngestError(f'{path}:{number}: expected an object with a "text" string')
            yield doc


def _markdown(lines: Iterator[str], prefix: str) -> Iterator[dict[str, Any]]:
    heading, start = "", 0
    block: list[str] = []
    for number, line in enumerate([*lines, "\n"], start=1):
        if line.startswith("#") or not line.strip():
            if block:
                meta = {"section": heading} if heading else {}
                yield {"id": f"{prefix}:{start}", "text": " ".join(block), "metadata": meta}
                block = []
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            continue
        if not block:
            start = number
        block.append(line.strip())


def count_documents(path: Path, fmt: str) -> int:
    return sum(1 for _ in read_documents(path, fmt, "count"))


def batches(docs: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def post(client: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    """POST, waiting out 429/503 as the server asks and a lost connection (a restarting
    server) with backoff: an upsert is idempotent, so sending a batch again is safe. Other
    errors end the ingest."""
    for attempt in range(RETRIES):
        try:
            response = client.post(url, json=body)
        except httpx.TransportError as exc:
            if attempt == RETRIES - 1:
                raise IngestError(unreachable(url.split("/v1/", 1)[0], exc)) from None
            time.sleep(min(2**attempt, 30))
            continue
        if response.status_code not in (429, 503):
            break
        time.sleep(float(response.headers.get("retry-after", "1")))
    if response.is_success:
        return response
    raise IngestError(f"HTTP {response.status_code}: {_message(response)}")


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def open_collection(client: httpx.Client, server: str, collection: str, create: bool,
                    settings: dict[str, Any]) -> None:  # fmt: skip
    """Check the collection once, before reading the file: a server that is not there, a
    wrong key or a missing collection end the ingest at once, in one line."""
    base = f"{server.rstrip('/')}/v1/collections"
    try:
        found = client.get(f"{base}/{collection}")
    except httpx.TransportError as exc:
        raise IngestError(unreachable(server, exc)) from None
    if found.status_code == 404 and create:
        post(client, base, {"name": collection, **settings})
    elif found.status_code == 404:
        raise IngestError(f"HTTP 404: {_message(found)}; add --create to create it")
    elif not found.is_success and found.status_code not in (429, 503):  # those: posts retry
        raise IngestError(f"HTTP {found.status_code}: {_message(found)}")


def tenant_key(key_file: Path | None) -> str:
    if key_file is not None:
        try:
            return read_secret_file(key_file)
        except SecretFileError as exc:
            raise IngestError(str(exc)) from None
    key = os.environ.get("EMBEDGATE_API_KEY", "")
    if not key:
        raise IngestError("Set EMBEDGATE_API_KEY to a tenant key, or pass --key-file.")
    return key


@click.command("ingest")
@click.argument("collection")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--server", envvar="EMBEDGATE_SERVER", default="http://127.0.0.1:8000",
              show_default=True, help="embedgate URL (env EMBEDGATE_SERVER).")  # fmt: skip
@click.option("--key-file", type=click.Path(path_type=Path),
              help="File holding the tenant key (default: env EMBEDGATE_API_KEY).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["auto", *FORMATS]), default="auto",
              show_default=True, help="auto: by file extension.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1, 2048), default=64, show_default=True)
@click.option("--id-prefix", help="Prefix of generated ids (default: the file name).")
@click.option("--create", is_flag=True, help="Create the collection if it does not exist.")
@click.option("--model", help="With --create: the collection's model.")
@click.option("--dimensions", type=int, help="With --create: the collection's dimensions.")
def ingest(
    collection: str, file: Path, server: str, key_file: Path | None, fmt: str,
    batch_size: int, id_prefix: str | None, create: bool, model: str | None,
    dimensions: int | None,
) -> None:  # fmt: skip
    """Add the documents of FILE to COLLECTION (txt: one per line; jsonl; md)."""
    fmt = detect_format(file, fmt)
    headers = {"Authorization": f"Bearer {tenant_key(key_file)}"}
    base = server.rstrip("/") + "/v1/collections"
    with httpx.Client(headers=headers, timeout=300) as client:
        open_collection(client, server, collection, create,
                        {"model": model, "dimensions": dimensions})  # fmt: skip
        total = count_documents(file, fmt)
        written = tokens = 0
        docs = read_documents(file, fmt, id_prefix or file.name)
        progress: Any = click.progressbar(length=total, label=f"ingesting {file.name}",
                                          file=sys.stderr)  # fmt: skip
        with progress as bar:
            for batch in batches(docs, batch_size):
                try:
                    answer = post(client, f"{base}/{collection}/documents", {"documents": batch})
                except IngestError as exc:
                    raise IngestError(
                        f"{exc}\n{written} of {total} documents were written before this; run the"
                        " same command again to go on (unchanged documents are not re-embedded)."
                    ) from None
                tokens += answer.json()["usage"]["prompt_tokens"]
                written += len(batch)
                bar.update(len(batch))
    click.echo(json.dumps({"collection": collection, "documents": written, "tokens": tokens}))
