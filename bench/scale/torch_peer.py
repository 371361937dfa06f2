"""PyTorch eager peer of bench/scale: the same prefill (last-position logits) and attribution (forward +
backward of the response tokens' log-probability, per-row scores against two weight-difference
directions) on the same synthetic llama checkpoints and token ids, float32 compute like fgsn.

    python3 torch_peer.py <spec.json>
spec: {"aligned", "base", "finetuned": model dirs, "prefill": [[ids]...], "attribution": [{"ids", "promptLength"}],
       "batch": int, "repeats": int}
Prints one JSON line: prefill/attribution tokens and best seconds, torch version and threads.
"""
import json
import math
import os
import struct
import sys
import time

import torch

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def load(folder):
    with open(os.path.join(folder, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        dtype = DTYPES[t["dtype"]]
        numel = math.prod(t["shape"]) if t["shape"] else 1
        out[name] = torch.frombuffer(data, dtype=dtype, count=numel, offset=begin).reshape(t["shape"]).float()
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    return out, cfg


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def forward(W, cfg, ids, mask):
    """Hidden states after the final norm, [B, T, H]; left padding via the attention mask."""
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", H // nh)
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    B, T = ids.shape
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = pos[..., None].float() * inv
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal[None, None] & mask[:, None, None, :].bool()
    bias = torch.zeros(B, 1, T, T).masked_fill(~allowed, float("-inf"))
    x = W["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(B, T, nh, hd).transpose(1, 2)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if nkv != nh:
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
        att = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(hd) + bias, dim=-1)
        a = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + a @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"], eps)
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ W[p + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"], eps)


def left_pad(seqs):
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, T - len(s):] = torch.tensor(s)
        mask[j, T - len(s):] = 1
    return ids, mask


def batches(items, n):
    return [items[i:i + n] for i in range(0, len(items), n)]


def main():
    spec = json.load(open(sys.argv[1]))
    torch.set_num_threads(os.cpu_count() or 1)
    W, cfg = load(spec["aligned"])
    lm_head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    batch, repeats = spec["batch"], spec["repeats"]

    # Prefill: last-position logits of every prompt, no graph kept.
    def prefill():
        with torch.no_grad():
            for b in batches(spec["prefill"], batch):
                ids, mask = left_pad(b)
                forward(W, cfg, ids, mask)[:, -1] @ lm_head.T

    prefill()
    best_prefill = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        prefill()
        best_prefill = min(best_prefill, time.perf_counter() - t)

    # Attribution: d/dW of the response tokens' log-probability, then per-row <grad, direction> for the
    # safety (aligned - base) and fine-tune (finetuned - aligned) directions, per linear weight.
    Wb, _ = load(spec["base"])
    Wf, _ = load(spec["finetuned"])
    linear = [n for n in W if n.startswith("model.layers.") and n.endswith("proj.weight")]
    dirs = [{n: W[n] - Wb[n] for n in linear}, {n: Wf[n] - W[n] for n in linear}]
    del Wb, Wf
    for n in linear:
        W[n].requires_grad_(True)

    def attribution():
        for b in batches(spec["attribution"], batch):
            ids, mask = left_pad([s["ids"] for s in b])
            T = ids.shape[1]
            target = torch.zeros_like(ids, dtype=torch.bool)
            for j, s in enumerate(b):
                target[j, T - len(s["ids"]) + s["promptLength"]:] = True
            hidden = forward(W, cfg, ids, mask)
            logp = torch.log_softmax(hidden[:, :-1] @ lm_head.T, dim=-1)
            picked = logp.gather(-1, ids[:, 1:, None])[..., 0]
            loss = (picked * target[:, 1:]).sum()
            grads = torch.autograd.grad(loss, [W[n] for n in linear])
            with torch.no_grad():
                for n, g in zip(linear, grads):
                    for d in dirs:
                        (g * d[n]).sum(1)

    attribution()
    best_attr = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        attribution()
        best_attr = min(best_attr, time.perf_counter() - t)
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "prefillTokens": sum(len(s) for s in spec["prefill"]), "prefillSeconds": best_prefill,
        "attributionTokens": sum(len(s["ids"]) for s in spec["attribution"]), "attributionSeconds": best_attr,
    }))


if __name__ == "__main__":
    main()
