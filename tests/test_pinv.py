"""pinv against numpy float64: values (numpy.linalg.pinv), gradients (finite differences and the Golub–Pereyra
derivative of the pseudo-inverse), the rank check, TinyJit, and that the op is realized once per step."""
import math
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from tinygrad import Tensor, TinyJit
from tinygrad.helpers import GlobalCounters
from tinystory import UserError
from tinystory.pinv import (pinv, gram_condition, check_full_rank, newton_schulz_steps, RankDeficientError,
                            MAX_GRAM_COND, NEWTON_SCHULZ_TOL)

SHAPES = [(361, 128), (90, 128), (7, 3), (3, 7), (5, 5)]

def rel_err(a, b) -> float: return float(np.linalg.norm(a - b) / np.linalg.norm(b))

def random_embedding(shape, seed=0, std=0.02) -> np.ndarray:
  return np.random.default_rng(seed).normal(0, std, shape).astype(np.float32)

def conditioned(shape, cond, seed=1) -> np.ndarray:
  """U diag(s) Vᵀ with singular values log-spaced from 0.3 down to 0.3/cond, rounded to float32."""
  rng, k = np.random.default_rng(seed), min(shape)
  U, _ = np.linalg.qr(rng.normal(size=(shape[0], k)))
  W, _ = np.linalg.qr(rng.normal(size=(shape[1], k)))
  return np.ascontiguousarray((U * np.logspace(0, -math.log10(cond), k) * 0.3) @ W.T, np.float32)

def re_escape(s: str) -> str: return s.replace("^", r"\^")

def ref_pinv(E) -> np.ndarray: return np.linalg.pinv(np.asarray(E, np.float64))

def ref_grad(E, G) -> np.ndarray:
  """d sum(pinv(E) * G) / dE for constant-rank E (Golub & Pereyra 1973): all three terms, whatever the orientation."""
  E, G = np.asarray(E, np.float64), np.asarray(G, np.float64)
  P, (V, d) = np.linalg.pinv(E), E.shape
  return -P.T @ G @ P.T + (np.eye(V) - E @ P) @ G.T @ P @ P.T + P.T @ P @ G.T @ (np.eye(d) - P @ E)

def fd_grad(E, G, entries, h=1e-6) -> np.ndarray:
  E, G = np.asarray(E, np.float64), np.asarray(G, np.float64)
  def f(X): return float((np.linalg.pinv(X) * G).sum())
  out = []
  for i, j in entries:
    step = np.zeros_like(E); step[i, j] = h
    out.append((f(E + step) - f(E - step)) / (2 * h))
  return np.array(out)

def tiny_value_and_grad(E: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  t = Tensor(E)
  P = pinv(t)
  g, = (P * Tensor(G)).sum().gradient(t)
  Tensor.realize(P, g)
  return P.numpy(), g.numpy()

# ---- values ----

@pytest.mark.parametrize("shape", SHAPES)
def test_matches_numpy_pinv_on_random_embeddings(shape):
  E = random_embedding(shape)
  P = pinv(Tensor(E)).numpy()
  assert P.shape == shape[::-1]
  assert rel_err(P, ref_pinv(E)) < 1e-5

@pytest.mark.parametrize("shape", [(361, 128), (90, 128)])
@pytest.mark.parametrize("cond", [1e4, 1e5])
def test_matches_numpy_pinv_on_ill_conditioned_embeddings(shape, cond):
  # 1e5 = sqrt(MAX_GRAM_COND), the worst condition pinv claims. The reference is the pinv of the float32-rounded E:
  # rounding E itself moves the pinv by up to cond(E)·2⁻²⁴ (6e-3 at 1e5), which no algorithm can undo
  E = conditioned(shape, cond)
  assert math.isclose(gram_condition(Tensor(E)), cond ** 2, rel_tol=1e-3)
  assert rel_err(pinv(Tensor(E)).numpy(), ref_pinv(E)) < 1e-5

@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.sampled_from([3, 90, 128, 361]))
def test_newton_schulz_schedule_brings_every_admissible_eigenvalue_to_one(t, n):
  # an eigenvalue of M·X₀ is λ/‖M‖_F in [1/(MAX_GRAM_COND·√n), 1]; follow it through the same steps spd_inverse takes
  a = 1 / (MAX_GRAM_COND * math.sqrt(n))
  mu = a ** (1 - t)  # log-uniform over [a, 1]
  for _ in range(newton_schulz_steps(n)):
    c = 2 / (1 + a)
    mu, a = 1 - (1 - c * mu) ** 2, 1 - ((1 - a) / (1 + a)) ** 2
  assert 1 - NEWTON_SCHULZ_TOL * 1.01 <= mu <= 1

# ---- gradients ----

@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (5, 5)])
def test_gradient_matches_finite_differences_and_formula_on_small_matrices(shape):
  E, G = random_embedding(shape, seed=2, std=1.0), random_embedding(shape[::-1], seed=3, std=1.0)
  _, g = tiny_value_and_grad(E, G)
  entries = [(i, j) for i in range(shape[0]) for j in range(shape[1])]
  assert rel_err(g.ravel(), fd_grad(E, G, entries)) < 1e-5
  assert rel_err(g, ref_grad(E, G)) < 1e-5

