"""The model against an independent float64 numpy implementation of llama2.c's equations (complex-number RoPE, a
per-head attention loop, np.linalg.pinv), plus llama2.c's names, counts, init and the zero padding."""
import math
import numpy as np
import pytest
from tinygrad import Tensor, Context, UOp
from tinygrad.nn.optim import AdamW
from tinystory import UserError
from tinystory.config import ModelArgs
from tinystory.model import KVCache, Transformer, attend, attend_causal, causal_mask, matvec

SEED_ARGS = dict(dim=128, n_layers=4, n_heads=16, n_kv_heads=16, vocab_size=361, multiple_of=1, max_seq_len=128,
                 dropout=0.15)
# small: odd vocab (37 -> 48) and hidden (42 -> 48) sizes, so padding is exercised
SMALL_ARGS = dict(dim=16, n_layers=2, n_heads=4, n_kv_heads=4, vocab_size=37, multiple_of=1, max_seq_len=16, dropout=0.1)

# ---- the reference ----

def ref_logits(sd: dict, a: ModelArgs, tokens: np.ndarray) -> np.ndarray:
  w = {n: np.asarray(v.numpy() if isinstance(v, Tensor) else v, np.float64) for n, v in sd.items()}
  B, T = tokens.shape
  hd, kvh = a.dim // a.n_heads, a.n_kv_heads or a.n_heads
  rot = np.exp(1j * np.outer(np.arange(T), 10000.0 ** (-np.arange(0, hd, 2) / hd)))  # (T, hd/2) unit complex numbers
  def rope(z):  # channel pairs (2j, 2j+1) as one complex number, rotated by its position's angle
    c = (z[..., 0::2] + 1j * z[..., 1::2]) * rot[None, :, None, :]
    return np.stack([c.real, c.imag], -1).reshape(z.shape)
  def norm(z, g): return z / np.sqrt((z ** 2).mean(-1, keepdims=True) + a.norm_eps) * g
  future = np.triu(np.ones((T, T), bool), 1)
  x = w["tok_embeddings.weight"][tokens]
  for i in range(a.n_layers):
    p = f"layers.{i}."
    z = norm(x, w[p+"attention_norm.weight"])
    q = rope((z @ w[p+"attention.wq.weight"].T).reshape(B, T, a.n_heads, hd))
    k = rope((z @ w[p+"attention.wk.weight"].T).reshape(B, T, kvh, hd))
    v = (z @ w[p+"attention.wv.weight"].T).reshape(B, T, kvh, hd)
    heads = []
    for h in range(a.n_heads):
      j = h // (a.n_heads // kvh)  # the kv head shared by this query head's group
      s = np.where(future, -np.inf, q[:, :, h] @ k[:, :, j].transpose(0, 2, 1) / math.sqrt(hd))
      s = np.exp(s - s.max(-1, keepdims=True))
      heads.append(s / s.sum(-1, keepdims=True) @ v[:, :, j])
    x = x + np.concatenate(heads, -1) @ w[p+"attention.wo.weight"].T
    z = norm(x, w[p+"ffn_norm.weight"])
    g = z @ w[p+"feed_forward.w1.weight"].T + w.get(p+"feed_forward.w1.bias", 0)
    x = x + (g / (1 + np.exp(-g)) * (z @ w[p+"feed_forward.w3.weight"].T)) @ w[p+"feed_forward.w2.weight"].T
  x = norm(x, w["norm.weight"])
  E = w["tok_embeddings.weight"]
  scaled = lambda: np.linalg.pinv(E) * np.exp(w["output.log_scale"][0]) * 0.02 ** 2 * max(a.vocab_size, a.dim)
  return x @ {"pinv": lambda: np.linalg.pinv(E), "tied": lambda: E.T, "untied": lambda: w["output.weight"].T,
              "pinv_scaled": scaled}[a.unembedding]()

def ref_loss(sd, a, tokens, targets):
  logits = ref_logits(sd, a, tokens)
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.take_along_axis(logp, targets[..., None], -1).mean()

def random_tokens(vocab, B, T, seed=0): return np.random.default_rng(seed).integers(0, vocab, (B, T)).astype(np.int32)

def assert_close(got, ref, rtol=1e-4):
  np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())

# ---- forward ----

