"""Per-round ratios of an A/B in one bench_step JSON: python3 bench/exp/step_ratios.py STEP.json prints the forward
(the first row) per round, then row 1 / row 2 and row 3 / row 4 per round (the device scripts' --rows A1,B1,A2,B2
order; each ratio within one round, so both rows saw the same host)."""
import json
import sys

rows = {r["name"]: r["rounds"] for r in json.load(open(sys.argv[1]))["rows"]}
names = list(rows)
print("forward per round:", " ".join("%.1f" % x for x in rows[names[0]]))
for a, b in [(names[1], names[2]), (names[3], names[4])]:
    print(a, "/", b, "per round:", " ".join("%.3f" % (x / y) for x, y in zip(rows[a], rows[b])))
