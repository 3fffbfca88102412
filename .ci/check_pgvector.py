"""Check that the PostgreSQL + pgvector the tests use runs on x86-64 CPUs without AVX-512.

A pgvector built with ``-march=native`` (pgvector's Makefile default) on a machine with
AVX-512 dies with SIGILL on one without it (an AMD EPYC before Zen 4, for one), in
``CREATE INDEX ... USING hnsw`` or the first vector cast. Two checks, both must pass:

1. static: ``objdump`` finds no AVX-512 (EVEX-encoded) instruction in ``bin/postgres``,
   ``bin/initdb`` or any ``lib/*.so`` or ``lib/postgresql/*.so``, outside the functions
   that PostgreSQL and pgvector call only after ``cpuid`` said the CPU has AVX-512
   (``DISPATCHED``);
2. emulated: ``qemu-x86_64 -cpu EPYC-Rome`` (Zen 2: AVX2, no AVX-512; QEMU cannot run
   AVX-512 at all) runs the bundled ``postgres --single`` through what the store does:
   ``CREATE EXTENSION vector``, casts, partial HNSW indexes on ``vector`` and ``halfvec``,
   an iterative index scan, bit distances, full text with Snowball.

Usage: ``python .ci/check_pgvector.py [--pginstall DIR] [--cpu MODEL] [--static-only]``;
DIR defaults to the installed ``pgserver`` package's ``pginstall``. Needs binutils and
(unless ``--static-only``) qemu-user. See docs/pgvector.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Chosen at run time by cpuid: PostgreSQL's pg_popcount_available()/pg_crc32c choosers,
# pgvector's bitutils.c (target_clones-like dispatch in _PG_init).
DISPATCHED = frozenset({
    "pg_popcount_avx512", "pg_popcount_masked_avx512", "pg_comp_crc32c_avx512",
    "BitHammingDistanceAvx512Popcount", "BitJaccardDistanceAvx512Popcount",
})  # fmt: skip
# Legacy prefixes that may precede an EVEX (0x62) prefix; in 64-bit mode 0x62 is always EVEX.
PREFIXES = frozenset({"67", "2e", "3e", "26", "36", "64", "65"})
EMULATION_TIMEOUT_S = 120

# One statement per paragraph (``postgres --single -j``): what the store does (docs/pgvector.md).
SQL = """\
CREATE EXTENSION vector;

CREATE TABLE d (id int, dimensions int, embedding vector, b bit(64), body text);

INSERT INTO d SELECT i, 384,
    l2_normalize((SELECT array_agg(random()) FROM generate_series(1, 384) WHERE i > 0)::vector),
    (SELECT string_agg((random() > 0.5)::int::text, '') FROM generate_series(1, 64)
     WHERE i > 0)::bit(64),
    'chasing cats ' || i
FROM generate_series(1, 300) i;

INSERT INTO d SELECT 1000 + i, 2560,
    l2_normalize((SELECT array_agg(random()) FROM generate_series(1, 2560) WHERE i > 0)::vector),
    NULL, 'dogs'
FROM generate_series(1, 50) i;

CREATE INDEX d_384 ON d USING hnsw ((embedding::vector(384)) vector_ip_ops)
    WITH (m = 16, ef_construction = 64) WHERE dimensions = 384;

CREATE INDEX d_2560 ON d USING hnsw ((embedding::halfvec(2560)) halfvec_ip_ops)
    WHERE dimensions = 2560;

CREATE INDEX d_tsv ON d USING gin (to_tsvector('english', body));

SET enable_seqscan = off;

SET hnsw.iterative_scan = relaxed_order;