def small_model(unembedding: str, ffn_bias: bool, n_kv_heads: int) -> tuple[Transformer, dict]:
  """A small model and its state dict; llama2.c zero-inits biases: they (and the norm gains) are randomised so that the
  tests see them."""
  a = ModelArgs(**{**SMALL_ARGS, "n_kv_heads": n_kv_heads}, ffn_bias=ffn_bias, unembedding=unembedding)
  m = Transformer(a, seed=1)
  rng = np.random.default_rng(2)
  sd = {n: v.numpy() + (rng.normal(0, 0.1, v.shape) if v.ndim == 1 else 0) for n, v in m.state_dict().items()}
  m.load_state_dict(sd)
  return m, sd

@pytest.mark.parametrize("unembedding,ffn_bias,n_kv_heads", [
  ("pinv", True, 4), ("pinv", False, 2), ("tied", True, 2), ("tied", False, 4), ("untied", True, 1), ("untied", False, 4),
  ("pinv_scaled", True, 2)])
def test_small_config_logits_match_numpy_reference(unembedding, ffn_bias, n_kv_heads):
  m, sd = small_model(unembedding, ffn_bias, n_kv_heads)
  tokens = random_tokens(37, 2, 11)
  logits = m(Tensor(tokens)).numpy()
  assert logits.shape == (2, 11, 37) and logits.dtype == np.float32
  assert_close(logits, ref_logits(sd, m.args, tokens))

@pytest.mark.slow
@pytest.mark.parametrize("unembedding", ["pinv", "tied"])
def test_seed_config_logits_match_numpy_reference(unembedding):
  a = ModelArgs(**SEED_ARGS, unembedding=unembedding)
  m = Transformer(a, seed=0)
  tokens = random_tokens(361, 4, 128)
  assert_close(m(Tensor(tokens)).numpy(), ref_logits(m.state_dict(), a, tokens))

def test_attention_is_causal():
  m = Transformer(ModelArgs(**SMALL_ARGS), seed=0)
  tokens = random_tokens(37, 1, 10)
  changed = tokens.copy()
  changed[0, 6:] = (changed[0, 6:] + 1) % 37
  a, b = m(Tensor(tokens)).numpy(), m(Tensor(changed)).numpy()
  np.testing.assert_array_equal(a[:, :6], b[:, :6])
  assert not np.allclose(a[:, 6:], b[:, 6:])

@pytest.mark.parametrize("T", [1, 6, 7])
def test_causal_halves_are_the_whole_attention(T):
  """attend_causal (the first half of the queries against the first half of the keys, the rest against all) against
  softmax attention in float64 numpy, and its gradients against attend's over all the keys (7: odd, not split)."""
  rng = np.random.default_rng(T)
  q, k, v, g = (rng.standard_normal((2, 3, T, 4)) for _ in range(4))
  def run(f):
    ts = [Tensor(t) for t in (q, k, v)]
    out = f(*ts, causal_mask(T), 0.0)
    grads = (out * Tensor(g)).sum().gradient(*ts)  # before out is realized (which drops the graph)
    return [out.numpy()] + [t.numpy() for t in grads]
  s = np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, q @ k.swapaxes(-1, -2) / 2)
  p = np.exp(s - s.max(-1, keepdims=True))
  got, whole = run(attend_causal), run(attend)
  np.testing.assert_allclose(got[0], p / p.sum(-1, keepdims=True) @ v, rtol=1e-12, atol=1e-14)
  for a, b in zip(got, whole, strict=True): np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)

def test_dropout_only_under_training():
  m = Transformer(ModelArgs(**SMALL_ARGS), seed=0)
  x = Tensor(random_tokens(37, 2, 8))
  np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())
  with Context(TRAINING=1): a, b = m(x).numpy(), m(x).numpy()
  assert not np.allclose(a, b)

def test_sequence_longer_than_max_seq_len_is_refused():
  with pytest.raises(UserError, match=r"^sequence of 17 tokens is longer than max_seq_len=16$"):
    Transformer(ModelArgs(**SMALL_ARGS), seed=0)(Tensor(random_tokens(37, 1, 17)))

# ---- decoding with a KV cache ----

@pytest.mark.parametrize("unembedding,ffn_bias,n_kv_heads", [("pinv", True, 4), ("tied", True, 2), ("untied", False, 1),
                                                              ("pinv_scaled", False, 2)])
