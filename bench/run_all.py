"""Every benchmark in bench/, one after another, into bench/REPORT.md and bench/report.json.

    python bench/run_all.py                      # the full run: about 30 minutes on 2 vCPUs
    python bench/run_all.py --quick              # a smoke run of everything, smaller
    python bench/run_all.py --only auth,soak --args "fairness=--rounds 3"

Each bench runs as its own process, never two at once (they would share the cores), with
its own defaults (or the small parameters of --quick); the last line of its stdout is its
JSON result, its stderr is shown as it goes. Every target is declared once, in TARGETS, as
a JSON path into one bench's result. A bench that fails (exit status, timeout, no JSON) is
reported as failed, with the tail of its stderr, and the others still run.
"""

from __future__ import annotations

import argparse
import collections
import json
import operator
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Bench:
    script: str
    quick: tuple[str, ...]  # arguments of --quick; the full run uses the script's defaults
    timeout_s: int  # of the full run; --quick gives each a quarter of it


BENCHES: dict[str, Bench] = {
    "throughput": Bench("throughput.py", ("--rounds", "1", "--seconds", "5", "--concurrency",
                        "16", "--texts", "500", "--raw-texts", "200", "--batch-sizes", "16,64"),
                        1200),
    "auth": Bench("auth.py", ("--requests", "300"), 600),
    "limits": Bench("limits.py", ("--requests", "300"), 900),
    "fairness": Bench("fairness.py", ("--rounds", "1", "--requests", "40", "--flood-seconds", "10",
                      "--flood-warmup", "2", "--texts", "500"), 2400),
    "search": Bench("search.py", ("--quick",), 3600),
    "search_index": Bench("search_index.py", ("--count", "30000", "--queries", "200"), 1800),
    "soak": Bench("soak.py", ("--quick",), 1200),
    "hostile": Bench("hostile.py", ("--rounds", "1", "--seconds", "3", "--store-docs", "500"),
                     2400),
    "upstream": Bench("upstream.py", ("--rounds", "1", "--seconds", "4"), 1800),
    "rerank": Bench("rerank.py", ("--rounds", "1", "--seconds", "4", "--search-seconds", "4",
                    "--collection-docs", "128", "--raw-pairs", "256", "--batch-sizes", "16,32"),
                    1200),
}  # fmt: skip


@dataclass(frozen=True)
class Target:
    bench: str
    figure: str
    path: str  # dotted JSON path into the bench's result
    op: str  # one of OPS
    value: float | bool | str  # a str is a JSON path to the value, in the same result


OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "=": operator.eq,
}  # fmt: skip

