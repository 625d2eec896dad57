"""One markdown table from `proxytool bench --output` files: tokens/s, ms/step, peak memory, and each
row's speed against the base alone of the same file and batch (the ratio the targets are stated in).

Usage: python benchmarks/bench_table.py OUT/*.json > table.md
"""

import json
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    document = json.loads(path.read_text())
    loading = document["config"]["setup"]["loading"]
    setting = f"{loading['kv_cache']} cache, compile {loading['compile']}, quantize {loading['quantize_base']}"
    base = {r["batch"]: r["tokens_per_s"] for r in document["results"] if r["mode"] == "base"}
    out = []
    for r in document["results"]:
        mode = r["mode"] if "speculative" not in r else f"speculative k={r['speculative']}"
        ratio = f"{r['tokens_per_s'] / base[r['batch']]:.2f}x" if r["batch"] in base else "-"
        cuda = "-" if r.get("cuda_max_allocated_gb") is None else f"{r['cuda_max_allocated_gb']:.1f}"
        cells = [path.stem, setting, str(r["batch"]), mode, f"{r['tokens_per_s']:.1f}", f"{r['ms_per_step']:.1f}"]
        out.append("| " + " | ".join(cells + [ratio, cuda]) + " |")
    return out


def main(paths: list[str]) -> None:
    print("| run | setting | batch | mode | tok/s | ms/step | vs base (same run) | CUDA peak GB |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        print("\n".join(rows(Path(path))))


if __name__ == "__main__":
    main(sys.argv[1:])
