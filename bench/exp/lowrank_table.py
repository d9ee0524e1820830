"""Table of one-call rows (device ms and x copy roofline) of several bench_lowrank JSONs: python3
bench/exp/lowrank_table.py OUT_DIR NAME... reads OUT_DIR/lowrank_NAME.json (the device scripts' variants)."""
import json, sys
out, variants = sys.argv[1], sys.argv[2:]
rows = {}
for v in variants:
    try: data = json.load(open(f"{out}/lowrank_{v}.json"))
    except Exception as e: print(v, "missing", e); continue
    print(v, "copy roofline %.3f ms" % data["roofline_ms"])
    for r in data["rows"]:
        if r["calls"] == "one call":
            ms = r.get("device_ms") or r["ms"]  # the kernels' own time where the row has it
            rows.setdefault((r["rounding"], r["r"], r["K"]), {})[v] = (ms, ms / data["roofline_ms"])
print("device ms (x copy roofline)")
print("rounding r K | " + " | ".join(variants))
for key in sorted(rows):
    print(*key, "|", " | ".join("%.3f (%.2fx)" % rows[key].get(v, (float("nan"),) * 2) for v in variants))