TARGETS = [
    Target("throughput", "served / raw model throughput", "served_over_raw", ">=", 0.95),
    Target("throughput", "batched / unbatched throughput", "batched_over_unbatched", ">", 1.0),
    Target("throughput", "served errors", "errors", "=", 0),
    Target("auth", "API-key auth, warm, p50 (ms)", "auth_warm_p50_ms", "<", 1.0),
    Target("auth", "policy checks of a request, p50 (ms)", "policy_checks_p50_ms", "<", 1.0),
    Target("limits", "added by every check, memory limits, p50 (ms)", "memory.added_p50_ms",
           "<", 1.0),
    Target("limits", "checks alone, memory limits, p50 (ms)", "memory.checks_p50_ms", "<", 1.0),
    Target("limits", "added by every check, Redis limits, p50 (ms)", "redis.added_p50_ms",
           "<", 1.0),
    Target("limits", "checks alone, Redis limits, p50 (ms)", "redis.checks_p50_ms", "<", 1.0),
    Target("fairness", "fair: light p99 under flood / alone", "fair_p99_ratio", "<=", 2.0),
    Target("search", "ingest / raw model throughput", "ingest.ingest_vs_raw", ">=", 0.8),
    Target("search", "search through the store, HNSW, p99 (ms)", "search.hnsw.p99_ms",
           "<", 10.0),
    Target("search", "search through the store, recall@10", "search.hnsw.recall_at_10",
           ">=", 0.95),
    Target("search_index", "vector index, HNSW, p99 (ms)", "hnsw.p99_ms", "<", 10.0),
    Target("search_index", "vector index, recall@10", "hnsw.recall_at_10", ">=", 0.95),
    Target("soak", "5xx responses", "status_counts.5xx", "=", 0),
    Target("soak", "transport errors", "status_counts.transport", "=", 0),
    Target("soak", "4xx other than 429", "status_counts.other_4xx", "=", 0),
    Target("soak", "RSS growth net of the cache (MB)", "rss_net_growth_mb", "<=",
           "rss_noise_mb"),
    Target("soak", "RSS trend over the second half (MB)", "rss_second_half_trend_mb",
           "<=", "rss_noise_mb"),
    Target("soak", "memory stable", "rss_stable", "=", True),
    *(Target("hostile", f"light p99 under {attack} / alone", f"attacks.{attack}.ratio", "<=",
             2.0) for attack in ("body_flood", "token_flood", "store_flood", "queue_flood",
                                 "slow_heads")),
    Target("hostile", "light tenant errors under attack", "light_errors", "=", 0),
    Target("hostile", "light tenant errors alone (else the run is void)", "light_alone_errors",
           "=", 0),
    Target("upstream", "through a FIFO engine: light p99 under flood / alone",
           "engine.light_p99_ratio", "<=", 1.5),
    Target("upstream", "through a FIFO engine: priority 4 / priority 1 tokens",
           "engine.hi_lo_share", ">=", 3.6),
    Target("upstream", "through a FIFO engine: priority 4 / priority 1 tokens (at most)",
           "engine.hi_lo_share", "<=", 4.4),
    Target("upstream", "gateway / direct engine throughput", "engine.throughput_ratio",
           ">=", 0.95),
    Target("upstream", "added latency against a stand-in, 64 clients, p50 (ms)",
           "standin.added_ms.p50", "<", 0.5),
    Target("upstream", "added latency against a stand-in, 64 clients, p99 (ms)",
           "standin.added_ms.p99", "<", 2.0),
    Target("upstream", "requests/s through the gateway, stand-in", "standin.requests_per_s.through",
           ">=", 5000),
    Target("rerank", "served / raw cross-encoder pairs per second", "pairs.served_over_raw",
           ">=", 0.9),
    Target("rerank", "rerank errors", "pairs.errors", "=", 0),
    Target("rerank", "two-stage search errors", "two_stage.errors", "=", 0),
]  # fmt: skip


def log(message: str) -> None:
    print(f"[run_all] {message}", file=sys.stderr, flush=True)


# -- running ---------------------------------------------------------------------------


def run_bench(name: str, argv: list[str], timeout_s: float) -> dict[str, Any]:
    """One bench in its own session (so a timeout ends its servers too); its JSON result."""
    command = [sys.executable, str(HERE / BENCHES[name].script), *argv]
    log(f"{name}: {shlex.join(command[1:])}")
    started, load = time.monotonic(), os.getloadavg()[0]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    tail: collections.deque[str] = collections.deque(maxlen=40)
    out: list[str] = []
    readers = [threading.Thread(target=relay, args=(proc.stderr, tail, True)),
               threading.Thread(target=relay, args=(proc.stdout, out, False))]  # fmt: skip
    for reader in readers:
        reader.start()
    error = None
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout_s:.0f} s"
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for reader in readers:
        reader.join()
    entry: dict[str, Any] = {
        "command": shlex.join(["python", f"bench/{BENCHES[name].script}", *argv]),
        "seconds": round(time.monotonic() - started), "returncode": proc.returncode,
        "load_avg_at_start": round(load, 2),
    }  # fmt: skip
    result = last_json(out)
    if error is None and proc.returncode != 0:
        error = f"exit status {proc.returncode}"
    if error is None and result is None:
        error = "no JSON line on stdout"
    if error is not None:
        entry |= {"error": error, "stderr_tail": list(tail)}
        log(f"{name}: FAILED ({error})")
    entry["result"] = result
    return entry


