"""llama2.c's Transformer in tinygrad: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU.

Two options beyond stock llama2.c, both from the seed run: a bias on the SwiGLU gate `w1` (`ffn_bias`), and logits
through the pseudo-inverse of the token embedding (`unembedding='pinv'`) instead of the embedding itself ('tied', stock
llama2.c) or a separate output matrix ('untied'). 'pinv_scaled', beyond the seed, multiplies pinv's logits by a
learned scale that starts where tied's logits are (docs/pinv.md, "Does it help?").

The shape is a `ModelArgs` (config.py's: the CLI reads it without tinygrad). Weights live in one flat dict under
llama2.c's state-dict names, in llama2.c's parameter order. tinygrad's CPU kernels are slow on odd sizes, so the
vocab and FFN hidden dims are stored padded to a multiple of `pad_to` with zero rows / columns. The padding provably
stays zero: tokens never index padded embedding rows, padded logits are sliced off before anyone sees them, and
padded FFN units compute silu(0) * 0 = 0, so every gradient into padding is exactly zero and AdamW (whose decay is
proportional to the weight) leaves it at zero. state_dict / num_params report the logical shapes.

One forward serves training, eval and sampling, as in tinygrad's extra/models/llama.py: `model(tokens)` is the
full-sequence forward; `model(tokens, start_pos, cache)` (or `forward` on embedding rows) decodes with a KVCache, a
prefill of the prompt from position 0 and then one token at a time. start_pos may be a Variable: the step attends to
all max_seq_len cache slots, the later ones masked, so one TinyJit-compiled step of fixed shapes serves every
position (sample.py drives it). The layer code picks kernels by shape, never different maths: a one-row matmul is a
matvec, and a decoding step uses the KVCache's fused q/k/v and w1/w3 matrices and its once-inverted unembedding.
"""
from __future__ import annotations
import contextlib, math, os, resource
from pathlib import Path
import numpy as np
from tinygrad import Tensor, UOp
from tinygrad.helpers import TRAINING
from tinystory import UserError
from tinystory.config import ModelArgs, round_up
from tinystory.device import devices_of, tensor_like
from tinystory.pinv import pinv

def uses_pinv(a: ModelArgs) -> bool: return a.unembedding in ("pinv", "pinv_scaled")

def pinv_logit_scale(a: ModelArgs) -> float:
  """pinv_scaled's scale at init, roughly tied's logits over pinv's. llama2.c's E ~ N(0, 0.02^2) has a smaller Gram
  whose mean is 0.02^2 max(V, d) times the identity, so pinv(E) is roughly E^T / (0.02^2 max(V, d)) and pinv's first
  logits hundreds of times tied's (the seed's first loss of 13-37 nats). The Gram's inverse is larger than the inverse
  of its mean, most when V is near d: scaled, the first logits are 1.2-1.9x tied's for d = 128 and V = 37-361."""
  return 0.02 ** 2 * max(a.vocab_size, a.dim)

def param_shapes(a: ModelArgs, vocab: int, hidden: int) -> dict[str, tuple[int, ...]]:
  """Parameter name -> shape in llama2.c's order (named_parameters), for the given (logical or padded) vocab/hidden."""
  d, kv = a.dim, a.kv_heads * a.head_dim
  shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (vocab, d)}
  for i in range(a.n_layers):
    p = f"layers.{i}."
    shapes |= {p+"attention.wq.weight": (d, d), p+"attention.wk.weight": (kv, d), p+"attention.wv.weight": (kv, d),
               p+"attention.wo.weight": (d, d), p+"feed_forward.w1.weight": (hidden, d)}
    if a.ffn_bias: shapes[p+"feed_forward.w1.bias"] = (hidden,)
    shapes |= {p+"feed_forward.w2.weight": (d, hidden), p+"feed_forward.w3.weight": (hidden, d),
               p+"attention_norm.weight": (d,), p+"ffn_norm.weight": (d,)}
  shapes["norm.weight"] = (d,)
  if a.unembedding == "untied": shapes["output.weight"] = (vocab, d)
  if a.unembedding == "pinv_scaled": shapes["output.log_scale"] = (1,)
  return shapes