@pytest.mark.slow
def test_cached_decoding_equals_the_full_forward(unembedding, ffn_bias, n_kv_heads):
  """A prefill of 5 tokens, then one token at a time at a Variable position (as the compiled step runs), against the
  full forward and the float64 reference."""
  m, sd = small_model(unembedding, ffn_bias, n_kv_heads)
  tokens, cache, P = random_tokens(37, 1, 16, seed=3), KVCache(m), 5
  pos = UOp.variable("pos", 0, 15)
  got = [m(Tensor(tokens[:, :P]), 0, cache).numpy()]
  got += [m(Tensor(tokens[:, n:n + 1]), pos.bind(n), cache).numpy() for n in range(P, 16)]
  got = np.concatenate(got, axis=1)
  assert_close(got, m(Tensor(tokens)).numpy(), rtol=1e-5)
  assert_close(got, ref_logits(sd, m.args, tokens))

def test_decoding_steps_from_position_zero_with_int_positions():
  m, sd = small_model("pinv", True, 2)
  tokens, cache = random_tokens(37, 1, 7, seed=4), KVCache(m)
  got = np.concatenate([m(Tensor(tokens[:, n:n + 1]), n, cache).numpy() for n in range(7)], axis=1)
  assert_close(got, ref_logits(sd, m.args, tokens))

@pytest.mark.parametrize("rows, out, inp", [(1, 24, 32), (3, 5, 16), (1, 7, 12)])  # 12: not a multiple of 8
def test_matvec_is_x_times_w_transposed(rows, out, inp):
  rng = np.random.default_rng(rows + out)
  x, w = rng.standard_normal((rows, inp)).astype(np.float32), rng.standard_normal((out, inp)).astype(np.float32)
  got = matvec(Tensor(x), Tensor(w)).numpy()
  np.testing.assert_allclose(got, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)

# ---- gradients ----

def test_gradients_match_finite_differences():
  a = ModelArgs(dim=8, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=11, multiple_of=1, max_seq_len=8, dropout=0.0)
  m = Transformer(a, seed=3)
  sd = {n: v.numpy().astype(np.float64) for n, v in m.state_dict().items()}
  rng = np.random.default_rng(4)
  for n in sd:  # non-trivial norm gains and biases; larger weights so that every path matters
    sd[n] = sd[n] + rng.normal(0, 0.3, sd[n].shape) if sd[n].ndim == 1 else sd[n] * 10
  m.load_state_dict(sd)
  tokens, targets = random_tokens(11, 2, 6, seed=5), random_tokens(11, 2, 6, seed=6)
  loss = m(Tensor(tokens)).sparse_categorical_crossentropy(Tensor(targets))
  names = ["tok_embeddings.weight", "layers.0.attention.wq.weight", "layers.0.attention.wk.weight",
           "layers.1.attention.wv.weight", "layers.0.attention.wo.weight", "layers.1.feed_forward.w1.weight",
           "layers.0.feed_forward.w1.bias", "layers.1.feed_forward.w2.weight", "layers.0.feed_forward.w3.weight",
           "layers.1.attention_norm.weight", "layers.0.ffn_norm.weight", "norm.weight"]
  # (take gradients before realizing the loss: tinygrad's realize drops the graph they need)
  grads = dict(zip(names, loss.gradient(*[m.weights[n] for n in names])))
  assert loss.item() == pytest.approx(ref_loss(sd, a, tokens, targets), rel=1e-4)
  rng = np.random.default_rng(7)
  for n in names:
    g = grads[n].numpy()
    for idx in [tuple(rng.integers(0, s) for s in sd[n].shape) for _ in range(3)] + [np.unravel_index(np.abs(g).argmax(), g.shape)]:
      h, plus, minus = 1e-5, {**sd, n: sd[n].copy()}, {**sd, n: sd[n].copy()}
      plus[n][idx] += h
      minus[n][idx] -= h
      numeric = (ref_loss(plus, a, tokens, targets) - ref_loss(minus, a, tokens, targets)) / (2 * h)
      assert g[idx] == pytest.approx(numeric, rel=2e-3, abs=2e-3 * float(np.abs(g).max())), (n, idx)