def relay(stream: Any, into: Any, echo: bool) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))
        if echo:
            print(line, end="", file=sys.stderr, flush=True)


def last_json(lines: list[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except ValueError:
                return None
    return None


# -- the machine -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
              if line.startswith("model name")]  # fmt: skip
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kb = next((int(line.split()[1]) for line in meminfo.splitlines()
                     if line.startswith("MemTotal:")), 0)  # fmt: skip
    return {
        "cpu": models[0] if models else platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "ram_gb": round(total_kb / 2**20, 1),
        "os": f"{os_name()}, {platform.system()} {platform.release()}",
        "python": platform.python_version(), **torch_info(), "allocator": allocator(),
    }  # fmt: skip


def allocator() -> str:
    """What the benches' `embedgate serve` runs on (EMBEDGATE_ALLOCATOR, default auto)."""
    sys.path.insert(0, str(ROOT / "src"))
    from embedgate.allocator import plan

    choice = os.environ.get("EMBEDGATE_ALLOCATOR", "auto")
    return f"{plan(choice, dict(os.environ))[0]} (EMBEDGATE_ALLOCATOR={choice})"  # type: ignore[arg-type]


def os_name() -> str:
    release = Path("/etc/os-release")
    for line in release.read_text().splitlines() if release.exists() else []:
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.platform()


TORCH_INFO = """import json, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
print(json.dumps({"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                  "gpu": gpu}))"""


def torch_info() -> dict[str, Any]:
    """Asked of a fresh process: this one stays light while the benches run."""
    done = subprocess.run([sys.executable, "-c", TORCH_INFO], capture_output=True, text=True)
    info = last_json(done.stdout.splitlines())
    return info or {"torch": None, "torch_threads": None, "gpu": None}


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True)  # fmt: skip
    return done.stdout.strip() or "unknown"


# -- targets ---------------------------------------------------------------------------


