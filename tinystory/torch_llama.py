"""PyTorch baseline: the seed model (llama2.c's model.py + pinv unembedding + w1 bias), timed for training and sampling.

Run one measurement per process so peak RSS and torch.compile caches belong to that measurement alone:
  python -m tinystory.torch_llama --mode train --compile 0 --json
"""
import argparse, json, math, os, resource, statistics, time
import torch
import torch.nn.functional as F
from torch import nn
from tinystory.config import SEED_MODEL  # the seed run's model, llama2.c's ModelArgs names

def ffn_hidden_dim(cfg: dict) -> int:
  if cfg["hidden_dim"] is not None: return cfg["hidden_dim"]
  m = cfg["multiple_of"]
  return m * ((int(2 * 4 * cfg["dim"] / 3) + m - 1) // m)

class RMSNorm(nn.Module):
  def __init__(self, dim: int, eps: float):
    super().__init__()
    self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))
  def forward(self, x): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

def rope_tables(head_dim: int, max_seq_len: int, theta: float = 10000.0):
  freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
  angles = torch.outer(torch.arange(max_seq_len).float(), freqs)
  return angles.cos(), angles.sin()

def rope(x, cos, sin):
  """Rotate each (even, odd) pair of x (B, T, H, D) by its position's angle."""
  re, im = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
  cos, sin = cos[None, :, None, :], sin[None, :, None, :]
  return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(3)

class Attention(nn.Module):
  def __init__(self, cfg: dict):
    super().__init__()
    dim, self.n_heads, self.n_kv_heads = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"] or cfg["n_heads"]
    self.head_dim, self.dropout = dim // self.n_heads, cfg["dropout"]
    self.wq = nn.Linear(dim, self.n_heads * self.head_dim, bias=False)
    self.wk = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=False)
    self.wv = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=False)
    self.wo = nn.Linear(self.n_heads * self.head_dim, dim, bias=False)
    self.resid_dropout = nn.Dropout(cfg["dropout"])

  def forward(self, x, cos, sin):
    B, T, _ = x.shape
    q = rope(self.wq(x).view(B, T, self.n_heads, self.head_dim), cos, sin)
    k = rope(self.wk(x).view(B, T, self.n_kv_heads, self.head_dim), cos, sin)
    v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
    # grouped-query attention: each kv head serves n_heads // n_kv_heads query heads
    if self.n_kv_heads != self.n_heads: k, v = (t.repeat_interleave(self.n_heads // self.n_kv_heads, dim=2) for t in (k, v))
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                         dropout_p=self.dropout if self.training else 0.0)
    return self.resid_dropout(self.wo(out.transpose(1, 2).reshape(B, T, -1)))

class FeedForward(nn.Module):
  def __init__(self, cfg: dict):
    super().__init__()
    dim, hidden = cfg["dim"], ffn_hidden_dim(cfg)
    self.w1 = nn.Linear(dim, hidden, bias=cfg["ffn_bias"])  # the seed's change: a bias on the SwiGLU gate only
    self.w2 = nn.Linear(hidden, dim, bias=False)
    self.w3 = nn.Linear(dim, hidden, bias=False)
    self.dropout = nn.Dropout(cfg["dropout"])
  def forward(self, x): return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))

class TransformerBlock(nn.Module):
  def __init__(self, cfg: dict):
    super().__init__()
    self.attention, self.feed_forward = Attention(cfg), FeedForward(cfg)
    self.attention_norm, self.ffn_norm = RMSNorm(cfg["dim"], cfg["norm_eps"]), RMSNorm(cfg["dim"], cfg["norm_eps"])
  def forward(self, x, cos, sin):
    h = x + self.attention(self.attention_norm(x), cos, sin)
    return h + self.feed_forward(self.ffn_norm(h))

class Transformer(nn.Module):
  # submodules are created in llama2.c's order so that seed 1337 draws the same default inits from the RNG
  def __init__(self, cfg: dict):
    super().__init__()
    if cfg["unembedding"] not in ("pinv", "tied"): raise ValueError(f"unembedding must be pinv or tied, got {cfg['unembedding']!r}")
    self.cfg = cfg
    self.tok_embeddings = nn.Embedding(cfg["vocab_size"], cfg["dim"])
    self.dropout = nn.Dropout(cfg["dropout"])
    self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg["n_layers"]))
    self.norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
    # tied as in llama2.c, so output.weight is in the state dict; the pinv unembedding does not read it
    self.output = nn.Linear(cfg["dim"], cfg["vocab_size"], bias=False)
    self.tok_embeddings.weight = self.output.weight
    cos, sin = rope_tables(cfg["dim"] // cfg["n_heads"], cfg["max_seq_len"])
    self.register_buffer("freqs_cos", cos, persistent=False)
    self.register_buffer("freqs_sin", sin, persistent=False)
    self.apply(init_weights)
    for name, p in self.named_parameters():  # llama2.c's scaled residual init (it names w3, not w2)
      if name.endswith(("w3.weight", "wo.weight")): nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg["n_layers"]))

  def forward(self, tokens, targets=None):
    T = tokens.shape[1]
    h = self.dropout(self.tok_embeddings(tokens))
    for layer in self.layers: h = layer(h, self.freqs_cos[:T], self.freqs_sin[:T])
    h = self.norm(h)
    if targets is None: h = h[:, [-1], :]  # inference: only the last position's logits
    # the seed's change: unembed with pinv(E), recomputed from the current E and backpropagated into it
    logits = (h @ torch.linalg.pinv(self.tok_embeddings.weight)) if self.cfg["unembedding"] == "pinv" else self.output(h)
    if targets is None: return logits, None
    return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)

