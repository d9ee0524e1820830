"""Where the time of one optimizer step goes: torch.profiler over a few steps of AGZO and ZO-Act (and exact
MeZO for comparison) on bench_step's model. Prints, per optimizer, the top operators by self device time and
by self host time, and the step's wall time. A diagnostic for bench/NOTES.md, not a benchmark."""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import build  # noqa: E402

import zokernels as zk  # noqa: E402


def profile(name, step, device, rows):
    for _ in range(2):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(3):
            step()
        sync()
    wall = (time.perf_counter() - t0) / 3 * 1e3
    print(f"\n=== {name}: {wall:.1f} ms per step (wall, under the profiler)")
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))
    if device.type == "cuda":
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def host_profile(name, step, device, rows):
    """cProfile of three steps: where the host's time goes (Python, launches, syncs) when a step is host-bound."""
    import cProfile
    import pstats

    for _ in range(2):
        step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    prof.disable()
    print(f"\n=== {name}: host profile of 3 steps (cProfile, by own time)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=14)
    ap.add_argument("--only", default=None, help="one optimizer: mezo, agzo or zoact")
    ap.add_argument("--host", action="store_true", help="cProfile instead of torch.profiler")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, ids, _ = build(device, args.quick)

    @torch.no_grad()
    def closure():
        return model(input_ids=ids, labels=ids).loss

    run = host_profile if args.host else profile
    makers = {
        "mezo": ("MeZO exact", lambda: zk.optim.MeZO(list(model.parameters()), lr=1e-6, mode="exact")),
        "agzo": ("AGZO r=1", lambda: zk.optim.AGZO(model, lr=1e-6)),
        "zoact": ("ZO-Act", lambda: zk.optim.ZOAct(model, lr=1e-6, calibration=closure,
                                                   rank=16 if device.type == "cuda" and not args.quick else 4)),
    }
    for key, (name, make) in makers.items():  # ZO-Act last: it wraps the model's linears
        if args.only in (None, key):
            opt = make()
            run(name, lambda: opt.step(closure), device, args.rows)


if __name__ == "__main__":
    main()
