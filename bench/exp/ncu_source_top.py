"""The SASS lines with the most warp-stall samples in an `ncu --page source --csv --print-source sass` export.

python ncu_source_top.py FILE.csv [N]: the top N lines with their share of all samples and, per line, the stall
reasons (columns named "stall_*" or "... Stall ...") that hold most of its samples.
"""
import csv
import sys

path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30
lines = open(path, newline="").read().splitlines()
start = next((i for i, ln in enumerate(lines) if "Source" in ln and "Warp Stall Sampling" in ln), 0)
rows = list(csv.DictReader(lines[start:]))
if not rows:
    print("no rows in", path, "; head:", lines[:5])
    sys.exit(0)
cols = list(rows[0])
total_col = next((c for c in cols if "Warp Stall Sampling (All" in c), None)
if total_col is None:
    print("no stall-sampling column; columns:", cols[:40])
    sys.exit(0)


def num(x):
    try:
        return float(str(x).replace(",", ""))
    except ValueError:
        return 0.0


reason_cols = [c for c in cols if c.startswith("stall_") or ("Stall" in c and "Sampling" not in c)]
total = sum(num(r[total_col]) for r in rows) or 1.0
print("samples", int(total), "| reason columns:", len(reason_cols))
for r in sorted(rows, key=lambda r: -num(r[total_col]))[:top]:
    reasons = sorted(((num(r[c]), c) for c in reason_cols), reverse=True)[:3]
    why = ", ".join("%s %.0f" % (c.replace("stall_", ""), v) for v, c in reasons if v > 0)
    src = r.get("Source", "")
    print("%5.1f%% %-6s %-60s | %s" % (100 * num(r[total_col]) / total, r.get("Address", r.get("#", "")), src[:60], why))
