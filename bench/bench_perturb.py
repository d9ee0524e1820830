"""Microbenchmark of perturb_ and combine_ on an OPT-shaped parameter list, against eager PyTorch and the
copy roofline measured in the same run.

GPU: OPT-1.3B shapes (388 tensors, 1.316e9 bf16 elements), device-event timing (triton.testing.do_bench,
median). CPU: a scaled-down model, wall-clock median, reference backend (Triton would be its interpreter).
Prints a table and writes JSON (default bench/results/perturb_<device>.json).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

import zokernels as zk
from zokernels import backends

OPT_1_3B = dict(hidden=2048, ffn=8192, vocab=50272, layers=24, positions=2050)
OPT_TINY = dict(hidden=128, ffn=512, vocab=2000, layers=2, positions=130)


def opt_shapes(hidden, ffn, vocab, layers, positions):
    """The parameter shapes of an OPT decoder (tied LM head), in named_parameters() order."""
    shapes = [(vocab, hidden), (positions, hidden)]
    for _ in range(layers):
        for _ in range(4):  # k, v, q, out projections
            shapes += [(hidden, hidden), (hidden,)]
        shapes += [(hidden,), (hidden,), (ffn, hidden), (ffn,), (hidden, ffn), (hidden,), (hidden,), (hidden,)]
    return shapes + [(hidden,), (hidden,)]


def copy_roofline(bench, numel, dtype, device, generator=None):
    """The copy roofline: bench's time for one read and one write of numel elements of dtype (a copy_ between two
    buffers that live only here)."""
    src = torch.randn(numel, device=device, dtype=dtype, generator=generator)
    dst = torch.empty_like(src)
    return bench(lambda: dst.copy_(src))


def timer(device):
    if device.type == "cuda":
        import triton.testing

        def run(fn, rep_ms=400):
            return triton.testing.do_bench(fn, warmup=50, rep=rep_ms, return_mode="median")
    else:
        def run(fn, rep_ms=400):
            fn()
            times = []
            deadline = time.perf_counter() + rep_ms / 1000
            while len(times) < 5 or time.perf_counter() < deadline:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1000)
            return statistics.median(times)
    return run


def host_ms(call, device, n=20):
    """Host time of one call (launches queued without waiting): where it is not below the device time, the timed
    figure is the host's, not the kernel's."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        call()
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.synchronize()
    return elapsed / n * 1e3


def device_ms(call, device, host, n=10, repeats=7):
    """Device time of one call with the host out of the way: the GPU sleeps while the host queues n calls (host:
    host_ms of the call), then runs them back to back between two events; median of `repeats`. Where host_ms is
    near the do_bench figure, this is the kernels' own time."""
    if device.type != "cuda":
        return None
    cycles = int(host * n * 1e-3 * 3 * 2e9)  # three times the queueing time of n calls, at <= 2 GHz
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(cycles)
        begin.record()
        for _ in range(n):
            call()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end) / n)
    return sorted(times)[repeats // 2]


def peak_extra_mb(fn, device):
    """Device memory the call allocates beyond what exists before it (MB)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 1e6


def write_result(result, out, stem):
    """Write a benchmark's result dict as JSON to `out`, by default bench/results/<stem>_<device>.json."""
    out = out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                              f"{stem}_{result['device'].replace(' ', '_')}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")
    return out


def eager_mezo(params, seed, scale):
    """MeZO's idiom: reseed, then per parameter draw z with torch.normal and rebind p.data = p.data + scale * z."""
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(mean=0, std=1, size=p.size(), device=p.device, dtype=p.dtype)
        p.data = p.data + scale * z


def eager_inplace(params, seed, scale):
    torch.manual_seed(seed)
    for p in params:
        p.add_(torch.randn_like(p), alpha=scale)


def eager_combine(params, seeds, coeffs):
    """K directions the eager way: one reseeded pass over all parameters per direction."""
    for s, c in zip(seeds, coeffs):
        eager_inplace(params, s, c)


