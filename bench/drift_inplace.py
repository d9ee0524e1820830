"""Weight drift of MeZO's in-place perturb/restore in low precision, against zokernels' exact evaluation.

A tiny OPT (random weights) takes N optimizer steps at lr = 0 in each mode: the weights should not move at all.
Reports the fraction of weights whose bits changed and the relative drift |W_N - W_0| / |W_0|, per dtype.
Writes JSON (default bench/results/drift_inplace_<device>.json).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_perturb import write_result  # noqa: E402
from tests.zo_problems import tiny_opt  # noqa: E402

import zokernels as zk  # noqa: E402


def drift(dtype, mode, steps, device):
    model, closure = tiny_opt(dtype, device=device)
    start = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    opt = zk.optim.MeZO(model.parameters(), lr=0.0, eps=1e-3, mode=mode)
    for _ in range(steps):
        opt.step(closure)
    end = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    return dict(dtype=str(dtype).replace("torch.", ""), mode=mode, steps=steps,
                changed_fraction=(end != start).float().mean().item(),
                relative_drift=((end - start).norm() / start.norm()).item())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = [drift(dtype, mode, args.steps, device) for dtype in (torch.bfloat16, torch.float16)
            for mode in ("inplace", "exact")]
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print("| dtype | mode | steps at lr=0 | weights changed | relative drift |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['mode']} | {r['steps']} | {100 * r['changed_fraction']:.1f}% | {r['relative_drift']:.2e} |")
    write_result(dict(device=name, torch=torch.__version__, model="tiny OPT (tests/zo_problems.tiny_opt)", rows=rows),
                 args.out, "drift_inplace")


if __name__ == "__main__":
    main()