def init_weights(m: nn.Module):
  if isinstance(m, (nn.Linear, nn.Embedding)): nn.init.normal_(m.weight, 0.0, 0.02)
  if isinstance(m, nn.Linear) and m.bias is not None: nn.init.zeros_(m.bias)

def build(cfg: dict, seed: int = 1337) -> Transformer:
  torch.manual_seed(seed)
  return Transformer({**SEED_MODEL, **cfg})

def adamw(model: nn.Module, lr=3e-4, betas=(0.9, 0.99), weight_decay=0.1) -> torch.optim.AdamW:
  """llama2.c's groups: decay every tensor of 2+ dims (matmuls, embedding), not biases or norm weights."""
  params = list(model.parameters())  # the tied embedding appears once
  groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
  return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)

def peak_rss_mb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

def setup(device: str, threads: int | None) -> torch.device:
  """The device, with llama2.c's settings: TF32 matmuls allowed on CUDA (train.py sets both flags), `threads` CPU
  threads (default: every core, as tinygrad uses)."""
  torch.set_num_threads(threads or os.cpu_count() or 1)
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  if device == "cuda" and not torch.cuda.is_available(): raise ValueError("--device cuda: this torch has no CUDA device")
  if device == "mps" and not torch.backends.mps.is_available(): raise ValueError("--device mps: this torch has no MPS device")
  return torch.device(device)

def sync(dev: torch.device) -> None:
  """Wait for the device's queued work, so a timer measures it (GPUs run asynchronously)."""
  if dev.type == "cuda": torch.cuda.synchronize()
  elif dev.type == "mps": torch.mps.synchronize()

def device_name(dev: torch.device) -> str:
  if dev.type == "cuda": return torch.cuda.get_device_name(dev)
  return "Apple GPU (mps)" if dev.type == "mps" else f"CPU, {torch.get_num_threads()} threads"

def measure_train(cfg: dict, batch_size: int, steps: int, compile: bool, threads: int | None = None, device: str = "cpu") -> dict:
  """Time `steps` AdamW steps on random tokens; the first (which compiles) is reported alone, the rest as a median."""
  if steps < 2: raise ValueError(f"steps must be >= 2 (one warm-up step, then timed steps), got {steps}")
  dev = setup(device, threads)
  model = build(cfg).to(dev)
  cfg, model_fn = model.cfg, (torch.compile(model) if compile else model)
  opt, gen = adamw(model), torch.Generator().manual_seed(42)
  model.train()
  times = []
  for _ in range(steps):
    batch = torch.randint(cfg["vocab_size"], (batch_size, cfg["max_seq_len"] + 1), generator=gen).to(dev)
    sync(dev)
    t0 = time.perf_counter()
    _, loss = model_fn(batch[:, :-1], batch[:, 1:])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(dev)
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times[1:])
  return {"first_step_s": times[0], "train_step_s": step_s,
          "train_tokens_per_s": batch_size * cfg["max_seq_len"] / step_s, "peak_rss_mb": peak_rss_mb(),
          "device": dev.type, "device_name": device_name(dev)}

@torch.inference_mode()
def measure_sample(cfg: dict, new_tokens: int, window: int, compile: bool = False, threads: int | None = None,
                   temperature: float = 0.8, top_k: int = 200, device: str = "cpu") -> dict:
  """llama2.c sample.py's loop (no KV cache): rerun the model on the last `window` tokens for every new token."""
  dev = setup(device, threads)
  model = build(cfg).to(dev).eval()
  if not 1 <= window <= model.cfg["max_seq_len"]: raise ValueError(f"window must be in 1..max_seq_len, got {window}")
  model_fn = torch.compile(model) if compile else model
  idx = torch.tensor([[1]], device=dev)  # BOS, as llama2.c's sampler starts from an empty prompt
  sync(dev)
  t0 = time.perf_counter()
  for _ in range(new_tokens):
    logits, _ = model_fn(idx[:, -window:])
    logits = logits[:, -1, :] / temperature
    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
    probs = F.softmax(logits.masked_fill(logits < kth, -float("inf")), dim=-1)
    idx = torch.cat([idx, torch.multinomial(probs, 1)], dim=1)
  sync(dev)  # multinomial's result is read by the next step anyway; this covers the last one
  return {"sample_tokens_per_s": new_tokens / (time.perf_counter() - t0), "peak_rss_mb": peak_rss_mb(),
          "device": dev.type, "device_name": device_name(dev)}

def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--mode", choices=["train", "sample"], required=True)
  p.add_argument("--compile", type=int, choices=[0, 1], default=0)
  p.add_argument("--cfg", type=json.loads, default={}, help="JSON object of ModelArgs overrides over the seed config")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--new-tokens", type=int, default=200)
  p.add_argument("--window", type=int, default=128)
  p.add_argument("--threads", type=int, default=0, help="CPU threads; 0: every core")
  p.add_argument("--device", choices=["cpu", "cuda", "mps"], default="cpu")
  p.add_argument("--json", action="store_true", help="print one JSON object instead of key: value lines")
  a = p.parse_args()
  try:
    if a.mode == "train": res = measure_train(a.cfg, a.batch_size, a.steps, bool(a.compile), a.threads, a.device)
    else: res = measure_sample(a.cfg, a.new_tokens, a.window, bool(a.compile), a.threads, device=a.device)
  except ValueError as e: p.error(str(e))  # a bad option value: usage line + exit 2, no traceback
  res = {"mode": a.mode, "compile": bool(a.compile), "threads": a.threads, "torch": torch.__version__, **res}
  print(json.dumps(res) if a.json else "\n".join(f"{k}: {v}" for k, v in res.items()))

if __name__ == "__main__": main()
