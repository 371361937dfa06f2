"""
Compares fgsn's traces (fgsn trace, float32 and float16 compute) with Hugging Face transformers running the
same checkpoint on the same token ids, in float32 and in float16, on CUDA when present (else CPU). Prints, for
every pair (HF dtype x fgsn compute), the largest logit and last-layer hidden-state difference. If fgsn's
float16 graph follows HF's float16 semantics (norms and softmax in float32, everything else half), HF fp16
sits closer to fgsn float16 than to fgsn float32.

    fgsn trace <model> --prompts p.jsonl --out ours32.safetensors
    fgsn trace <model> --prompts p.jsonl --out ours16.safetensors --compute-dtype float16
    python3 bench/engine/hf-compare.py <model> ours32.safetensors ours16.safetensors

Every supported family at once (tiny checkpoints of each family's configuration, traced by fgsn):

    npx tsx bench/engine/families-pack.ts OUT
    python3 bench/engine/hf-compare.py --families OUT

prints the same rows per family (field "family"); gemma3_text needs transformers >= 4.50. Status 2026-12-02:
the --families mode is prepared and NOT run (no torch on this machine, no GPU machine lent to the task).

Needs torch, transformers (>= 4.56, for `dtype=`) and safetensors. Status 2026-11-28: prepared, NOT yet run:
this machine has no torch, and the GPU machine that has it stopped being lent before the call.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

device = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def compare(model_dir, path32, path16):
    """Rows (HF dtype x fgsn compute) of the largest logit and last-hidden differences, and the prompt / layer counts."""
    ours = {"float32": load_file(path32), "float16": load_file(path16)}
    n = sum(1 for k in ours["float32"] if k.endswith(".input_ids"))
    layers = 1 + max(int(k.split(".")[2]) for k in ours["float32"] if ".layers." in k)
    rows = []
    for hf_name, hf_dtype in (("float32", torch.float32), ("float16", torch.float16)):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=hf_dtype, attn_implementation="eager").to(device).eval()
        worst = {c: {"logits": 0.0, "hidden": 0.0} for c in ours}
        scale = 0.0
        with torch.no_grad():
            for j in range(n):
                ids = ours["float32"][f"p{j}.input_ids"].to(torch.long).unsqueeze(0).to(device)
                out = model(input_ids=ids, output_hidden_states=True)
                logits = out.logits[0].float().cpu()
                final = out.hidden_states[-1][0].float().cpu()
                scale = max(scale, logits.abs().max().item())
                for c, t in ours.items():
                    worst[c]["logits"] = max(worst[c]["logits"], (logits - t[f"p{j}.logits"]).abs().max().item())
                    # Which of the two HF's last entry is depends on the transformers version: take the closer one.
                    d = min((final - t[f"p{j}.final_norm"]).abs().max().item(), (final - t[f"p{j}.layers.{layers - 1}.hidden"]).abs().max().item())
                    worst[c]["hidden"] = max(worst[c]["hidden"], d)
        for c in ours:
            rows.append({"hf": hf_name, "fgsn": c, "maxLogitDiff": worst[c]["logits"], "maxLastHiddenDiff": worst[c]["hidden"], "maxAbsLogit": scale})
        del model
    return rows, n, layers


if sys.argv[1] == "--families":
    root = sys.argv[2]
    print(json.dumps({"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__}))
    for family in sorted(os.listdir(root)):
        d = os.path.join(root, family)
        if not os.path.isdir(os.path.join(d, "model")):
            continue
        rows, n, layers = compare(os.path.join(d, "model"), os.path.join(d, "ours32.safetensors"), os.path.join(d, "ours16.safetensors"))
        for r in rows:
            print(json.dumps({"family": family, "prompts": n, "layers": layers, **r}))
    sys.exit(0)

model_dir, path32, path16 = sys.argv[1:4]
rows, n, layers = compare(model_dir, path32, path16)
print(json.dumps({"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "prompts": n, "layers": layers, "torch": torch.__version__}))
for r in rows:
    print(json.dumps(r))