def shape_error(shapes: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]]) -> str:
  """How tensors of `shapes` fail to be the parameters `want` (param_shapes'), as the end of a sentence; "" if they are them."""
  if missing := [n for n in want if n not in shapes]: return f"lacks {name_list(missing)}"
  if unknown := [n for n in shapes if n not in want]: return f"has unknown {name_list(unknown)}"
  return next((f"{n} has shape {list(shapes[n])}, expected {list(s)}" for n, s in want.items() if tuple(shapes[n]) != s), "")

def check_file_sizes(a: ModelArgs, shapes: dict[str, tuple[int, ...]], where, what: str) -> None:
  """The sizes a model file declares (`a`, read from `what`) against the tensors it holds (`shapes`, llama2.c's names)
  and against this machine's memory, before the model is built: a Transformer allocates what its args say, so a
  damaged or hostile file (ckpt.json's max_seq_len=10**9, config.json's 64 layers of width 65536 over a tiny
  model's weights) would take the machine's memory, or its ulimit, long before load_state_dict saw a shape."""
  # n_layers first: param_shapes makes names for every layer, and no file holds fewer tensors than layers
  err = (f"its {len(shapes)} tensors cannot hold n_layers={a.n_layers}" if a.n_layers > len(shapes)
         else shape_error(shapes, param_shapes(a, a.vocab_size, a.hidden_size)))
  if err: raise UserError(f"{where}: the weights do not fit {what}, {a!r}: {err}")
  if (need := memory_needed(a)) > (have := memory_available()):
    sizes = ", ".join(f"{k}={getattr(a, k)}" for k in ("dim", "hidden_size", "n_layers", "n_heads", "vocab_size", "max_seq_len"))
    raise UserError(f"{where}: {sizes} ({what}) need about {need / 2**30:,.1f} GiB to build the model and sample from "
                    f"it, more than the {have / 2**30:,.1f} GiB this process may use (the machine's memory or its limit): "
                    "the file is damaged or not for this machine")

def memory_needed(a: ModelArgs, pad_to: int = 16) -> int:
  """Bytes that building a Transformer of `a` and sampling from it allocate, roughly (float32 everywhere): the weights
  four times (as read from the file, the random init they replace, the model's, the KVCache's fused copies), the RoPE
  tables (numpy's and the model's), the KVCache, and the decoder's prefill of a whole context (padded to max_seq_len
  rows): its activations and logits, a layer's (n_heads, T, T) attention scores, their exp and softmax, and the mask.
  max_seq_len is in no weight's shape: only this bounds it."""
  d, T, H, L = a.dim, a.max_seq_len, a.n_heads, a.n_layers
  V, h, kv = round_up(a.vocab_size, pad_to), round_up(a.hidden_size, pad_to), a.kv_heads * a.head_dim
  params = 2 * V * d + L * (2 * d * d + 2 * kv * d + 3 * h * d + h + 2 * d) + d
  return 4 * (4 * params + 3 * T * a.head_dim + 2 * L * kv * T + T * (4 * d + 3 * h + 2 * V) + (3 * H + 1) * T * T)

def memory_available() -> int:
  """Bytes this process may still allocate: the machine's memory, or less under a cgroup's limit (a container's) or
  under RLIMIT_AS (ulimit -v), less the address space already in use."""
  page = os.sysconf("SC_PAGE_SIZE")
  limits = [os.sysconf("SC_PHYS_PAGES") * page]
  with contextlib.suppress(OSError, ValueError): limits.append(int(Path("/sys/fs/cgroup/memory.max").read_text()))  # "max": none
  if (soft := resource.getrlimit(resource.RLIMIT_AS)[0]) != resource.RLIM_INFINITY:
    with contextlib.suppress(OSError, ValueError, IndexError): soft -= int(Path("/proc/self/statm").read_text().split()[0]) * page
    limits.append(soft)
  return min(limits)

def init_value(name: str, shape: tuple[int, ...], n_layers: int, rng: np.random.Generator) -> np.ndarray:
  """llama2.c's init: unit norm weights, zero biases, N(0, 0.02) elsewhere, residual projections wo/w3 scaled down;
  pinv_scaled's log scale at 0."""
  if name.endswith("norm.weight"): return np.ones(shape, np.float32)
  if name.endswith((".bias", ".log_scale")): return np.zeros(shape, np.float32)
  std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("wo.weight", "w3.weight")) else 0.02
  return (rng.standard_normal(shape) * std).astype(np.float32)