@pytest.mark.parametrize("shape", [(361, 128), (90, 128)])
def test_gradient_matches_formula_and_sampled_finite_differences_on_embeddings(shape):
  E, G = random_embedding(shape, seed=4), random_embedding(shape[::-1], seed=5, std=1.0)
  _, g = tiny_value_and_grad(E, G)
  assert rel_err(g, ref_grad(E, G)) < 1e-5
  rng = np.random.default_rng(6)
  entries = list(zip(rng.integers(0, shape[0], 6), rng.integers(0, shape[1], 6)))
  fd = fd_grad(E, G, entries, h=1e-6 * 0.02)
  np.testing.assert_allclose([g[i, j] for i, j in entries], fd, rtol=1e-4, atol=1e-5 * np.abs(g).max())

def test_gradient_error_grows_like_cond_times_float32_eps():
  # the backward runs in float32 on the float32 P: the projector I - EP carries an error of ~cond(E)·2⁻²⁴ (docs)
  for shape in [(361, 128), (90, 128)]:
    E, G = conditioned(shape, 1e3), random_embedding(shape[::-1], seed=7, std=1.0)
    _, g = tiny_value_and_grad(E, G)
    assert rel_err(g, ref_grad(E, G)) < 1e3 * 2 ** -24 * 10

# ---- rank ----

@pytest.mark.parametrize("shape", [(361, 128), (90, 128)])
def test_gram_condition_is_cond_of_the_smaller_gram(shape):
  E = random_embedding(shape)
  s = np.linalg.svd(E.astype(np.float64), compute_uv=False)
  assert math.isclose(gram_condition(Tensor(E)), (s[0] / s[-1]) ** 2, rel_tol=1e-6)
  assert check_full_rank(Tensor(E)) == gram_condition(Tensor(E))

@pytest.mark.parametrize("shape,gram", [((361, 128), "E^T E"), ((90, 128), "E E^T")])
def test_rank_deficient_embedding_is_a_clear_error(shape, gram):
  E = random_embedding(shape)
  if gram == "E^T E": E[:, 5] = E[:, 7]  # two equal columns: rank 127
  else: E[3] = 2 * E[8]                  # two proportional rows: rank 89
  with pytest.raises(RankDeficientError, match=rf"^embedding {shape[0]}x{shape[1]} is numerically rank deficient: "
                     rf"cond\({re_escape(gram)}\) = \S+ exceeds 1e\+10; pinv\(E\) would be inaccurate \(lower the "
                     r"learning rate, or resume from an earlier checkpoint\)$") as e:
    check_full_rank(Tensor(E))
  assert isinstance(e.value, UserError) and isinstance(e.value, FloatingPointError)
  assert float(str(e.value).split(" = ")[1].split()[0]) > MAX_GRAM_COND

def test_ill_conditioned_beyond_the_limit_and_non_finite_embeddings_are_errors():
  with pytest.raises(RankDeficientError, match=r"cond\(E\^T E\) = \S+ exceeds") as e:
    check_full_rank(Tensor(conditioned((361, 128), 1e6)))
  assert math.isclose(float(str(e.value).split(" = ")[1].split()[0]), 1e12, rel_tol=0.01)
  E = random_embedding((90, 128)); E[4, 4] = np.nan
  assert math.isnan(gram_condition(Tensor(E)))
  with pytest.raises(RankDeficientError, match=r"cond\(E E\^T\) = nan exceeds"):
    check_full_rank(Tensor(E))

# ---- in a training step ----

@pytest.mark.parametrize("shape", [(361, 128), (90, 128)])
def test_jitted_step_follows_an_embedding_updated_in_place(shape):
  E = Tensor(random_embedding(shape)).contiguous().realize()
  G = random_embedding(shape[::-1], seed=8, std=1.0)
  Gt = Tensor(G).realize()
  @TinyJit
  def step():
    P = pinv(E)
    g, = (P * Gt).sum().gradient(E)
    Tensor.realize(P, g)
    return P, g
  for seed in range(4):  # the first calls capture, the later ones replay the captured kernels
    e = random_embedding(shape, seed=10 + seed)
    E.assign(Tensor(e)).realize()
    P, g = step()
    assert rel_err(P.numpy(), ref_pinv(e)) < 1e-5
    assert rel_err(g.numpy(), ref_grad(e, G)) < 1e-5

def test_pinv_runs_once_per_step_and_is_not_fused_into_the_logits_matmul():
  V, d, N = 361, 128, 2048
  rng = np.random.default_rng(9)
  E = Tensor(random_embedding((V, d))).realize()
  h, y = Tensor(rng.normal(size=(N, d)).astype(np.float32)).realize(), Tensor(rng.integers(0, V, N)).realize()
  GlobalCounters.reset()
  pinv(E).realize()
  pinv_kernels, pinv_ops = GlobalCounters.kernel_count, GlobalCounters.global_ops
  loss = (h @ pinv(E)).sparse_categorical_crossentropy(y)
  grads = loss.gradient(E, h)
  GlobalCounters.reset()
  Tensor.realize(loss, *grads)
  # a second Newton–Schulz pass would add 2 kernels per step; pinv recomputed per logit would multiply the ops by ~N
  assert GlobalCounters.kernel_count < pinv_kernels + newton_schulz_steps(d)
  logits_ops = 3 * 2 * N * d * V  # forward, and backward to h and to pinv(E)
  assert GlobalCounters.global_ops < 2 * pinv_ops + 1.5 * logits_ops