@pytest.mark.slow
@pytest.mark.parametrize("unembedding", ["pinv", "untied"])
def test_padding_changes_nothing_and_stays_zero(unembedding):
  a = ModelArgs(**{**SMALL_ARGS, "n_layers": 1, "dropout": 0.0}, unembedding=unembedding)  # 1 layer: a smaller graph to schedule
  plain, padded = Transformer(a, seed=0, pad_to=1), Transformer(a, seed=0, pad_to=16)
  assert padded.weights["tok_embeddings.weight"].shape == (48, 16) and padded.weights["layers.0.feed_forward.w2.weight"].shape == (16, 48)
  assert all(plain.weights[n].shape == s for n, s in plain.shapes.items())
  tokens, targets = Tensor(random_tokens(37, 2, 9)), Tensor(random_tokens(37, 2, 9, seed=1))
  losses, grads = [], []
  for m in (plain, padded):
    loss = m(tokens).sparse_categorical_crossentropy(targets)
    grads.append([g.numpy() for g in loss.gradient(*m.parameters())])
    losses.append(loss.item())
  assert losses[0] == pytest.approx(losses[1], rel=1e-6)
  np.testing.assert_allclose(plain(tokens).numpy(), padded(tokens).numpy(), rtol=1e-5, atol=1e-6)
  for (n, s), g0, g1 in zip(padded.shapes.items(), *grads):
    logical = tuple(slice(0, d) for d in s)
    assert np.abs(g0).max() > 0, n
    np.testing.assert_allclose(g1[logical], g0, rtol=1e-4, atol=1e-7, err_msg=n)
    assert np.count_nonzero(g1) == np.count_nonzero(g1[logical]), f"gradient flows into the padding of {n}"
  # one AdamW step with weight decay leaves the padding exactly zero
  with Context(TRAINING=1):
    opt = AdamW(padded.parameters(), lr=1e-2, weight_decay=0.1)
    opt.zero_grad()
    padded(tokens).sparse_categorical_crossentropy(targets).backward()
    opt.step()
  for (n, s), t in zip(padded.shapes.items(), padded.parameters()):
    w = t.numpy()
    assert np.count_nonzero(w) == np.count_nonzero(w[tuple(slice(0, d) for d in s)]), n

# ---- names, counts, init ----

SEED_STATE_DICT = ["tok_embeddings.weight [361, 128]"] + [line for i in range(4) for line in [
  f"layers.{i}.attention.wq.weight [128, 128]", f"layers.{i}.attention.wk.weight [128, 128]",
  f"layers.{i}.attention.wv.weight [128, 128]", f"layers.{i}.attention.wo.weight [128, 128]",
  f"layers.{i}.feed_forward.w1.weight [341, 128]", f"layers.{i}.feed_forward.w1.bias [341]",
  f"layers.{i}.feed_forward.w2.weight [128, 341]", f"layers.{i}.feed_forward.w3.weight [341, 128]",
  f"layers.{i}.attention_norm.weight [128]", f"layers.{i}.ffn_norm.weight [128]"]] + ["norm.weight [128]"]

def test_seed_config_state_dict_has_llama2c_names_and_logical_shapes_in_model_order():
  sd = Transformer(ModelArgs(**SEED_ARGS), seed=0).state_dict()
  assert [f"{n} {list(t.shape)}" for n, t in sd.items()] == SEED_STATE_DICT
  untied = Transformer(ModelArgs(**SEED_ARGS, ffn_bias=False, unembedding="untied"), seed=0).state_dict()
  assert list(untied)[-1] == "output.weight" and untied["output.weight"].shape == (361, 128)
  assert not any(n.endswith("bias") for n in untied)

def test_seed_config_parameter_counts():
  m = Transformer(ModelArgs(**SEED_ARGS), seed=0)
  assert m.args.hidden_size == 341 and m.padded_hidden == 352 and m.padded_vocab == 368
  assert m.num_params() == ((29, 832_128), (13, 2_516))
  assert len(m.parameters()) == 42
  # the optimizer sees the padded tensors: vocab 361 -> 368, hidden 341 -> 352
  assert sum(t.numel() for t in m.parameters()) == 368 * 128 + 4 * (4 * 128 * 128 + 3 * 352 * 128 + 352 + 2 * 128) + 128
  assert Transformer(ModelArgs(**SEED_ARGS, unembedding="untied"), seed=0).num_params() == ((30, 878_336), (13, 2_516))

def test_seed_config_repr_is_llama2c_dataclass_repr():
  assert repr(ModelArgs(**SEED_ARGS)) == ("ModelArgs(dim=128, n_layers=4, n_heads=16, n_kv_heads=16, vocab_size=361, "
    "hidden_dim=None, multiple_of=1, norm_eps=1e-05, max_seq_len=128, dropout=0.15)")
  assert repr(ModelArgs(**SEED_ARGS, ffn_bias=False, unembedding="tied")).endswith(
    "max_seq_len=128, dropout=0.15, ffn_bias=False, unembedding='tied')")