def rope_tables(head_dim: int, max_seq_len: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
  """llama2.c's precompute_freqs_cis, in float32 like torch: cos and sin of t * theta^(-2j/head_dim), (max_seq_len, head_dim/2)."""
  freqs = (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))).astype(np.float32)
  angles = np.outer(np.arange(max_seq_len, dtype=np.float32), freqs)
  return np.cos(angles), np.sin(angles)

# ---- the layers, as functions of tensors ----

def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
  # contiguous: otherwise the normalisation is recomputed inside every matmul that reads it
  return (x * (x.square().mean(-1, keepdim=True) + eps).rsqrt() * weight).contiguous()

def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, chunk: int = 0) -> Tensor:
  # weight is (out, in) like torch; contiguous_backward materialises the incoming gradient once for both its matmuls
  # training: the value from the weight transposed, x's gradient from the second term, weight's from the third (see
  # packed and weight_grad_path)
  if TRAINING: y = x.detach() @ packed(weight) + (x - x.detach()) @ weight.detach().T + weight_grad_path(x, weight, chunk)
  elif math.prod(x.shape[:-1]) == 1: y = matvec(x, weight)  # one row: a decoding step
  else: y = x @ weight.T
  return (y if bias is None else y + bias).contiguous_backward()

def matvec(x: Tensor, w: Tensor) -> Tensor:
  """x @ w.T for one row x, with each output summed as 8 interleaved partial sums (one vector register) that are then
  added up. tinygrad's own matmul of one row sums each output in one serial chain of adds: add latency bounds it, and
  it is 4-7x slower here."""
  O, I = w.shape
  if I % 8: return x @ w.T
  return (x.reshape(*x.shape[:-1], 1, I // 8, 8) * w.reshape(O, I // 8, 8)).sum(-2).sum(-1)

# A weight's (and the embedding's) gradient is summed over all positions at once (chunk 0, the CPU) or in chunks of
# `chunk` positions (Transformer.grad_chunk, device.choose_for's choice). A GPU runs one thread per few outputs of a
# kernel, so a (128 x 128) gradient summed over 8,192 positions keeps a few hundred threads busy with a long serial
# loop; summed in chunks, then over the chunks, it has N / chunk times the threads. At most MAX_GRAD_PARTS chunks:
# each is a stored copy of the gradient.
MAX_GRAD_PARTS = 32

def grad_parts(N: int, device, chunk: int) -> int:
  """How many partial sums a gradient over N positions (a batch on `device`, or sharded over several) is summed in,
  0 for one sum: chunks of `chunk` positions or more, as many on each device (a chunk cannot straddle two shards of
  a batch)."""
  if not chunk: return 0
  parts = min(N // chunk, MAX_GRAD_PARTS)
  return parts if parts > 1 and N % parts == 0 and parts % len(devices_of(device)) == 0 else 0

def per_part(t: Tensor, S: int) -> Tensor:
  """t repeated S times on a new leading axis, each copy's gradient stored: used in place of t by S chunks of
  positions, its gradient is their S partial sums (then summed by the repeat's own backward)."""
  return t.unsqueeze(0).expand(S, *t.shape).contiguous_backward()

def packed(weight: Tensor) -> Tensor:
  """weight.T, (in, out), copied (a small kernel), without a gradient: x @ weight.T then reads each output's row of
  the weights in order, so the matmul's tile of outputs is a vector register of 16 (kernel_opts), where with both x and
  weight read along `in` it is a sum of products per output. weight's gradient is formed from x and g as they are
  (weight_grad_path), and x's from weight itself, whose rows (out, in) are in order along x's features."""
  return weight.detach().T.contiguous()

def weight_grad_path(x: Tensor, weight: Tensor, chunk: int = 0) -> Tensor:
  """Zero in value; its gradient w.r.t. weight is x @ weight.T's: sum over positions n of g[n, out] x[n, in]. With a
  chunk, the sum over positions is split: partial sums per chunk of positions (stored), then their sum: a chunk of x
  and g stays in the cache while all its outputs are summed (on the CPU), and a GPU gets N / chunk times the threads."""
  x2, (out, inp) = x.detach().reshape(-1, x.shape[-1]), weight.shape
  if S := grad_parts(N := x2.shape[0], x.device, chunk):  # the zero weight repeated per chunk: its gradient is the partial sums
    zero = (x2.reshape(S, N // S, inp) @ per_part((weight - weight.detach()).T, S)).reshape(N, out)
  else: zero = x2 @ (weight - weight.detach()).T
  return zero.contiguous_backward().reshape(*x.shape[:-1], out)

def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
  """Rotate channel pairs (2j, 2j+1) of x (B, T, heads, head_dim) by the angles of positions T (cos/sin: (T, head_dim/2))."""
  pairs = x.reshape(*x.shape[:-1], -1, 2)
  xr, xi = pairs[..., 0], pairs[..., 1]
  cos, sin = cos.reshape(1, cos.shape[0], 1, -1), sin.reshape(1, sin.shape[0], 1, -1)
  return Tensor.stack(xr * cos - xi * sin, xr * sin + xi * cos, dim=-1).flatten(3).contiguous()

def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
  """softmax(q k^T / sqrt(head_dim) + mask) v for q (B, H, Tq, hd) and k, v (B, H, Tk, hd); mask (Tq, Tk) of 0 / -inf."""
  scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(q.shape[-1]))
  if mask is not None: scores = scores + mask
  # Tensor.softmax's ops, but with exp computed once: tinygrad's softmax recomputes exp (a ~50-op polynomial) over the
  # (B, H, T, T) scores in its sum, its output and twice in the backward; the same floats, bit for bit
  # contiguous_backward: the scores' gradient stored once, for the two matmuls (q's and k's gradients) that read it
  e = exp_saved((scores - scores.max(-1, keepdim=True).detach()).contiguous_backward())
  # normalised after the (T x T) @ v matmul, not before: each row's 1 / sum scales its head_dim outputs instead of its T
  # probabilities, so the probabilities are never stored, and their gradient is one pass over the scores, not three
  return (e.dropout(dropout).contiguous_backward() @ v) * e.sum(-1, keepdim=True).reciprocal()

def attend_causal(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout: float) -> Tensor:
  """attend with a causal mask of (T, T): the first half of the queries sees only the first half of the keys, so its
  scores are computed on those alone, the second half's on all of them: 3/4 of the (T x T) scores and their passes.
  The keys left out are those the mask sets to -inf, whose exp is exactly 0: the same softmax."""
  T = q.shape[-2]
  if T % 2: return attend(q, k, v, mask, dropout)
  # each half's gradients stored, then summed: else tinygrad fuses both halves' matmuls into one kernel (2x slower)
  h, own = T // 2, lambda t: t.contiguous_backward()
  first = attend(own(q[..., :h, :]), own(k[..., :h, :]), own(v[..., :h, :]), mask[:h, :h], dropout)
  return first.cat(attend(own(q[..., h:, :]), own(k), own(v), mask[h:], dropout), dim=-2)

def exp_saved(x: Tensor) -> Tensor:
  """x.exp(), stored, with a backward that multiplies by the stored values instead of recomputing them. x - x.detach()
  is zero (tinygrad folds it away in the forward pass) but carries the gradient: d/dx = e, as exp's own rule."""
  e = x.exp().contiguous().detach()
  return e + (x - x.detach()) * e

def silu(x: Tensor, saved: bool = True) -> Tensor:
  """x.silu() (x * sigmoid(x), sigmoid as tinygrad writes it), with its exp stored for the backward unless `saved` is
  False (decoding has no backward: there the stored copy would cost a kernel)."""
  return x * (1 + (exp_saved(-x) if saved else (-x).exp())).reciprocal()

def causal_mask(T: int, start_pos: int | UOp = 0, keys: int | None = None, device: str | tuple[str, ...] | None = None) -> Tensor:
  """(T, keys) of 0 / -inf (keys: T by default): query t, at position start_pos + t, sees keys 0..start_pos + t."""
  return Tensor.full((T, T if keys is None else keys), float("-inf"), device=device).triu(start_pos + 1)

class Transformer:
  def __init__(self, args: ModelArgs, seed: int | None = None, pad_to: int = 16, grad_chunk: int = 0):
    """grad_chunk: positions per partial sum of each weight's gradient in training, 0 for one sum (the device's
    choice, device.choose_for: the floats differ by rounding, the maths not)."""
    args.validate()
    if not isinstance(pad_to, int) or pad_to < 1: raise UserError(f"pad_to={pad_to!r}: expected a positive integer")
    self.args, self.pad_to, self.grad_chunk = args, pad_to, grad_chunk
    self.padded_vocab, self.padded_hidden = round_up(args.vocab_size, pad_to), round_up(args.hidden_size, pad_to)
    self.shapes = param_shapes(args, args.vocab_size, args.hidden_size)
    padded = param_shapes(args, self.padded_vocab, self.padded_hidden)
    rng = np.random.default_rng(seed)
    self.weights = {n: Tensor(pad_array(init_value(n, s, args.n_layers, rng), padded[n]))
                    for n, s in self.shapes.items()}
    cos, sin = rope_tables(args.head_dim, args.max_seq_len)
    self.freqs_cos, self.freqs_sin = Tensor(cos), Tensor(sin)

  # ---- forward ----

  def __call__(self, tokens: Tensor, start_pos: int | UOp = 0, cache: KVCache | None = None) -> Tensor:
    """(B, T) token ids at positions start_pos.. -> (B, T, vocab_size) float32 logits (see forward). Dropout applies
    only under tinygrad's TRAINING context."""
    E = self.weights["tok_embeddings.weight"]
    return self.forward(embed(E, tokens, self.grad_chunk).dropout(self.args.dropout), start_pos, cache)

  def forward(self, h: Tensor, start_pos: int | UOp = 0, cache: KVCache | None = None) -> Tensor:
    """The layers and the logits for token embeddings h (B, T, dim) at positions start_pos..start_pos+T-1. Training
    and eval: no cache, start_pos 0. Decoding: each layer writes its keys and values into `cache` at those positions;
    from position 0 the queries attend to the new keys alone (a prefill), else to all of the cache's slots, those past
    each query's position masked (start_pos may be a Variable: one compiled step serves every position)."""
    a, w, T = self.args, self.weights, h.shape[1]
    if T > a.max_seq_len: raise UserError(f"sequence of {T} tokens is longer than max_seq_len={a.max_seq_len}")
    cos, sin = self.freqs_cos[start_pos:start_pos + T], self.freqs_sin[start_pos:start_pos + T]
    mask = causal_mask(T, start_pos, T if cache is None or is_start(start_pos) else a.max_seq_len, h.device)
    for i in range(a.n_layers):
      h = h + self.attention(i, rms_norm(h, w[f"layers.{i}.attention_norm.weight"], a.norm_eps), cos, sin, mask,
                             start_pos, cache)
      h = h + self.feed_forward(i, rms_norm(h, w[f"layers.{i}.ffn_norm.weight"], a.norm_eps), cache)
    return self.logits(rms_norm(h, w["norm.weight"], a.norm_eps), cache)

  def qkv(self, i: int, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Layer i's rotated queries and keys, and values, as (B, heads, T, head_dim); kv heads are not yet repeated."""
    a, p = self.args, f"layers.{i}.attention."
    B, T, _ = x.shape
    if cache is not None and T == 1:  # a decoding step: q, k, v as one matvec, q and k rotated in one kernel
      H, KV = a.n_heads, a.kv_heads
      qkv = linear(x, cache.wqkv[i]).reshape(B, T, H + 2 * KV, a.head_dim)
      qk = rope(qkv[:, :, :H + KV], cos, sin).transpose(1, 2)
      return qk[:, :H], qk[:, H:], qkv[:, :, H + KV:].transpose(1, 2)
    # many rows: three matmuls, each faster than one of the three together
    q = linear(x, self.weights[p+"wq.weight"], chunk=self.grad_chunk).reshape(B, T, a.n_heads, a.head_dim)
    k = linear(x, self.weights[p+"wk.weight"], chunk=self.grad_chunk).reshape(B, T, a.kv_heads, a.head_dim)
    v = linear(x, self.weights[p+"wv.weight"], chunk=self.grad_chunk).reshape(B, T, a.kv_heads, a.head_dim)
    # (B, heads, T, head_dim) views, and their gradients, stored heads first: the (T x T) matmuls of attention read
    # them in order. q and k are stored channel-major (B, heads, head_dim, T): q k^T sums only head_dim = 8 products, so
    # it runs as outer products of contiguous rows of T (3x faster)
    heads_first = lambda t: t.transpose(1, 2).contiguous().contiguous_backward()
    channel_major = lambda t: t.permute(0, 2, 3, 1).contiguous().contiguous_backward().transpose(2, 3)
    return channel_major(rope(q, cos, sin)), channel_major(rope(k, cos, sin)), heads_first(v)

  def attention(self, i: int, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, start_pos: int | UOp = 0,
                cache: KVCache | None = None) -> Tensor:
    """Layer i's attention of x (its keys and values into the cache if there is one), heads merged, projected by wo."""
    a, (B, T, _) = self.args, x.shape
    q, k, v = self.qkv(i, x, cos, sin, cache)
    if cache is not None:
      cache.kv[i].shrink((None, None, None, (start_pos, start_pos + T), None)).assign(k.stack(v))  # only these slots
      # past the start: every slot, those not yet written for this sequence masked (fixed shapes for every position)
      if not is_start(start_pos): k, v = cache.kv[i][0], cache.kv[i][1]
    rep = a.n_heads // a.kv_heads  # grouped-query attention: each kv head serves `rep` consecutive query heads
    if rep > 1: k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    # stored (B, heads, T, head_dim), and so is its gradient: the attention matmuls write and read it in order
    causal = is_start(start_pos)  # then the mask is (T, T), each query seeing the keys up to its own
    out = (attend_causal if causal else attend)(q, k, v, mask, a.dropout).contiguous().contiguous_backward()
    out = out.transpose(1, 2).reshape(B, T, a.dim)
    if T > 1: out = out.contiguous()  # (one row: the transpose moves nothing, a copy would be a kernel for nothing)
    return linear(out, self.weights[f"layers.{i}.attention.wo.weight"], chunk=self.grad_chunk).dropout(a.dropout)

  def feed_forward(self, i: int, x: Tensor, cache: KVCache | None = None) -> Tensor:
    w, p = self.weights, f"layers.{i}.feed_forward."
    if cache is None:
      gate, up = linear(x, w[p+"w1.weight"], w.get(p+"w1.bias"), self.grad_chunk), linear(x, w[p+"w3.weight"], chunk=self.grad_chunk)
    else:  # decoding: w1 and w3 as one matmul
      gate, up = linear(x, cache.w13[i]).split(self.padded_hidden, -1)
      if p+"w1.bias" in w: gate = gate + w[p+"w1.bias"]
    # contiguous: silu once, not once per output
    return linear((silu(gate, saved=cache is None) * up).contiguous(), w[p+"w2.weight"], chunk=self.grad_chunk).dropout(self.args.dropout)

  def unembedding_matrix(self) -> Tensor:
    """U, (padded_vocab, dim): logits = h @ U.T."""
    a, w = self.args, self.weights
    E = w["tok_embeddings.weight"]
    if uses_pinv(a):
      # pinv of the logical rows only (appended zero rows would make E E^T singular when vocab < dim), then zero
      # columns back on so the logits matmul and its gradients run at the padded width; stored (padded_vocab, dim):
      # the matmuls then read whole rows in order, not pinv's (dim, vocab) with its padding as masked loads
      U = pinv(E[:a.vocab_size]).pad(((0, 0), (0, self.padded_vocab - a.vocab_size))).T.contiguous()
      return U * (w["output.log_scale"].exp() * pinv_logit_scale(a)) if a.unembedding == "pinv_scaled" else U
    return E if a.unembedding == "tied" else w["output.weight"]

  def logits(self, h: Tensor, cache: KVCache | None = None) -> Tensor:
    if cache is not None: return linear(h, cache.unembed)
    # contiguous: the matmul runs at the padded width (as a whole vector width) rather than at vocab_size
    return linear(h, self.unembedding_matrix(), chunk=self.grad_chunk).contiguous()[..., :self.args.vocab_size]

  # ---- parameters ----

  def parameters(self) -> list[Tensor]:
    """The trainable (padded) tensors, in llama2.c's order."""
    return list(self.weights.values())

  def num_params(self) -> tuple[tuple[int, int], tuple[int, int]]:
    """((n_tensors, n_params) decayed, (n_tensors, n_params) not decayed), logical sizes (padding not counted)."""
    decay = [math.prod(s) for s in self.shapes.values() if len(s) >= 2]
    no_decay = [math.prod(s) for s in self.shapes.values() if len(s) < 2]
    return (len(decay), sum(decay)), (len(no_decay), sum(no_decay))

  def state_dict(self) -> dict[str, Tensor]:
    """llama2.c's names and logical shapes, in model order (lazy slices of the padded weights)."""
    return {n: self.weights[n].shrink(tuple((0, d) for d in s)) for n, s in self.shapes.items()}

  def load_state_dict(self, sd: dict[str, Tensor | np.ndarray]) -> None:
    """Copy weights in by llama2.c's names. A tied checkpoint's `output.weight` (llama2.c saves the shared tensor under
    both names) is accepted when it equals tok_embeddings.weight."""
    sd = {n: v.numpy() if isinstance(v, Tensor) else np.asarray(v) for n, v in sd.items()}
    if "output.weight" in sd and "output.weight" not in self.shapes and "tok_embeddings.weight" in sd:
      if not np.array_equal(sd["output.weight"], sd["tok_embeddings.weight"]):
        raise UserError(f"state dict has an output.weight that differs from tok_embeddings.weight, but "
                        f"unembedding={self.args.unembedding!r} has no separate output matrix")
      del sd["output.weight"]
    if err := shape_error({n: v.shape for n, v in sd.items()}, self.shapes): raise UserError(f"state dict {err}")
    for n, t in self.weights.items(): t.assign(tensor_like(t, pad_array(sd[n].astype(np.float32), t.shape))).realize()

  def shard(self, devices: tuple[str, ...]) -> "Transformer":
    """Data parallel: every weight (and the RoPE tables) replicated on each of `devices`, in place. A batch sharded
    on axis 0 then runs a slice per device and tinygrad all-reduces what the slices share (the loss, the gradients)."""
    # realized here: left lazy, each use would copy it again, and tinygrad 0.14 fails to schedule a step in which the
    # embedding's gather and the pinv read two lazy copies of E
    for t in [*self.weights.values(), self.freqs_cos, self.freqs_sin]: t.shard_(devices).realize()
    return self

class KVCache:
  """What decoding one sequence keeps between forwards: each layer's keys and values, (2, 1, kv_heads, max_seq_len,
  head_dim), and weights made once from the model's: each layer's wq, wk, wv as one matrix and w1, w3 as one (one
  matmul each), and the unembedding U (vocab_size, dim), a pinv one inverted once instead of once per token. Make a
  new one when the model's weights change."""
  def __init__(self, model: Transformer):
    a, w = model.args, model.weights
    self.kv = [Tensor.zeros(2, 1, a.kv_heads, a.max_seq_len, a.head_dim).contiguous().realize() for _ in range(a.n_layers)]
    def cat(*names): return Tensor.cat(*(w[n] for n in names)).contiguous().realize()
    self.wqkv = [cat(*(f"layers.{i}.attention.{n}.weight" for n in ("wq", "wk", "wv"))) for i in range(a.n_layers)]
    self.w13 = [cat(*(f"layers.{i}.feed_forward.{n}.weight" for n in ("w1", "w3"))) for i in range(a.n_layers)]
    self.unembed = model.unembedding_matrix()[:a.vocab_size].contiguous().realize()

  def realize(self) -> None: Tensor.realize(*self.kv)

def is_start(start_pos: int | UOp) -> bool:
  """Whether a forward from start_pos starts the sequence: then the keys it computes are all there are."""
  return isinstance(start_pos, int) and start_pos == 0

def embed(E: Tensor, tokens: Tensor, chunk: int = 0) -> Tensor:
  """Rows of E for each token. Written as a masked sum, which tinygrad turns into a gather (a one-hot matmul costs a
  (tokens x vocab x dim) matmul); the backward sums each row's gradients in the same order as the matmul did."""
  is_token = tokens.unsqueeze(-1) == Tensor.arange(E.shape[0]).to(E.device)  # (B, T, vocab)
  if TRAINING and (S := grad_parts(N := math.prod(tokens.shape), tokens.device, chunk)):  # E's gradient in chunks, as a weight's
    return is_token.reshape(S, N // S, -1, 1).where(per_part(E, S).unsqueeze(1), 0).sum(-2).reshape(*tokens.shape, -1)
  return is_token.unsqueeze(-1).where(E, 0).sum(-2)

def name_list(names: list[str], most: int = 3) -> str:
  return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")

def pad_array(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  return np.pad(x, [(0, p - s) for s, p in zip(x.shape, shape)])
