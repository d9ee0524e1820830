"""Step benchmark of the ZO optimizers on an OPT-shaped causal LM (random weights, a fixed random batch).

GPU: OPT-1.3B from a transformers config, bf16, batch 16 x 128 tokens; device-event timing of whole steps
(triton.testing.do_bench, median; each step's host syncs included), in interleaved rounds: every round times
every row once, and a row's figures are medians over rounds, its ratios taken within each round (a step is
partly host-bound, and the device host's speed drifts between and within runs: single blocks of 3 s per row
put the forward at 12.2 to 21.1 ms in runs of one tree; bench/NOTES.md). Rows: one forward pass (inference), an
eager MeZO step written the way princeton-nlp/MeZO does it (re-seed, torch.normal per parameter,
p.data = p.data + scale * z, restore, update), zokernels MeZO in both modes, BSZO (k = 2, 4, 8) in exact mode,
AGZO (rank 1, full parameter) and ZO-Act (rank 16, every linear layer but the tied head).
Peak memory of a row (peak_mb): the model and batch, plus what the row keeps between steps (its optimizer's state
and scratch: allocated after construction and a first step, less before), plus the step's transient peak above
that; the other rows' optimizers, alive for the rounds, are not counted. Against the inference forward's.
CPU: a tiny OPT, wall clock, no peaks.
Prints a table and writes JSON (default bench/results/step_<device>.json).
"""
import argparse
import datetime
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_perturb import eager_mezo, timer, write_result  # noqa: E402

import zokernels as zk  # noqa: E402
from zokernels.zo import PerturbedEvaluator, agzo, subspace  # noqa: E402

ROWS = ("eager", "mezo", "bszo", "agzo", "zoact")
OPT_1_3B = dict(hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32, vocab_size=50272,
                max_position_embeddings=2048, word_embed_proj_dim=2048)
OPT_TINY = dict(hidden_size=64, ffn_dim=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=512,
                max_position_embeddings=128, word_embed_proj_dim=64)


def build(device, quick):
    from transformers import OPTConfig, OPTForCausalLM

    # use_cache=False: a loss evaluation keeps no key/value cache (with it, every forward also built one)
    cfg = OPTConfig(**(OPT_TINY if quick or device.type != "cuda" else OPT_1_3B), dropout=0.0, attention_dropout=0.0,
                    use_cache=False)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = OPTForCausalLM(cfg).to(dtype).eval()
    batch, seq = (16, 128) if device.type == "cuda" and not quick else (2, 16)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    return model, ids, dtype


def eager_mezo_step(params, closure, seed, eps=1e-3, lr=1e-6):
    """MeZO's reference idiom (bench_perturb.eager_mezo: z regenerated per parameter from a re-seeded global
    generator, p.data = p.data + scale * z): perturb, evaluate, flip, evaluate, restore, update."""
    eager_mezo(params, seed, eps)
    loss_plus = closure()
    eager_mezo(params, seed, -2 * eps)
    loss_minus = closure()
    eager_mezo(params, seed, eps)
    g = float((loss_plus - loss_minus) / (2 * eps))
    eager_mezo(params, seed, -lr * g)
    return loss_plus


