"""The optimizer, as tinygrad's nn/optim.py shapes one: llama2.c's learning-rate schedule, and torch.optim.AdamW (after
torch's clip_grad_norm_) as tinygrad ops over the model's padded weights, with its state and a state dict of it in
logical shapes (what a checkpoint's optimizer.safetensors holds)."""
import math
import numpy as np
from tinygrad import Tensor
from tinystory import UserError
from tinystory.checkpoint import unpadded
from tinystory.device import tensor_like
from tinystory.model import pad_array

def get_lr(it: int, cfg) -> float:
  """llama2.c's schedule (cfg: a TrainConfig): linear warmup, then cosine decay to min_lr at lr_decay_iters, min_lr after."""
  if not cfg.decay_lr: return cfg.learning_rate
  decay_iters = cfg.lr_decay_iters or cfg.max_iters
  if it < cfg.warmup_iters: return cfg.learning_rate * it / cfg.warmup_iters
  if it > decay_iters: return cfg.min_lr
  ratio = (it - cfg.warmup_iters) / max(decay_iters - cfg.warmup_iters, 1)
  return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)

def weight_decays(params, weight_decay: float) -> list[float]:
  """llama2.c's configure_optimizers groups: the 2+-dim tensors (matmuls, embedding) decay, biases and norm gains do not."""
  return [weight_decay if p.ndim >= 2 else 0.0 for p in params]

class AdamW:
  """torch.optim.AdamW over `params` (each with its own weight decay, `decays`), gradients clipped to a total norm of
  `grad_clip` first (0: off). Its moments are float32 tensors shaped like the params, replicated where the params are
  (model.shard); `step` counts the updates done."""
  def __init__(self, params: list, decays: list[float], beta1: float, beta2: float, grad_clip: float, eps: float = 1e-8):
    zeros = lambda p: tensor_like(p, np.zeros(p.shape, np.float32)).contiguous().realize()
    self.params, self.decays, self.beta1, self.beta2, self.grad_clip, self.eps = params, decays, beta1, beta2, grad_clip, eps
    self.exp_avg, self.exp_avg_sq, self.step = [zeros(p) for p in params], [zeros(p) for p in params], 0

  def update(self, grads: list, lr, step) -> list:
    """The ops of one update with `grads` (not realized: the tensors to realize). `lr` and `step` are Tensors, so one
    compiled update serves every iteration."""
    if self.grad_clip > 0:
      # each gradient's sum of squares is a kernel of its own. Left lazy, tinygrad fuses the whole norm (a reduction over
      # every gradient) into each parameter's update kernel, where a GPU recomputes it in every thread block (issue 13's
      # r_2816_..._16384 kernels, 60% of a CUDA step); as one kernel of its own, all its sums but one would run serially
      # in each of that kernel's few GPU threads
      norm = Tensor.stack(*[(g.float() * g.float()).sum().contiguous() for g in grads]).sum().sqrt()
      clip = (self.grad_clip / (norm + 1e-6)).minimum(1.0).contiguous()
      grads = [g * clip for g in grads]
    b1, b2 = self.beta1, self.beta2
    bias1, bias2 = 1 - b1 ** step, 1 - b2 ** step
    out = []
    for p, g, m, v, wd in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, self.decays):
      m.assign(b1 * m + (1 - b1) * g)
      v.assign(b2 * v + (1 - b2) * g * g)
      p_decayed = p * (1 - lr * wd) if wd else p
      p.assign((p_decayed - (lr / bias1) * m / (v.sqrt() / bias2.sqrt() + self.eps)).cast(p.dtype))
      out += [p, m, v]
    return out

  def state_dict(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The moments as numpy, named exp_avg.NAME and exp_avg_sq.NAME after the params' names (`shapes`, in the params'
    order), in those logical shapes (checkpoint.unpadded: no kernel runs)."""
    out = {}
    for (n, s), m, v in zip(shapes.items(), self.exp_avg, self.exp_avg_sq, strict=True):
      out["exp_avg." + n], out["exp_avg_sq." + n] = unpadded(m, s), unpadded(v, s)
    return out

  def load_state_dict(self, state: dict[str, np.ndarray], step: int, shapes: dict[str, tuple[int, ...]]) -> None:
    """The moments from a state_dict (named and shaped as `shapes`, zero-padded back to the params'), and the update
    count."""
    self.step = step
    for n, m, v in zip(shapes, self.exp_avg, self.exp_avg_sq, strict=True):
      for t, key in ((m, "exp_avg." + n), (v, "exp_avg_sq." + n)):
        if key not in state: raise UserError(f"checkpoint optimizer state lacks {key}")
        t.assign(tensor_like(t, pad_array(state[key].astype(np.float32), t.shape))).realize()