def test_llama2c_defaults_and_hidden_size_rule():
  a = ModelArgs()
  assert (a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.vocab_size, a.multiple_of, a.max_seq_len, a.dropout) == \
    (4096, 32, 32, None, 32000, 256, 2048, 0.0)
  assert a.hidden_size == 11008  # Llama 7B's
  assert ModelArgs(dim=128, multiple_of=32).hidden_size == 352 and ModelArgs(dim=128, hidden_dim=100).hidden_size == 100

def test_init_is_seeded_and_follows_llama2c():
  a = ModelArgs(**SEED_ARGS)
  sd = {n: t.numpy() for n, t in Transformer(a, seed=5).state_dict().items()}
  again = Transformer(a, seed=5).state_dict()
  assert all(np.array_equal(sd[n], again[n].numpy()) for n in sd)
  assert not np.array_equal(sd["tok_embeddings.weight"], Transformer(a, seed=6).state_dict()["tok_embeddings.weight"].numpy())
  assert sd["layers.0.attention.wq.weight"].std() == pytest.approx(0.02, rel=0.03)
  assert sd["tok_embeddings.weight"].std() == pytest.approx(0.02, rel=0.03)
  assert sd["layers.1.attention.wo.weight"].std() == pytest.approx(0.02 / math.sqrt(8), rel=0.03)
  assert sd["layers.2.feed_forward.w3.weight"].std() == pytest.approx(0.02 / math.sqrt(8), rel=0.03)
  assert sd["layers.2.feed_forward.w2.weight"].std() == pytest.approx(0.02, rel=0.03)
  assert np.all(sd["layers.3.feed_forward.w1.bias"] == 0) and np.all(sd["norm.weight"] == 1)

# ---- initial loss ----

def initial_loss(unembedding, vocab_size=361):
  m = Transformer(ModelArgs(**{**SEED_ARGS, "vocab_size": vocab_size}, unembedding=unembedding), seed=1337)
  tokens = random_tokens(vocab_size, 4, 129, seed=42)
  return m(Tensor(tokens[:, :-1])).sparse_categorical_crossentropy(Tensor(tokens[:, 1:])).item()

def test_initial_loss_with_pinv_unembedding_is_far_above_uniform_like_the_seed():
  # The seed logged 13.09 / 13.07 on real text (this model gives 13.0-13.6 there). h is mostly the input token's own
  # embedding scaled to norm sqrt(dim), and e_x @ pinv(E) is row x of the projection onto E's columns: a logit of about
  # (dim/vocab) / 0.02 = 18 for the input token itself. Uniform random tokens rarely repeat, which costs ~14.6.
  assert 13.5 < initial_loss("pinv") < 15.5

def test_initial_loss_with_tied_unembedding_is_uniform():
  assert initial_loss("tied") == pytest.approx(math.log(361), abs=0.1)

def test_initial_loss_with_pinv_and_vocab_below_dim_is_larger():
  # pinv(E) for 90 < 128 rows: its singular values 1/s(E) are larger still (s(E) ~ 0.02 (sqrt(128) - sqrt(90)) at the low end)
  assert 35 < initial_loss("pinv", vocab_size=90) < 46

# ---- state dict in and out ----

def test_load_state_dict_round_trips_between_padded_and_unpadded_models():
  a = ModelArgs(**SMALL_ARGS, unembedding="untied")
  src, dst = Transformer(a, seed=0, pad_to=1), Transformer(a, seed=1, pad_to=16)
  dst.load_state_dict({n: t.numpy() for n, t in src.state_dict().items()})
  for (n, t), u in zip(src.state_dict().items(), dst.state_dict().values()): np.testing.assert_array_equal(t.numpy(), u.numpy(), n)
  assert np.count_nonzero(dst.weights["output.weight"].numpy()[37:]) == 0

def test_load_state_dict_accepts_llama2c_tied_output_weight():
  a = ModelArgs(**SMALL_ARGS)
  sd = {n: t.numpy() for n, t in Transformer(a, seed=0).state_dict().items()}
  m = Transformer(a, seed=1)
  m.load_state_dict({**sd, "output.weight": sd["tok_embeddings.weight"]})
  np.testing.assert_array_equal(m.state_dict()["tok_embeddings.weight"].numpy(), sd["tok_embeddings.weight"])
  with pytest.raises(UserError, match=r"^state dict has an output.weight that differs from tok_embeddings.weight, "
                                      r"but unembedding='pinv' has no separate output matrix$"):
    m.load_state_dict({**sd, "output.weight": sd["tok_embeddings.weight"] + 1})