def elementwise_class(row):
    """The "auto" op class of a perturb_/combine_ row, None for other rows."""
    return backends.op_class(row["dist"], row["rounding"], row["K"]) if row["op"] in ("perturb_", "combine_") else None


DEVICE_TIE = 0.005  # relative; device ms of one build moved 0.1-0.5% between calls on the H100 (bench/NOTES.md)


def auto_choices(rows, op_class=elementwise_class):
    """{op class: fastest backend} from one run's rows, for op classes measured on at least two backends. Rows
    rank by device_ms where they have it (the kernels' own time: a call inside a step is queued behind GPU work,
    while the timed figure of a host-bound row is the benchmark host's time per call), else by ms. Device times
    within DEVICE_TIE of the fastest are a tie, which the lower host_ms breaks (then ms)."""
    by_class = {}
    for r in rows:
        key = op_class(r)
        if key is not None:
            by_class.setdefault(key, []).append(r)
    choices = {}
    for key, class_rows in sorted(by_class.items()):
        if len({r["backend"] for r in class_rows}) < 2:
            continue
        kernel_ms = [r["ms"] if r.get("device_ms") is None else r["device_ms"] for r in class_rows]
        fastest = min(kernel_ms)
        tied = [r for r, ms in zip(class_rows, kernel_ms) if ms <= fastest * (1 + DEVICE_TIE)]
        choices[key] = min(tied, key=lambda r: (r.get("host_ms", r["ms"]), r["ms"]))["backend"]
    return choices


def _op_family(key):
    family = key.split("/")[0]
    return family if family in ("lowrank", "delta_add") else "elementwise"


