"""Markdown table of a bench/results/perturb_*.json file (the README's benchmark table comes from here)."""
import json
import sys


def table(path):
    r = json.load(open(path))
    out = [f"{r['device']}, torch {r['torch']}, triton {r['triton']}, {r['date']}: {r['shapes']} parameter list "
           f"({r['tensors']} tensors, {r['elements'] / 1e9:.3f}e9 {r['dtype'].replace('torch.', '')} elements); "
           f"copy roofline {r['roofline_ms']:.3f} ms ({r['roofline_gbps']:.0f} GB/s read+write), measured in the same run.",
           "",
           "| op | dist | K | rounding | backend | ms | x roofline | device ms | eager ms | speedup vs eager | extra memory MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        eager = f"{row['eager_ms']:.2f}" if row["eager_ms"] else "-"
        speed = f"{row['speedup_vs_eager']:.1f}x" if row["speedup_vs_eager"] else "-"
        mem = f"{row['extra_mem_mb']:.0f}" if row["extra_mem_mb"] is not None else "-"
        device = f"{row['device_ms']:.3f}" if row.get("device_ms") is not None else "-"  # older files lack it
        out.append(f"| {row['op']} | {row['dist']} | {row['K']} | {row['rounding']} | {row['backend']} | "
                   f"{row['ms']:.3f} | {row['x_roofline']:.2f} | {device} | {eager} | {speed} | {mem} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(sys.argv[1]))