def allocated_bytes(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    return 0


def build_and_measure(make, device):
    """make() builds a row (its optimizer) and returns its step function; runs it once. Returns (fn, state bytes:
    what the row keeps allocated after the build and that step, transient bytes: one step's peak above that)."""
    before = allocated_bytes(device)
    fn = make()
    fn()
    kept = allocated_bytes(device)
    if device.type != "cuda":
        return fn, 0, 0
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return fn, kept - before, torch.cuda.max_memory_allocated() - kept


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model (a smoke test)")
    ap.add_argument("--ks", default="2,4,8")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}, or "
                    "zoact-hooks: ZO-Act's coefficients evaluated through PerturbedEvaluator's module hooks (the "
                    "evaluation before CoefficientPerturbation), or agzo-eager: AGZO with cuda_graphs=False (its range "
                    "finder launched op by op), agzo-split: AGZO with its projections x V through the split basis "
                    "(agzo.SPLIT_PROJECTION; off by default), zoact-f32: ZO-Act with its projections reading x as a "
                    "float32 copy (ops.lowrank_project, as AGZO by default), for comparison in one run")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each times every row once)")
    ap.add_argument("--alternate", action="store_true",
                    help="time the rows in reverse order in every second round (no row always runs first in an A/B)")
    ap.add_argument("--rep-ms", type=int, default=600, help="do_bench's timed span per row and round")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    wanted = set(args.rows.split(","))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, ids, dtype = build(device, args.quick)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    run = timer(device)

    @torch.no_grad()
    def closure():
        return model(input_ids=ids, labels=ids).loss

    counter = iter(range(10**9))
    rows, specs = [], []  # specs: (fn, prepare) per row, prepare run before each of its timings
    closure()  # first: the libraries' lazily allocated workspaces (cuBLAS) count with the model, not the first row
    model_bytes = allocated_bytes(device)  # the model, the batch and those workspaces

    def add(name, make, forwards, prepare, state_from=None, split=True, agzo_split=False):
        """state_from: the index of a row whose optimizer this row reuses (its state counts for this row too).
        split=False: the row's projections read x as float32 (subspace.SPLIT_PROJECTION off while it runs);
        agzo_split: AGZO's projections take the split path (agzo.SPLIT_PROJECTION on while it runs)."""
        def prepare_row(prepare=prepare):
            subspace.SPLIT_PROJECTION = split
            agzo.SPLIT_PROJECTION = agzo_split
            prepare()
        prepare = prepare_row
        prepare()
        fn, state, transient = build_and_measure(make, device)
        if state_from is not None:
            state += rows[state_from]["state_bytes"]
        peak = (model_bytes + state + transient) / 2**20 if device.type == "cuda" else None
        rows.append(dict(name=name, forwards=forwards, peak_mb=peak, state_bytes=state, transient_bytes=transient))
        specs.append((fn, prepare))
        print(f"  {name:32s} {forwards} forward(s)  peak {peak} MB", flush=True)

    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}: OPT {n / 1e9:.3f}e9 "
          f"{dtype} parameters, batch {tuple(ids.shape)}, backend {zk.backend_for(device)}", flush=True)
    wrapped = []  # ZO-Act's (parent, attribute, ZOActLinear): installed for its rows, the plain linears otherwise

    def install_zoact(on):
        for parent, child, layer in wrapped:
            setattr(parent, child, layer if on else layer.base)

    plain = lambda: install_zoact(False)  # noqa: E731
    add("forward (inference)", lambda: closure, 1, plain)  # always: the other rows are read against it
    if "eager" in wanted:
        add("eager MeZO step (inplace, RNE)", lambda: lambda: eager_mezo_step(params, closure, next(counter)), 2,
            plain)

    def stepper(optimizer_class, *args, **kwargs):
        """make() for add: builds the optimizer and returns its step (bound to it, not to a loop variable)."""
        def make():
            opt = optimizer_class(*args, **kwargs)
            return lambda: opt.step(closure)
        return make

    for mode in ("inplace", "exact") if "mezo" in wanted else ():
        add(f"zokernels MeZO ({mode})", stepper(zk.optim.MeZO, params, lr=1e-6, mode=mode), 2, plain)
    for k in [int(v) for v in args.ks.split(",")] if "bszo" in wanted else ():
        add(f"zokernels BSZO k={k} (exact)", stepper(zk.optim.BSZO, params, lr=1e-6, k=k), k + 1, plain)
    rank = 16 if device.type == "cuda" and not args.quick else 4
    if "agzo" in wanted:  # built before ZO-Act, which freezes the base weights it wraps
        add("zokernels AGZO r=1 (paper default, full parameter)", stepper(zk.optim.AGZO, model, lr=1e-6), 2, plain)
    if "agzo-split" in wanted:
        add("zokernels AGZO r=1, split projections", stepper(zk.optim.AGZO, model, lr=1e-6), 2, plain,
            agzo_split=True)
    if "agzo-eager" in wanted:
        add("zokernels AGZO r=1, bases without CUDA graphs", stepper(zk.optim.AGZO, model, lr=1e-6, cuda_graphs=False),
            2, plain)
    if wanted & {"zoact", "zoact-hooks", "zoact-f32"}:
        zoact = {}

        def make_zoact():
            opt = zoact["opt"] = zk.optim.ZOAct(model, lr=1e-6, rank=rank, calibration=closure)  # wraps the linears
            zoact["by_coefficients"] = opt._perturbation
            for name, layer in opt.layers:
                parent, _, child = name.rpartition(".")
                wrapped.append((model.get_submodule(parent) if parent else model, child, layer))
            return lambda: opt.step(closure)

        def use(key):
            def prepare():
                install_zoact(True)
                if key in zoact:  # (before the row is built: nothing to choose yet)
                    zoact["opt"]._perturbation = zoact[key]
            return prepare

        def make_hooks():  # the same optimizer, its C's evaluated through module hooks
            if "opt" not in zoact:
                make_zoact()
            zoact["hooks"] = PerturbedEvaluator([[layer.coeff for _, layer in zoact["opt"].layers]])  # one group
            use("hooks")()
            return lambda: zoact["opt"].step(closure)

        zoact_row = len(rows) if "zoact" in wanted else None  # the row whose state the other ZO-Act rows share
        if "zoact" in wanted:
            add(f"zokernels ZO-Act r={rank} (linears, Adam)", make_zoact, 2, use("by_coefficients"))
        if "zoact-f32" in wanted:  # the same optimizer
            add(f"zokernels ZO-Act r={rank}, float32 projections", make_zoact if "zoact" not in wanted else
                lambda: lambda: zoact["opt"].step(closure), 2, use("by_coefficients"),
                state_from=zoact_row, split=False)
        if "zoact-hooks" in wanted:
            add(f"ZO-Act r={rank}, C's evaluated by module hooks", make_hooks, 2, use("hooks"),
                state_from=zoact_row)
    times = [[] for _ in rows]
    for round_ in range(args.rounds):
        order = list(zip(times, specs))
        for t, (fn, prepare) in order[::-1] if args.alternate and round_ % 2 else order:
            prepare()
            t.append(run(fn, rep_ms=args.rep_ms))
        print(f"  round {round_ + 1}: " + " ".join(f"{t[-1]:.1f}" for t in times), flush=True)
    plain()
    eager = 1 if "eager" in wanted else None
    for r, t in zip(rows, times):
        r.update(ms=statistics.median(t), ms_min=min(t), ms_max=max(t), rounds=t)
        r["ms_per_forward"] = r["ms"] / r["forwards"]
        r["x_forwards"] = statistics.median(x / (f * r["forwards"]) for x, f in zip(t, times[0]))
        r["x_eager_mezo_step"] = statistics.median(x / e for x, e in zip(t, times[eager])) if eager else float("nan")
        r["peak_x_inference"] = r["peak_mb"] / rows[0]["peak_mb"] if rows[0]["peak_mb"] else None
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = dict(device=device_name, torch=torch.__version__, date=datetime.date.today().isoformat(),
                  parameters=n, dtype=str(dtype), batch=list(ids.shape), backend=zk.backend_for(device),
                  rounds=args.rounds, rep_ms=args.rep_ms, rows=rows)
    print(f"\n{args.rounds} rounds; medians, ratios within each round")
    print("| step | ms | ms range | forwards | ms / (forwards x forward ms) | x eager MeZO step | peak MB | "
          "x inference peak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['peak_mb']:.0f} | {r['peak_x_inference']:.3f}" if r["peak_mb"] else "- | -"
        print(f"| {r['name']} | {r['ms']:.2f} | {r['ms_min']:.1f}-{r['ms_max']:.1f} | {r['forwards']} | "
              f"{r['x_forwards']:.2f} | {r['x_eager_mezo_step']:.2f} | {peak} |")
    write_result(result, args.out, "step")


if __name__ == "__main__":
    main()