def save_auto_choices(result, choices, path=backends.AUTO_CHOICES_FILE):
    """Merge one run's choices for its device into the package's auto_choices.json: they replace that device's
    choices of the same op family (elementwise, lowrank or delta_add) and keep the other families'; `runs` records
    which run (date, torch, triton) each family's choices come from."""
    try:
        with open(path) as f:
            table = json.load(f)
    except FileNotFoundError:
        table = {}
    entry = table.get(result["device"], {})
    runs = entry.get("runs") or ({"elementwise": {k: entry[k] for k in ("date", "torch", "triton")}}
                                 if "date" in entry else {})
    families = {_op_family(k) for k in choices}
    merged = {k: v for k, v in entry.get("choices", {}).items() if _op_family(k) not in families}
    merged.update(choices)
    for family in families:
        runs[family] = dict(date=result["date"], torch=result["torch"], triton=result["triton"])
    table[result["device"]] = dict(choices=dict(sorted(merged.items())), runs=runs)
    with open(path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    return table[result["device"]]["choices"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/perturb_<device>.json)")
    ap.add_argument("--ks", default="1,4,16,64")
    ap.add_argument("--backends", default="auto", help="comma-separated; auto: every compiled backend available")
    ap.add_argument("--quick", action="store_true", help="fewer variants (smoke run)")
    ap.add_argument("--save-auto", action="store_true",
                    help="write the fastest backend per op class of this run into zokernels/backends/auto_choices.json")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dims = OPT_1_3B if device.type == "cuda" else OPT_TINY
    dtype = torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(0)
    params = [torch.randn(s, device=device, dtype=dtype, generator=gen) for s in opt_shapes(**dims)]
    numel = sum(p.numel() for p in params)
    nbytes = numel * params[0].element_size()
    if args.backends == "auto":
        names = [b for b in ("cuda", "triton") if backends.is_available(b, device)] or ["reference"]
    else:
        names = args.backends.split(",")
    bench = timer(device)
    ks = [int(k) for k in args.ks.split(",")]

    roofline = copy_roofline(bench, numel, dtype, device, gen)
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'}: "
          f"{len(params)} tensors, {numel / 1e9:.3f}e9 {dtype} elements; backends {', '.join(names)}; "
          f"copy roofline {roofline:.3f} ms ({2 * nbytes / roofline / 1e6:.0f} GB/s read+write)", flush=True)

    rows = []

    def record(op, dist, k, rounding, ms, eager_ms=None, eager_kind=None, extra_mb=None, backend="eager", call=None):
        """One row; with `call` (a fused op of at most a few ms) also its host time and its device time with the
        host out of the way (bench_lowrank's columns): where they differ from ms, the row is host-bound."""
        host = host_ms(call, device) if call is not None and ms < 10 else None
        device_only = device_ms(call, device, host) if host is not None else None
        rows.append(dict(op=op, dist=dist, K=k, rounding=rounding, backend=backend, ms=ms, eager_ms=eager_ms,
                         eager_kind=eager_kind, roofline_ms=roofline, x_roofline=ms / roofline,
                         speedup_vs_eager=(eager_ms / ms) if eager_ms else None, extra_mem_mb=extra_mb,
                         host_ms=host, device_ms=device_only))
        print(f"  {op:9s} {backend:9s} {dist:10s} K={k:<3d} {rounding:10s} {ms:9.3f} ms  {ms / roofline:5.2f}x roofline"
              + (f"  eager {eager_ms:9.2f} ms ({eager_ms / ms:5.1f}x)" if eager_ms else "")
              + (f"  host {host:6.3f} ms" if host is not None else "")
              + (f"  device {device_only:6.3f} ms" if device_only is not None else ""), flush=True)

    seeds = iter(range(10**6))
    eager_ms = bench(lambda: eager_mezo(params, next(seeds), 1e-3))
    eager_extra = peak_extra_mb(lambda: eager_mezo(params, 1, 1e-3), device)
    inplace_ms = bench(lambda: eager_inplace(params, next(seeds), 1e-3))
    record("eager", "gaussian", 1, "nearest", eager_ms, extra_mb=eager_extra)
    rows[-1]["backend"] = "eager MeZO idiom (torch.normal, p.data = p.data + scale*z)"
    record("eager", "gaussian", 1, "nearest", inplace_ms, extra_mb=peak_extra_mb(lambda: eager_inplace(params, 1, 1e-3), device))
    rows[-1]["backend"] = "eager in place (randn_like, add_)"

    eager_k = {k: bench(lambda: eager_combine(params, range(k), [1e-3 / k] * k), rep_ms=1 if k > 4 else 400)
               for k in ks if k <= 16 or not args.quick}
    for backend in names:
        for dist in ("gaussian", "rademacher"):
            for rounding in (("nearest",) if args.quick else ("nearest", "stochastic")):
                fn = lambda: zk.perturb_(params, seed=next(seeds), scale=1e-3, dist=dist, rounding=rounding, backend=backend)  # noqa: E731
                record("perturb_", dist, 1, rounding, bench(fn), eager_ms if dist == "gaussian" else None, "mezo",
                       peak_extra_mb(fn, device), backend, call=fn)
        for k in ks:
            coeffs = torch.full((k,), 1e-3 / k, device=device)
            for dist in ("gaussian", "rademacher"):
                fn = lambda: zk.combine_(params, seed=next(seeds), coeffs=coeffs, dist=dist, rounding="stochastic", backend=backend)  # noqa: E731
                record("combine_", dist, k, "stochastic", bench(fn, rep_ms=400 if k < 64 else 1500),
                       eager_k.get(k) if dist == "gaussian" else None, "eager K passes", peak_extra_mb(fn, device), backend,
                       call=fn)

    import triton
    result = dict(
        device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        torch=torch.__version__, triton=triton.__version__, zokernels=zk.__version__,
        date=datetime.date.today().isoformat(), shapes="OPT-1.3B" if dims is OPT_1_3B else "OPT-tiny",
        tensors=len(params), elements=numel, dtype=str(dtype), roofline_ms=roofline,
        roofline_gbps=2 * nbytes / roofline / 1e6, rows=rows)
    write_result(result, args.out, "perturb")
    if args.save_auto:
        print(f"auto choices for {result['device']}: {save_auto_choices(result, auto_choices(result['rows']))}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
