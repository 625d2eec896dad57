"""One markdown table from `proxytool bench --output` files: tokens/s, ms/step, and each row's speed
against the base alone and against the paper's reference loop of the same file and batch (the ratios
the targets are stated in), with whether its tokens equal the reference's.

Usage: python benchmarks/bench_table.py OUT/*.json > table.md
"""

import json
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    document = json.loads(path.read_text())
    loading = document["config"]["setup"]["loading"]
    setting = f"{loading['dtype']}, {loading['threads'] or '-'} threads, {loading['kv_cache']} cache"
    setting += f", compile {loading['compile']}, quantize {loading['quantize_base']}, overlap {loading['overlap']}"
    setting += f", pack {loading.get('pack_weights', 'off (before December 4)')}"
    by = {(r["batch"], r["mode"]): r for r in document["results"]}
    out = []
    for r in document["results"]:
        mode = r["mode"] if "speculative" not in r else f"speculative k={r['speculative']}"
        cells = [path.stem, setting, str(r["prompt_tokens"]), str(r["batch"]), mode, f"{r['tokens_per_s']:.2f}"]
        cells += [
            f"{r['ms_per_step']:.1f}",
            _ratio(r, by.get((r["batch"], "base"))),
            _ratio(r, by.get((r["batch"], "reference"))),
        ]
        cells += [_same(r, by.get((r["batch"], "reference"))), _lanes(r), f"{r['peak_rss_gb']:.1f}", _cuda(r)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _ratio(row: dict, other: dict | None) -> str:
    return "-" if other is None or other is row else f"{row['tokens_per_s'] / other['tokens_per_s']:.2f}x"


def _same(row: dict, reference: dict | None) -> str:
    """Rows whose tokens equal the reference loop's, e.g. 8/8."""
    if reference is None or row["mode"] not in ("proxy", "speculative") or "tokens" not in row:
        return "-"
    same = sum(a == b for a, b in zip(row["tokens"], reference["tokens"]))
    return f"{same}/{len(reference['tokens'])}"


def _lanes(row: dict) -> str:
    """What --overlap chose: on / off, or per call shape as measured (auto); and each source's weight layout."""
    lanes = row.get("lanes", "-")
    if isinstance(lanes, dict):
        lanes = ", ".join(f"{shape}: {way}" for shape, way in lanes.items()) or "measuring"
    return lanes + (f" (weights: {row['weights']})" if row.get("weights") else "")


def _cuda(row: dict) -> str:
    return "-" if row.get("cuda_max_allocated_gb") is None else f"{row['cuda_max_allocated_gb']:.1f}"


def main(paths: list[str]) -> None:
    machines = {json.dumps(json.loads(Path(p).read_text()).get("machine"), sort_keys=True) for p in paths}
    for machine in sorted(machines):
        m = json.loads(machine)
        if m:
            parts = [m.get("cpu"), f"{m['cores']} cores", f"{m['memory_gb']} GB", f"torch {m['torch']}"]
            print(f"Machine: {', '.join(p for p in parts if p)}, {m['gpu'] or 'no GPU'}.\n")
    print(
        "| run | setting | prompt | batch | mode | tok/s | ms/step | vs base | vs reference | tokens = reference"
        " | lanes | peak RSS GB | CUDA peak GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        print("\n".join(rows(Path(path))))


if __name__ == "__main__":
    main(sys.argv[1:])
