"""Step benchmark of the ZO optimizers on an OPT-shaped causal LM (random weights, a fixed random batch).

GPU: OPT-1.3B from a transformers config, bf16, batch 16 x 128 tokens; device-event timing of whole steps
(triton.testing.do_bench, median; each step's host syncs included). Rows: one forward pass (inference), an
eager MeZO step written the way princeton-nlp/MeZO does it (re-seed, torch.normal per parameter,
p.data = p.data + scale * z, restore, update), zokernels MeZO in both modes, BSZO (k = 2, 4, 8) in exact mode,
AGZO (rank 1, full parameter) and ZO-Act (rank 16, every linear layer but the tied head).
Peak memory is max_memory_allocated during a step, against the inference forward's. CPU: a tiny OPT, wall clock.
Prints a table and writes JSON (default bench/results/step_<device>.json).
"""
import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_perturb import eager_mezo, timer, write_result  # noqa: E402

import zokernels as zk  # noqa: E402
from zokernels.zo import PerturbedEvaluator  # noqa: E402

ROWS = ("eager", "mezo", "bszo", "agzo", "zoact")
OPT_1_3B = dict(hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32, vocab_size=50272,
                max_position_embeddings=2048, word_embed_proj_dim=2048)
OPT_TINY = dict(hidden_size=64, ffn_dim=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=512,
                max_position_embeddings=128, word_embed_proj_dim=64)


def build(device, quick):
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(**(OPT_TINY if quick or device.type != "cuda" else OPT_1_3B), dropout=0.0, attention_dropout=0.0)
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


def peak_mb(fn, device):
    if device.type != "cuda":
        return None
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model (a smoke test)")
    ap.add_argument("--ks", default="2,4,8")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}, or "
                    "zoact-hooks: ZO-Act's coefficients evaluated through PerturbedEvaluator's module hooks (the "
                    "evaluation before CoefficientPerturbation), for comparison in one run")
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
    rows = []

    def add(name, fn, forwards, rep_ms=3000):
        ms = run(fn, rep_ms=rep_ms)
        rows.append(dict(name=name, ms=ms, forwards=forwards, peak_mb=peak_mb(fn, device)))
        print(f"  {name:32s} {ms:9.2f} ms  {forwards} forward(s)  peak {rows[-1]['peak_mb']} MB", flush=True)

    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}: OPT {n / 1e9:.3f}e9 "
          f"{dtype} parameters, batch {tuple(ids.shape)}, backend {zk.backend_for(device)}", flush=True)
    add("forward (inference)", closure, 1)  # always: the other rows are read against it
    if "eager" in wanted:
        add("eager MeZO step (inplace, RNE)", lambda: eager_mezo_step(params, closure, next(counter)), 2)
    for mode in ("inplace", "exact") if "mezo" in wanted else ():
        opt = zk.optim.MeZO(params, lr=1e-6, mode=mode)
        add(f"zokernels MeZO ({mode})", lambda opt=opt: opt.step(closure), 2)
    for k in [int(v) for v in args.ks.split(",")] if "bszo" in wanted else ():
        opt = zk.optim.BSZO(params, lr=1e-6, k=k)
        add(f"zokernels BSZO k={k} (exact)", lambda opt=opt: opt.step(closure), k + 1)
    rank = 16 if device.type == "cuda" and not args.quick else 4
    if "agzo" in wanted:
        opt = zk.optim.AGZO(model, lr=1e-6)
        add("zokernels AGZO r=1 (paper default, full parameter)", lambda: opt.step(closure), 2)
    if wanted & {"zoact", "zoact-hooks"}:
        opt = zk.optim.ZOAct(model, lr=1e-6, rank=rank, calibration=closure)  # wraps the linears: the last rows
        if "zoact" in wanted:
            add(f"zokernels ZO-Act r={rank} (linears, Adam)", lambda: opt.step(closure), 2)
        if "zoact-hooks" in wanted:
            opt._perturbation = PerturbedEvaluator([[layer.coeff for _, layer in opt.layers]])  # one group
            add(f"ZO-Act r={rank}, C's evaluated by module hooks", lambda: opt.step(closure), 2)
    forward_ms, forward_peak = rows[0]["ms"], rows[0]["peak_mb"]
    mezo_ms = rows[1]["ms"] if "eager" in wanted else float("nan")
    for r in rows:
        r["ms_per_forward"] = r["ms"] / r["forwards"]
        r["x_eager_mezo_step"] = r["ms"] / mezo_ms
        r["x_forwards"] = r["ms"] / (forward_ms * r["forwards"])
        r["peak_x_inference"] = r["peak_mb"] / forward_peak if forward_peak else None
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = dict(device=device_name, torch=torch.__version__, date=datetime.date.today().isoformat(),
                  parameters=n, dtype=str(dtype), batch=list(ids.shape), backend=zk.backend_for(device), rows=rows)
    print("\n| step | ms | forwards | ms / (forwards x forward ms) | x eager MeZO step | peak MB | x inference peak |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['peak_mb']:.0f} | {r['peak_x_inference']:.3f}" if r["peak_mb"] else "- | -"
        print(f"| {r['name']} | {r['ms']:.2f} | {r['forwards']} | {r['x_forwards']:.2f} | {r['x_eager_mezo_step']:.2f} | {peak} |")
    write_result(result, args.out, "step")


if __name__ == "__main__":
    main()