SELECT
    (SELECT id FROM d WHERE dimensions = 384 ORDER BY embedding::vector(384)
        <#> (SELECT embedding FROM d WHERE id = 7)::vector(384) LIMIT 1) = 7
    AND (SELECT id FROM d WHERE dimensions = 2560 ORDER BY embedding::halfvec(2560)
        <#> (SELECT embedding FROM d WHERE id = 1007)::halfvec(2560) LIMIT 1) = 1007
    AND (SELECT bool_and(b <~> b = 0 AND b <%> b = 0) FROM d WHERE b IS NOT NULL)
    AND (SELECT count(*) FROM d
        WHERE to_tsvector('english', body) @@ to_tsquery('english', 'chased')) = 300
    AS pgvector_check;

"""
PASSED = 'pgvector_check = "t"'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pginstall", type=Path, default=None,
                        help="a PostgreSQL install (bin/, lib/); default: pgserver's")  # fmt: skip
    parser.add_argument("--cpu", default="EPYC-Rome", help="QEMU CPU model without AVX-512")
    parser.add_argument("--static-only", action="store_true", help="skip the QEMU run")
    args = parser.parse_args()
    root = args.pginstall or _pgserver_install()
    failures = static_check(root)
    if not args.static_only:
        failures += emulated_check(root, args.cpu)
    for failure in failures:
        print(f"check_pgvector: FAIL: {failure}", file=sys.stderr)
    if failures:
        print("check_pgvector: failed. A pgvector that needs AVX-512 dies with SIGILL on CPUs "
              "without it: build pgvector with `make OPTFLAGS=\"\"` or use a package built "
              "for x86-64 (see docs/pgvector.md)", file=sys.stderr)  # fmt: skip
        return 1
    print(f"check_pgvector: ok: {root} runs without AVX-512")
    return 0


def _pgserver_install() -> Path:
    with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is not set
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH).parent


# static


def static_check(root: Path) -> list[str]:
    # Extensions live in lib/postgresql/ (a source build, pgserver) or lib/ (Debian's).
    libraries = {*(root / "lib").glob("*.so"), *(root / "lib" / "postgresql").glob("*.so")}
    binaries = [root / "bin" / "postgres", root / "bin" / "initdb", *sorted(libraries)]
    missing = [str(path) for path in binaries[:2] if not path.is_file()]
    if missing:
        return [f"not a PostgreSQL install, missing {', '.join(missing)}"]
    if not any(path.name == "vector.so" for path in libraries):
        return [f"no pgvector: no vector.so in {root / 'lib'} or {root / 'lib' / 'postgresql'}"]
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(avx512_functions, binaries))
    failures = []
    for path, functions in zip(binaries, found, strict=True):
        bad = {name: n for name, n in functions.items() if name not in DISPATCHED}
        if bad:
            names = ", ".join(f"{name} ({n})" for name, n in sorted(bad.items())[:12])
            more = f" and {len(bad) - 12} more" if len(bad) > 12 else ""
            count = sum(bad.values())
            failures.append(f"{path}: {count} AVX-512 instructions in {len(bad)} functions "
                            f"not dispatched by cpuid: {names}{more}")  # fmt: skip
    return failures


def avx512_functions(path: Path) -> Counter[str]:
    """Function name -> number of EVEX-encoded (AVX-512) instructions in it."""
    command = ["objdump", "-d", "-w", "--no-addresses", str(path)]
    listing = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    counts: Counter[str] = Counter()
    function = "?"
    for line in listing.splitlines():
        if line.startswith("<") and line.endswith(">:"):
            function = line[1:-2].split("@")[0].split(".")[0]
        elif line.startswith("\t") and _is_evex(line.split("\t")[1].split()):
            counts[function] += 1
    return counts


def _is_evex(code: list[str]) -> bool:
    first = next((byte for byte in code if byte not in PREFIXES), "")
    return first == "62"


# emulated


def emulated_check(root: Path, cpu: str) -> list[str]:
    if shutil.which("qemu-x86_64") is None:
        return ["qemu-x86_64 not found: install qemu-user, or pass --static-only"]
    user = _unprivileged_user()
    with tempfile.TemporaryDirectory(prefix="check-pgvector-") as temp:
        data = Path(temp) / "data"
        if user is not None:
            shutil.chown(temp, user)
        initdb = [str(root / "bin" / "initdb"), "-D", str(data), "-U", "postgres",
                  "--auth=trust", "--no-sync"]  # fmt: skip
        subprocess.run(initdb, check=True, capture_output=True, user=user, timeout=120)
        command = ["qemu-x86_64", "-cpu", cpu, str(root / "bin" / "postgres"), "--single", "-j",
                   "-D", str(data), "-c", "fsync=off", "postgres"]  # fmt: skip
        run = subprocess.run(command, input=SQL, capture_output=True, text=True, user=user,
                             timeout=EMULATION_TIMEOUT_S)  # fmt: skip
    output = run.stdout + run.stderr
    if run.returncode != 0 or PASSED not in output or "ERROR:" in output:
        lines = [line for line in output.splitlines() if "TCG doesn't support" not in line]
        tail = "\n    ".join(lines[-8:])
        return [f"postgres under `qemu-x86_64 -cpu {cpu}` exited with {run.returncode} "
                f"(-4 is SIGILL):\n    {tail}"]  # fmt: skip
    return []


def _unprivileged_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, pgserver's own system user."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import ensure_user_exists
    entry = ensure_user_exists("pgserver")
    assert entry is not None
    return str(entry.pw_name)


if __name__ == "__main__":
    sys.exit(main())
