"""Small problems for the ZO step-function tests: a least-squares model, a tiny MLP, a tiny OPT (random weights)."""
import torch


def least_squares(n=256, d=16, noise=0.01, seed=0, dtype=torch.float32):
    """(model, closure, optimum loss): y = x w + b + noise, fitted by a Linear(d, 1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    y = x @ torch.randn(d, 1, generator=gen) + 0.5 + noise * torch.randn(n, 1, generator=gen)
    model = torch.nn.Linear(d, 1).to(dtype)
    ones = torch.cat([x, torch.ones(n, 1)], dim=1)
    solution = torch.linalg.lstsq(ones.double(), y.double()).solution
    optimum = torch.mean((ones.double() @ solution - y.double()) ** 2).item()

    def closure():
        return torch.nn.functional.mse_loss(model(x.to(dtype)).float(), y)

    return model, closure, optimum


def mlp(seed=0, dtype=torch.float32):
    """(model, closure): a 2-layer tanh MLP regression, small enough for many ZO steps."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=gen)
    y = torch.sin(x.sum(1, keepdim=True))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.Tanh(), torch.nn.Linear(12, 1)).to(dtype)

    def closure():
        return torch.nn.functional.mse_loss(model(x.to(dtype)).float(), y)

    return model, closure


def true_gradient(model, closure):
    """Autograd's gradient of closure() at the model's weights, flattened in parameters() order."""
    params = list(model.parameters())
    with torch.enable_grad():
        loss = closure()
        grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1).double() for g in grads])


def flat(model):
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tiny_opt(dtype=torch.bfloat16, seed=0, device="cpu"):
    """(model, closure): a 2-layer OPT with tied input/output embeddings, random weights, a fixed batch
    (closure.input_ids)."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
                       max_position_embeddings=32, word_embed_proj_dim=32, dropout=0.0, attention_dropout=0.0,
                       tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = OPTForCausalLM(config).to(device=device, dtype=dtype).eval()
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(seed + 1)).to(device)

    def closure():
        return model(input_ids=ids, labels=ids).loss.float()

    closure.input_ids = ids  # the batch, for tests that evaluate a copy of the model on it
    return model, closure


def force_split_projection(monkeypatch):
    """Makes SharedProjection's split path run on the CPU: mm with float32 output reported available and
    ops.lowrank_project_split replaced by a float32 stand-in (x (V_hi + V_lo)). Returns the list that records each
    basis ops.split_basis is called with."""
    from zokernels import ops

    splits = []
    split_basis = ops.split_basis
    monkeypatch.setattr(ops, "split_basis", lambda v, dtype: splits.append(v) or split_basis(v, dtype))
    monkeypatch.setattr(ops, "mm_float32_output", lambda device, dtype: True)
    monkeypatch.setattr(ops, "lowrank_project_split", lambda x, split: x.float() @ (
        split[:, :split.shape[1] // 2].float() + split[:, split.shape[1] // 2:].float()))
    return splits
