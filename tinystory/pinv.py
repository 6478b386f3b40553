"""The pseudo-inverse unembedding: logits = h @ pinv(E) for the (vocab, dim) token embedding E (docs/pinv.md).

pinv(E) uses the normal equations, (EᵀE)⁻¹Eᵀ when vocab >= dim and Eᵀ(EEᵀ)⁻¹ when vocab < dim. The small Gram is
inverted in float64 by a scaled Newton–Schulz iteration: matmuls only and a fixed number of steps, so it jits and each
step reuses the same three kernels. The gradient is the exact derivative of the pseudo-inverse, not backprop through
the iteration.
"""
import math
import numpy as np
from tinygrad import Tensor, dtypes
from tinystory import UserError

# The largest cond(EᵀE) = cond(E)² that pinv handles (to float32 precision, in a fixed number of steps). At
# cond(E) = 1e5, rounding E to float32 already moves pinv(E) by up to cond(E)·2⁻²⁴ ≈ 0.6%: beyond, E is numerically
# rank deficient.
MAX_GRAM_COND = 1e10
GRAM_DTYPE = dtypes.float64  # cond(EᵀE) = cond(E)² would eat float32's 7 digits; the CPU backend has float64
NEWTON_SCHULZ_TOL = 1e-14    # bound on |1 - eigenvalue of M·X| after the last step, well below float32 eps

class RankDeficientError(UserError, FloatingPointError):
  """The embedding lost full rank (cond(EᵀE) > MAX_GRAM_COND): its pseudo-inverse is no longer accurate."""

def newton_schulz_steps(n: int, max_cond: float = MAX_GRAM_COND, tol: float = NEWTON_SCHULZ_TOL) -> int:
  """Steps after which every eigenvalue of M·X lies in [1 - tol, 1] for every n x n SPD M with cond(M) <= max_cond.

  X₀ = I/‖M‖_F puts the eigenvalues μ of M·X₀ in [a, 1] with a = 1/(max_cond·√n), since λmax <= ‖M‖_F <= √n·λmax. The
  step X ← cX(2I - cMX), c = 2/(1+a), maps [a, 1] into [1 - ((1-a)/(1+a))², 1]: small μ grow 4x per step (2x for plain
  Newton–Schulz) until the interval is near 1, where convergence is quadratic."""
  a, steps = 1 / (max_cond * math.sqrt(n)), 0
  while 1 - a > tol: a, steps = 1 - ((1 - a) / (1 + a)) ** 2, steps + 1
  return steps

def spd_inverse(M: Tensor) -> Tensor:
  """Inverse of a symmetric positive definite M with cond(M) <= MAX_GRAM_COND, by scaled Newton–Schulz."""
  n = M.shape[0]
  X = Tensor.eye(n, dtype=M.dtype).to(M.device) / (M * M).sum().sqrt()
  # the lower bound a of the spectrum lives on the device: a Python float would be a different constant in every
  # step's kernel (one compile per step); as a buffer, all steps share the same kernels. float64: c = 2/(1+a) must
  # not round to 2, which would send the eigenvalue 1 to 0
  a = Tensor.full((), 1 / (MAX_GRAM_COND * math.sqrt(n)), dtype=dtypes.float64, device=M.device).contiguous()
  for _ in range(newton_schulz_steps(n)):
    c = (2 / (1 + a)).cast(M.dtype)
    X = 2 * c * X - c * c * (X @ (M @ X).contiguous())
    a = (1 - ((1 - a) / (1 + a)) ** 2).contiguous()
  return X

def pinv_value(E: Tensor) -> Tensor:
  """(vocab, dim) -> (dim, vocab) pseudo-inverse of a full-rank E via the normal equations, without a gradient."""
  E64 = E.detach().cast(GRAM_DTYPE)
  # spd_inverse's rounding error is X·F with F small, so E multiplies X from the left in both orientations: (EX)ᵀ
  # rather than XEᵀ keeps P's relative error near cond(Gram)·eps instead of cond(E)·cond(Gram)·eps (docs/pinv.md)
  P = (E64 @ spd_inverse(E64.T @ E64)).T if E.shape[0] >= E.shape[1] else E64.T @ spd_inverse(E64 @ E64.T)
  return P.cast(E.dtype).contiguous()

def pinv_differential(E: Tensor, P: Tensor, dE: Tensor) -> Tensor:
  """dP, the derivative of P = pinv(E) along dE (P, E constants). With full column rank (vocab >= dim):
  dP = -P dE P + PPᵀ dEᵀ (I - EP); with full row rank: dP = -P dE P + (I - PE) dEᵀ PᵀP. Products are grouped so
  that no intermediate is a max(vocab, dim) square."""
  if E.shape[0] >= E.shape[1]:
    AdEt = (P @ P.T) @ dE.T
    return -(P @ dE) @ P + AdEt - (AdEt @ E) @ P
  dEtB = dE.T @ (P.T @ P)
  return -P @ (dE @ P) + dEtB - P @ (E @ dEtB)

def pinv(E: Tensor) -> Tensor:
  """(vocab, dim) -> (dim, vocab) Moore–Penrose pseudo-inverse of a full-rank E, contiguous (realized once, never
  recomputed inside the matmul that reads it), differentiable with the exact derivative of the pseudo-inverse.

  The value is P = pinv_value(E); the gradient comes from P + dP(E - E.detach()): the perturbation is zero (tinygrad
  folds it away in the forward pass) but carries the gradient, so backward applies dP's adjoint at the detached E, in
  E's dtype (relative error ~cond(E)·eps)."""
  E0, P = E.detach(), pinv_value(E)
  return (P + pinv_differential(E0, P, E - E0)).contiguous()

def gram_condition(E: Tensor) -> float:
  """cond of the smaller Gram (EᵀE or EEᵀ) = cond(E)², from its float64 eigenvalues (outside the graph, for logging:
  it copies E to the host; ~1 ms). inf when E is numerically rank deficient, nan when E has non-finite entries."""
  e = E.numpy().astype(np.float64)
  if not np.isfinite(e).all(): return math.nan
  w = np.linalg.eigvalsh(e.T @ e if e.shape[0] >= e.shape[1] else e @ e.T)  # ascending; accurate to ~w[-1]·1e-16
  return float(w[-1] / w[0]) if w[0] > 0 else math.inf

def check_full_rank(E: Tensor) -> float:
  """gram_condition(E), or RankDeficientError when it is beyond MAX_GRAM_COND (pinv would be inaccurate or nan)."""
  cond = gram_condition(E)
  if not cond <= MAX_GRAM_COND:
    (V, d), gram = E.shape, "E^T E" if E.shape[0] >= E.shape[1] else "E E^T"
    raise RankDeficientError(f"embedding {V}x{d} is numerically rank deficient: cond({gram}) = {cond:.3g} exceeds "
                             f"{MAX_GRAM_COND:.0e}; pinv(E) would be inaccurate (lower the learning rate, or resume "
                             "from an earlier checkpoint)")
  return cond