def lookup(result: dict[str, Any] | None, path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def evaluate(target: Target, entry: dict[str, Any] | None) -> dict[str, Any]:
    """One row of the table: measured, target, ratio (measured / target) and met."""
    row: dict[str, Any] = {"bench": target.bench, "figure": target.figure, "path": target.path,
                           "op": target.op,
                           "target_path": target.value if isinstance(target.value, str)
                           else None}  # fmt: skip
    result = entry.get("result") if entry else None
    wanted = lookup(result, target.value) if isinstance(target.value, str) else target.value
    measured = lookup(result, target.path)
    row |= {"measured": measured, "target": wanted}
    if entry is None:
        return row | {"met": None, "status": "not run"}
    if "error" in entry or measured is None or wanted is None:
        return row | {"met": False, "status": "failed" if "error" in entry else "missing"}
    if number(measured) and number(wanted) and wanted:
        row["ratio"] = round(measured / wanted, 3)
    return row | {"met": bool(OPS[target.op](measured, wanted)), "status": "measured"}


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- the report ------------------------------------------------------------------------


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def met_cell(row: dict[str, Any]) -> str:
    if row["status"] == "not run":
        return "not run"
    if row["status"] != "measured":
        return f"**{row['status']}**"
    return "yes" if row["met"] else "**no**"


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| figure | measured | target | ratio | met |", "|---|---|---|---|---|"]
    for row in rows:
        wanted = cell(row["target"])
        if row["target_path"]:  # a value from the bench's own result
            name = row["target_path"]
            wanted = f"{name} ({wanted})" if row["target"] is not None else name
        target = f"{row['op']} {wanted}"
        lines.append(f"| {row['bench']}: {row['figure']} | {cell(row['measured'])} | {target} "
                     f"| {cell(row.get('ratio'))} | {met_cell(row)} |")  # fmt: skip
    return lines


def header(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    gpu = m.get("gpu") or "none"
    return [
        "# Benchmark report", "",
        f"Generated by `{report['command']}` on one machine, one bench after another "
        "(see [docs/benchmarks.md](../docs/benchmarks.md#all-benchmarks)).", "",
        "| | |", "|---|---|",
        f"| date | {report['date']} |", f"| commit | `{report['commit']}` |",
        f"| CPU | {m['cpu']}, {m['cores']} cores |", f"| memory | {m['ram_gb']} GB |",
        f"| OS | {m['os']} |", f"| Python | {m['python']} |",
        f"| torch | {m['torch']} ({m['torch_threads']} threads) |", f"| GPU | {gpu} |",
        f"| server allocator | {m.get('allocator', 'not recorded')} |",
        f"| load average, start / end | {report['load_avg'][0]} / {report['load_avg'][1]} |",
        f"| total time | {report['seconds']} s |", "",
        *(QUICK_NOTE if "--quick" in report["command"] else []),
    ]  # fmt: skip


QUICK_NOTE = ["**A quick run**: small parameters, to check that every bench runs and reports; "
              "its figures are not measurements of the targets.", ""]  # fmt: skip


def section(name: str, entry: dict[str, Any]) -> list[str]:
    status = f"failed: {entry['error']}" if "error" in entry else "ok"
    lines = [f"### {name}", "", f"`{entry['command']}`: {entry['seconds']} s, {status}, "
             f"load average {entry['load_avg_at_start']} at its start.", ""]  # fmt: skip
    if "error" in entry:
        lines += ["```text", *entry["stderr_tail"], "```", ""]
    if entry["result"] is not None:
        lines += ["<details><summary>JSON result</summary>", "", "```json",
                  json.dumps(entry["result"]), "```", "", "</details>", ""]  # fmt: skip
    return lines


def markdown(report: dict[str, Any]) -> str:
    rows = report["targets"]
    met = sum(1 for row in rows if row["met"])
    failed = [name for name, entry in report["benches"].items() if "error" in entry]
    lines = [*header(report), "## Targets", "", *table(rows), ""]
    lines += [f"{met} of {len(rows)} targets met." + (f" Failed: {', '.join(failed)}."
              if failed else ""), "", "## Benches", ""]  # fmt: skip
    for name, entry in report["benches"].items():
        lines += section(name, entry)
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small parameters: a smoke run")
    parser.add_argument("--only", default=",".join(BENCHES), help="benches to run, in order")
    parser.add_argument("--args", action="append", default=[], metavar="BENCH=ARGS",
                        help="arguments for one bench instead of its defaults")  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "REPORT.md")
    parser.add_argument("--json", type=Path, default=HERE / "report.json")
    parser.add_argument("--from-json", type=Path, metavar="REPORT_JSON",
                        help="run nothing: write the report again from an earlier "
                        "report.json, its targets evaluated anew")  # fmt: skip
    args = parser.parse_args()
    unknown = set(args.only.split(",")) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benches: {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = arguments()
    if args.from_json:
        earlier = json.loads(args.from_json.read_text())
        write(earlier | {"targets": targets(earlier["benches"])}, args)
        return
    started, load = time.monotonic(), os.getloadavg()[0]
    overrides = dict(item.split("=", 1) for item in args.args)
    benches: dict[str, Any] = {}
    info = machine()
    for name in args.only.split(","):
        bench = BENCHES[name]
        argv = list(bench.quick) if args.quick else []
        argv = shlex.split(overrides[name]) if name in overrides else argv
        benches[name] = run_bench(name, argv, bench.timeout_s / 4 if args.quick else
                                  bench.timeout_s)  # fmt: skip
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit(),
        "command": shlex.join(["python", "bench/run_all.py", *sys.argv[1:]]),
        "machine": info, "seconds": round(time.monotonic() - started),
        "load_avg": [round(load, 2), round(os.getloadavg()[0], 2)],
        "targets": targets(benches), "benches": benches,
    }  # fmt: skip
    write(report, args)


def targets(benches: dict[str, Any]) -> list[dict[str, Any]]:
    return [evaluate(t, benches.get(t.bench)) for t in TARGETS if t.bench in benches]


def write(report: dict[str, Any], args: argparse.Namespace) -> None:
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    args.out.write_text(markdown(report) + "\n")
    met = sum(1 for row in report["targets"] if row["met"])
    log(f"{met} of {len(report['targets'])} targets met; wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
