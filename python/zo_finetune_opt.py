"""Recipe: zeroth-order fine-tuning of a transformers causal LM with zokernels' MeZO, BSZO, AGZO or ZO-Act.

The model here is a small OPT with random weights (no downloads); swap in OPTForCausalLM.from_pretrained(...)
and your own batches for real use. The loop is the whole integration: a closure that runs the forward pass on
the batch and returns the loss, and opt.step(closure). Weights stay bf16; evaluation is exact (the stored
weights are never perturbed in place) and updates round stochastically.

    python python/zo_finetune_opt.py --method bszo --k 4 --steps 300
    python python/zo_finetune_opt.py --method zoact --rank 8 --steps 300   # coefficients only, Adam
    python python/zo_finetune_opt.py --method zoact --base-bits 4          # ... around frozen int4 linears
"""
import argparse

import torch
from transformers import OPTConfig, OPTForCausalLM

import zokernels
import zokernels.quant
from zokernels.zo.subspace import target_linears


def make_model_and_batches(device, dtype, seed=0):
    config = OPTConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, ffn_dim=128, num_attention_heads=4,
                       max_position_embeddings=64, word_embed_proj_dim=64, dropout=0.0, attention_dropout=0.0,
                       use_cache=False)  # loss evaluations keep no key/value cache
    torch.manual_seed(seed)
    model = OPTForCausalLM(config).to(device=device, dtype=dtype).eval()
    # the task: continue a few fixed token sequences (a stand-in for a fine-tuning set)
    data = torch.randint(0, 8, (32, 16), generator=torch.Generator().manual_seed(seed + 1))  # 8 of 128 tokens used
    return model, [data[i:i + 8].to(device) for i in range(0, 32, 8)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["mezo", "bszo", "agzo", "zoact"], default="bszo")
    ap.add_argument("--k", type=int, default=4, help="BSZO subspace dimension")
    ap.add_argument("--rank", type=int, default=None, help="activation-subspace rank (default: AGZO 1, ZO-Act 8)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eps", type=float, default=1e-2)
    ap.add_argument("--prior-var", type=float, default=100.0,
                    help="BSZO prior variance: the scale of |z^T grad|^2 up to which differences are trusted")
    ap.add_argument("--base-bits", type=int, choices=[4, 8], default=None,
                    help="ZO-Act: quantize the frozen linear layers to int4 / int8 weight-only first")
    args = ap.parse_args(argv)
    if args.base_bits and args.method != "zoact":
        ap.error("--base-bits applies to --method zoact (the only method here that never writes the linears)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, batches = make_model_and_batches(device, torch.bfloat16)
    if args.method == "mezo":
        opt = zokernels.optim.MeZO(model.parameters(), lr=args.lr, eps=args.eps)
    elif args.method == "bszo":
        opt = zokernels.optim.BSZO(model.parameters(), lr=args.lr, eps=args.eps, k=args.k, prior_var=args.prior_var)
    elif args.method == "agzo":  # linear layers only, along activation subspaces
        opt = zokernels.optim.AGZO(model, lr=args.lr, eps=args.eps, rank=args.rank or 1)
    else:  # ZO-Act: bases from one calibration pass over the data, then only the coefficients train
        if args.base_bits:
            zokernels.quant.quantize_linears(model, [name for name, _ in target_linears(model)], bits=args.base_bits)
        calibration = lambda: [model(input_ids=b) for b in batches]  # noqa: E731
        opt = zokernels.optim.ZOAct(model, lr=args.lr, eps=args.eps, rank=args.rank or 8, calibration=calibration)

    def full_loss():
        with torch.no_grad():
            return sum(model(input_ids=b, labels=b).loss.float().item() for b in batches) / len(batches)

    first = full_loss()
    for step in range(args.steps):
        batch = batches[step % len(batches)]
        opt.step(lambda: model(input_ids=batch, labels=batch).loss)
    last = full_loss()
    print(f"{args.method}: loss {first:.4f} -> {last:.4f} after {args.steps} steps, {opt.forward_passes} forward "
          f"passes, {opt.skipped_steps} skipped, backend {zokernels.backend_for(device)}")
    return first, last


if __name__ == "__main__":
    main()