def test_load_state_dict_refuses_missing_unknown_and_misshaped():
  m = Transformer(ModelArgs(**SMALL_ARGS), seed=0)
  sd = {n: t.numpy() for n, t in m.state_dict().items()}
  with pytest.raises(UserError, match=r"^state dict lacks norm.weight$"):
    m.load_state_dict({n: v for n, v in sd.items() if n != "norm.weight"})
  with pytest.raises(UserError, match=r"^state dict has unknown layers.2.ffn_norm.weight$"):
    m.load_state_dict({**sd, "layers.2.ffn_norm.weight": sd["norm.weight"]})
  with pytest.raises(UserError, match=r"^state dict lacks layers.0.attention.wq.weight, layers.0.attention.wk.weight, "
                                      r"layers.0.attention.wv.weight and 18 more$"):
    m.load_state_dict({"tok_embeddings.weight": sd["tok_embeddings.weight"]})
  with pytest.raises(UserError, match=r"^state dict layers.1.feed_forward.w1.bias has shape \[41\], expected \[42\]$"):
    m.load_state_dict({**sd, "layers.1.feed_forward.w1.bias": np.zeros(41)})

# ---- argument validation ----

@pytest.mark.parametrize("change,message", [
  (dict(dim=100), "dim=100 is not divisible by n_heads=16"),
  (dict(n_kv_heads=5), "n_heads=16 is not a multiple of n_kv_heads=5"),
  (dict(dim=48), "head dim dim/n_heads = 48/16 = 3 is odd: rotary embeddings need it even"),
  (dict(vocab_size=65_536), "vocab_size=65536 is over 65,535 (tokens are uint16)"),
  (dict(unembedding="transpose"), "unembedding='transpose' is unknown: expected one of 'pinv', 'tied', 'untied', 'pinv_scaled'"),
  (dict(dim=0), "dim=0: expected a positive integer"),
  (dict(n_layers=-1), "n_layers=-1: expected a positive integer"),
  (dict(hidden_dim=0), "hidden_dim=0: expected a positive integer"),
  (dict(max_seq_len=2.5), "max_seq_len=2.5: expected a positive integer"),
  (dict(norm_eps=0.0), "norm_eps=0.0: expected a positive number"),
  (dict(dropout=1.0), "dropout=1.0: expected a number in [0, 1)"),
  (dict(dropout=-0.1), "dropout=-0.1: expected a number in [0, 1)"),
])
def test_bad_model_args_are_refused_with_a_clear_message(change, message):
  with pytest.raises(UserError) as e: ModelArgs(**{**SEED_ARGS, **change})
  assert str(e.value) == message

def test_bad_pad_to_is_refused():
  with pytest.raises(UserError, match=r"^pad_to=0: expected a positive integer$"): Transformer(ModelArgs(**SMALL_ARGS), pad_to=0)

@pytest.mark.slow
@pytest.mark.parametrize("vocab", [37, 200])  # V < d and V > d
def test_pinv_scaled_starts_at_tieds_logit_scale(vocab):
  """pinv_scaled's first logits are about as large as tied's (pinv's are hundreds of times larger: the seed's first
  loss of 13-37 nats), with the same weights; its log scale starts at 0 and is a parameter without weight decay."""
  args = dict(dim=128, n_layers=1, n_heads=16, vocab_size=vocab, max_seq_len=16)
  tokens = Tensor(random_tokens(vocab, 2, 16))
  rms = {u: float(np.sqrt((Transformer(ModelArgs(**args, unembedding=u), seed=0)(tokens).numpy() ** 2).mean()))
         for u in ("tied", "pinv", "pinv_scaled")}
  assert 0.5 < rms["pinv_scaled"] / rms["tied"] < 2 and rms["pinv"] / rms["tied"] > 10
  m = Transformer(ModelArgs(**args, unembedding="pinv_scaled"), seed=0)
  assert m.state_dict()["output.log_scale"].numpy().tolist() == [0.0] and m.shapes["output.log_scale"] == (1,)
  decay, no_decay = Transformer(ModelArgs(**args, unembedding="pinv"), seed=0).num_params()
  assert m.num_params() == (decay, (no_decay[0] + 1, no_decay[1] + 1))
