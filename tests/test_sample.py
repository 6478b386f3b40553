"""Sampling: the sampler's maths, the KV cache against full recompute, streaming text, the command and its errors."""
import json, os
from pathlib import Path
import numpy as np
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory import UserError
from tinystory.config import ModelArgs
from tinystory.model import Transformer
from tinystory.sample import CachedDecoder, TextStream, generate, sample_token, state_dict_lines, token_probs
from tinystory.tokenizer import fit_tokenizer
from tinystory.checkpoint import model_weights, save_checkpoint

STORIES = ["Once upon a time there was a cat. The cat liked milk.", "Tom had a red ball. He threw it high!",
           "Lily saw a big dog; the dog was happy."]
TINY = dict(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=1, max_seq_len=8, dropout=0.1)

def make_run(rdir: Path, tok, seed=0, **over) -> Path:
  """A run dir as train.py writes it: tokenizer.tok and ckpt/ with a random model."""
  rdir.mkdir(parents=True, exist_ok=True)
  tok.save(rdir / "tokenizer.tok")
  args = {**TINY, "vocab_size": tok.vocab_size, "unembedding": "tied", **over}  # tied: diverse text at init
  save_checkpoint(rdir, model_weights(Transformer(ModelArgs(**args), seed=seed)), {},
                  {"model_args": args, "iter_num": 10, "best_val_loss": 1.0, "tokenizer_sha256": tok.sha256})
  return rdir

@pytest.fixture(scope="module")
def char_tok(): return fit_tokenizer(STORIES, "char")

@pytest.fixture(scope="module")
def run(tmp_path_factory, char_tok): return make_run(tmp_path_factory.mktemp("runs") / "tiny", char_tok)

def invoke(*args):
  return CliRunner().invoke(cli, ["sample", *args])

# *** the sampler ***

def ref_probs(logits, temperature, top_k, top_p):
  """float64 reference: sort by (logit desc, id asc), keep k, softmax of logits/T, keep the shortest prefix reaching p."""
  order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:top_k]
  z = np.array([logits[i] for i in order], np.float64) / temperature
  e = np.exp(z - z.max())
  p = e / e.sum()
  keep, total = 0, 0.0
  while keep < len(p) and total < top_p: total += p[keep]; keep += 1
  out = np.zeros(len(logits))
  out[order[:keep]] = p[:keep] / p[:keep].sum()
  return out

LOGITS = np.array([2.0, -1.0, 0.5, 3.0, 0.5, 1.5, -3.0, 0.0, 2.5, -0.5], np.float32)

@pytest.mark.parametrize("temperature, top_k, top_p", [
  (1.0, 10, 1.0), (0.8, 3, 1.0), (1.7, 5, 1.0), (1.0, 10, 0.5), (0.5, 6, 0.9), (1.0, 1, 1.0), (1.0, 300, 0.99)])
def test_token_probs_match_numpy_reference(temperature, top_k, top_p):
  got = token_probs(LOGITS, temperature, top_k, top_p)
  np.testing.assert_allclose(got, ref_probs(LOGITS.tolist(), temperature, top_k, top_p), rtol=1e-12, atol=1e-15)
  assert abs(got.sum() - 1) < 1e-12

def test_top_k_keeps_exactly_k_even_with_ties():
  # 0.5 is tied at ids 2 and 4: top_k=5 keeps 3.0, 2.5, 2.0, 1.5 and the lower id of the tie
  assert np.flatnonzero(token_probs(LOGITS, 1.0, 5)).tolist() == [0, 2, 3, 5, 8]

def test_top_p_keeps_the_smallest_set_reaching_p():
  logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
  assert np.flatnonzero(token_probs(logits, 1.0, 4, 0.45)).tolist() == [0]
  assert np.flatnonzero(token_probs(logits, 1.0, 4, 0.79)).tolist() == [0, 1]
  assert np.flatnonzero(token_probs(logits, 1.0, 4, 0.81)).tolist() == [0, 1, 2]

def test_temperature_zero_is_argmax_and_draws_nothing():
  rng = np.random.default_rng(0)
  assert sample_token(LOGITS, 0.0, 300, 1.0, rng) == 3
  assert rng.random() == np.random.default_rng(0).random()

def test_draws_follow_token_probs_and_are_seeded():
  rng = np.random.default_rng(7)
  draws = np.array([sample_token(LOGITS, 0.9, 6, 0.95, rng) for _ in range(20000)])
  freq = np.bincount(draws, minlength=len(LOGITS)) / len(draws)
  np.testing.assert_allclose(freq, ref_probs(LOGITS.tolist(), 0.9, 6, 0.95), atol=0.015)
  rng2 = np.random.default_rng(7)
  assert [sample_token(LOGITS, 0.9, 6, 0.95, rng2) for _ in range(50)] == draws[:50].tolist()

def test_nonfinite_logits_are_a_clear_error():
  with pytest.raises(UserError, match="not finite"):
    sample_token(np.array([0.0, np.nan]), 1.0, 2, 1.0, np.random.default_rng())

# *** the KV cache against recomputing the window ***

def ref_forward(sd: dict, a: ModelArgs, tokens: list[int]) -> np.ndarray:
  """llama2.c's forward in numpy float64 from the state dict: logits after the last token, RoPE positions from 0."""
  sd = {n: v.astype(np.float64) for n, v in sd.items()}
  T, H, KV, hd = len(tokens), a.n_heads, a.kv_heads, a.head_dim
  def norm(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + a.norm_eps) * w
  angles = np.outer(np.arange(T), 10000.0 ** (-np.arange(0, hd, 2) / hd))
  def rope(x):  # (T, heads, hd): rotate pairs (2j, 2j+1) by position t's angle j
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * angles)[:, None, :]
    return np.stack([z.real, z.imag], -1).reshape(x.shape)
  h = sd["tok_embeddings.weight"][tokens]
  for i in range(a.n_layers):
    p = f"layers.{i}."
    x = norm(h, sd[p + "attention_norm.weight"])
    q = rope((x @ sd[p + "attention.wq.weight"].T).reshape(T, H, hd))
    k = np.repeat(rope((x @ sd[p + "attention.wk.weight"].T).reshape(T, KV, hd)), H // KV, axis=1)
    v = np.repeat((x @ sd[p + "attention.wv.weight"].T).reshape(T, KV, hd), H // KV, axis=1)
    s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
    w = np.exp(s - s.max(-1, keepdims=True))
    h = h + np.einsum("htu,uhd->thd", w / w.sum(-1, keepdims=True), v).reshape(T, -1) @ sd[p + "attention.wo.weight"].T
    x = norm(h, sd[p + "ffn_norm.weight"])
    g = x @ sd[p + "feed_forward.w1.weight"].T + sd.get(p + "feed_forward.w1.bias", 0)
    h = h + (g / (1 + np.exp(-g)) * (x @ sd[p + "feed_forward.w3.weight"].T)) @ sd[p + "feed_forward.w2.weight"].T
  E = sd["tok_embeddings.weight"]
  W = {"pinv": np.linalg.pinv(E), "tied": E.T}.get(a.unembedding, sd.get("output.weight", E).T)
  return norm(h[-1], sd["norm.weight"]) @ W

class Recompute:
  """The reference decoder: the numpy forward of the whole window at every step, the window as llama2.c's generate
  crops it (slide 1), or, for slide s, dropping s tokens when full and then growing back."""
  def __init__(self, model, slide=1):
    self.sd, self.a, self.slide = {n: t.numpy() for n, t in model.state_dict().items()}, model.args, slide
  def reset(self): self.start, self.first = 0, True
  def next_logits(self, seq):
    L = self.a.max_seq_len
    if len(seq) - self.start > L: self.start = len(seq) - (L if self.first else L - self.slide + 1)
    self.first = False
    return ref_forward(self.sd, self.a, seq[self.start:])

def tiny_model(seed, **over):
  """A random tiny model; a pinv one gets a larger embedding: at init its logits would copy the last token almost surely."""
  model = Transformer(ModelArgs(**{**TINY, "vocab_size": 40, **over}), seed=seed)
  if model.args.unembedding == "pinv": (E := model.weights["tok_embeddings.weight"]).assign(E * 10).realize()
  return model

def run_both(model, prompt, n, slide=1, compile=True, temperature=1.0):
  """Generate with the cache and with the reference from the same seed, comparing the logits of every step."""
  logits = {"cached": [], "full": []}
  out = {}
  for name, dec in (("cached", CachedDecoder(model, compile, slide)), ("full", Recompute(model, slide))):
    rng = np.random.default_rng(3)
    def pick(lg, name=name, rng=rng):
      logits[name].append(lg)
      return sample_token(lg, temperature, 50, 1.0, rng)
    out[name] = list(generate(dec, prompt, n, pick))
  return out, np.array(logits["cached"]), np.array(logits["full"])

@pytest.mark.parametrize("over", [dict(unembedding="pinv"), dict(unembedding="tied", n_kv_heads=4, ffn_bias=False)])
def test_cached_generation_equals_full_recompute_across_slides(over):
  model = tiny_model(1, **over)
  tokens, cached, full = run_both(model, [1, 5, 9], 3 * TINY["max_seq_len"])  # slides for 2/3 of the steps
  assert tokens["cached"] == tokens["full"]
  np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)

def test_prompt_longer_than_the_context_and_eager_mode():
  model = tiny_model(2)
  tokens, cached, full = run_both(model, [1] + list(range(3, 23)), 5, compile=False)
  assert tokens["cached"] == tokens["full"]
  np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)

def test_slide_s_recomputes_once_per_s_tokens_on_the_shorter_window():
  model = tiny_model(3)
  tokens, cached, full = run_both(model, [1, 4], 30, slide=3)
  assert tokens["cached"] == tokens["full"]
  np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)
  _, _, exact = run_both(model, [1, 4], 30, slide=1)
  assert not np.allclose(full, exact)  # a different window from the first slide on

def test_devices_without_shared_memory_upload_through_tinygrad(monkeypatch):
  monkeypatch.setattr("tinystory.replay.host_view", lambda t: None)  # as on a GPU: no host view of device memory
  tokens, cached, full = run_both(tiny_model(2), [1, 7], 12)
  assert tokens["cached"] == tokens["full"]
  np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)

def test_kernel_replay_gives_the_jits_logits_bit_for_bit(monkeypatch):
  monkeypatch.setattr("tinystory.replay.PARALLEL_MIN_S", 0.0)  # split kernels in parallel, the step's position with them
  model, tokens = tiny_model(5), [1, 6, 2, 9, 4, 7, 3, 3, 8, 5, 1, 2]  # slides twice: the prefill is replayed too
  def run():
    dec = CachedDecoder(model)
    return dec, np.array([dec.next_logits(tokens[:n]) for n in range(1, len(tokens) + 1)])
  dec, replayed = run()
  assert dec._step.replay and dec._fill.replay  # on CPU both graphs are replayed once captured
  monkeypatch.setattr("tinystory.replay.kernel_replay", lambda jit, inputs: None)  # as on a GPU: the JIT runs them
  dec, jitted = run()
  assert dec._step.replay is None and np.array_equal(replayed, jitted)

def test_unembedding_is_computed_once_not_per_token(monkeypatch):
  import tinystory.model  # the pinv the model calls
  calls, real = [], tinystory.model.pinv
  monkeypatch.setattr(tinystory.model, "pinv", lambda E: calls.append(1) or real(E))
  model = tiny_model(4)
  list(generate(CachedDecoder(model), [1], 12, np.argmax))
  assert len(calls) == 1

# *** streaming text ***

def test_stream_never_splits_a_character_over_writes():
  text = "héllo wörld ✓ 日本 🐈!"
  tok = fit_tokenizer([text], "bpe", 262)  # three merges: most non-ASCII characters stay several byte tokens
  ids = tok.encode(text)
  assert any(len(tok.token_bytes(i).decode("utf-8", "ignore")) < len(tok.token_bytes(i)) for i in ids)  # split chars
  writes = []
  stream = TextStream(tok, writes.append)
  for i in ids: stream.put(i)
  stream.end()
  assert "".join(writes) == text and len(writes) > 1
  assert "\ufffd" not in "".join(writes)

def test_stream_bos_starts_a_new_story_and_unfinished_bytes_flush():
  tok = fit_tokenizer(["é a"], "bpe", 259)
  writes = []
  stream = TextStream(tok, writes.append)
  for i in tok.encode("a") + [tok.bos_id] + tok.encode("é")[:1]: stream.put(i)
  stream.end()
  assert "".join(writes) == "a\n\n\ufffd"

# *** the command ***

SEED_STYLE = ["--max_new_tokens=40", "--top_k=200", "--temperature=0.8"]

def test_seed_style_command_prints_preamble_then_the_stream(run, char_tok):
  res = invoke(*SEED_STYLE, f"--checkpoint={run}", f"--tokenizer={run / 'tokenizer.tok'}", "--start=")
  assert res.exit_code == 0, res.output
  lines, V = res.output.split("\n"), char_tok.vocab_size
  assert lines[:6] == ["Overriding: max_new_tokens = 40", "Overriding: top_k = 200", "Overriding: temperature = 0.8",
                       f"Overriding: checkpoint = {run}", f"Overriding: tokenizer = {run / 'tokenizer.tok'}",
                       "Overriding: start = "]
  assert lines[6] == (f"ModelArgs(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size={V}, hidden_dim=None, "
                      "multiple_of=1, norm_eps=1e-05, max_seq_len=8, dropout=0.1, unembedding='tied')")
  listing = state_dict_lines(Transformer(ModelArgs(**TINY, vocab_size=V)))
  assert lines[7:7 + len(listing)] == listing and listing[-1] == f"output.weight [{V}, 16]"
  assert res.output.endswith("\n---------------\n")

def test_seed_state_dict_listing_matches_the_seed_transcript():
  seed = ModelArgs(dim=128, n_layers=4, n_heads=16, n_kv_heads=16, vocab_size=361, multiple_of=1, max_seq_len=128, dropout=0.15)
  lines = state_dict_lines(Transformer(seed))
  assert lines[:7] == ["tok_embeddings.weight [361, 128]", "layers.0.attention.wq.weight [128, 128]",
                       "layers.0.attention.wk.weight [128, 128]", "layers.0.attention.wv.weight [128, 128]",
                       "layers.0.attention.wo.weight [128, 128]", "layers.0.feed_forward.w1.weight [341, 128]",
                       "layers.0.feed_forward.w1.bias [341]"]
  assert lines[-2:] == ["norm.weight [128]", "output.weight [361, 128]"] and len(lines) == 1 + 4 * 10 + 2

def text_of(res) -> str:
  assert res.exit_code == 0, res.output
  return res.output

def test_seed_makes_output_reproducible_and_no_preamble_is_clean(run):
  a = text_of(invoke(f"--checkpoint={run}", "--max_new_tokens=30", "--seed=5", "--num_samples=2", "--no-preamble"))
  b = text_of(invoke(f"--checkpoint={run}", "--max_new_tokens=30", "--seed=5", "--num_samples=2", "--no-preamble"))
  c = text_of(invoke(f"--checkpoint={run}", "--max_new_tokens=30", "--seed=6", "--num_samples=2", "--no-preamble"))
  assert a == b and a != c
  assert a.count("\n---------------\n") == 2 and not a.startswith(("Overriding", "ModelArgs"))

def test_prompt_is_written_first_and_greedy_is_deterministic(run, tmp_path):
  (tmp_path / "p.txt").write_text("The cat", encoding="utf-8")
  a = text_of(invoke(f"--checkpoint={run}", "--start=FILE:" + str(tmp_path / "p.txt"), "--temperature=0", "--no-preamble"))
  b = text_of(invoke(f"--checkpoint={run}", "--start=The cat", "--temperature=0", "--seed=9", "--no-preamble"))
  assert a.startswith("The cat") and a == b

def test_default_checkpoint_is_the_newest_run(tmp_path, monkeypatch, char_tok):
  monkeypatch.chdir(tmp_path)  # runs/ is that of the working directory
  res = invoke("--max_new_tokens=5")
  assert res.exit_code == 1 and f"no checkpoint under {tmp_path / 'runs'}" in res.output
  make_run(tmp_path / "runs" / "old", char_tok, seed=0)
  make_run(tmp_path / "runs" / "new", char_tok, seed=1, dim=8, n_heads=2)
  os.utime(tmp_path / "runs" / "old" / "ckpt" / "ckpt.json", (1e9, 1e9))  # old for sure, whatever the clock's resolution
  assert "ModelArgs(dim=8," in text_of(invoke("--max_new_tokens=5"))
  assert "ModelArgs(dim=16," in text_of(invoke("--max_new_tokens=5", "--checkpoint=old"))  # a run name under runs/

@pytest.mark.parametrize("args, msg", [
  (["--max_new_tokens=0"], "--max_new_tokens must be a positive integer, got 0"),
  (["--max_new_tokens=-5"], "--max_new_tokens must be a positive integer, got -5"),
  (["--top_k=0"], "--top_k must be a positive integer, got 0"),
  (["--top_k=-1"], "--top_k must be a positive integer, got -1"),
  (["--top_p=0"], "--top_p must be in (0, 1] (1 keeps every token), got 0.0"),
  (["--top_p=1.5"], "--top_p must be in (0, 1] (1 keeps every token), got 1.5"),
  (["--temperature=-1"], "--temperature must be a finite number >= 0 (0: greedy), got -1.0"),
  (["--slide=9"], "--slide must be between 1 and the model's max_seq_len=8, got 9"),
  (["--start=Quiet Zoo é"], "--start has characters the tokenizer does not know: 'Q' 'Z' 'é'"),
  (["--start=FILE:/nonexistent/p.txt"], "cannot read --start file /nonexistent/p.txt: No such file or directory"),
])
def test_bad_values_are_one_line_errors(run, args, msg):
  res = invoke(f"--checkpoint={run}", *args)
  assert res.exit_code == 1 and res.output == f"Error: {msg}\n", res.output

def test_missing_corrupt_and_mismatched_inputs_are_one_line_errors(run, tmp_path, char_tok):
  res = invoke(f"--checkpoint={tmp_path / 'nope'}")
  assert res.exit_code == 1 and res.output == \
    f"Error: --checkpoint={tmp_path / 'nope'}: no such file or directory (give a run dir such as runs/out)\n"
  res = invoke(f"--checkpoint={tmp_path}")
  assert res.exit_code == 1 and res.output.startswith(f"Error: no checkpoint in {tmp_path}: expected")
  bad = make_run(tmp_path / "bad", char_tok)
  (bad / "ckpt" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
  res = invoke(f"--checkpoint={bad}")
  assert res.exit_code == 1 and res.output.count("\n") == 1 and "is unreadable or corrupt" in res.output, res.output
  odd = make_run(tmp_path / "odd", char_tok)
  meta = json.loads((odd / "ckpt" / "ckpt.json").read_text())
  del meta["model_args"]["dim"]  # would mean llama2.c's default, 4096: the weights do not fit (and nothing 7B is built)
  (odd / "ckpt" / "ckpt.json").write_text(json.dumps(meta))
  res = invoke(f"--checkpoint={odd}")
  assert res.exit_code == 1 and res.output.startswith(f"Error: checkpoint {odd / 'ckpt'}: the weights do not fit its "
                                                      "model_args, ModelArgs(dim=4096,"), res.output
  other = fit_tokenizer(["just a few letters"], "char")
  other.save(tmp_path / "other.tok")
  res = invoke(f"--checkpoint={run}", f"--tokenizer={tmp_path / 'other.tok'}")
  assert res.exit_code == 1 and res.output == (f"Error: tokenizer {tmp_path / 'other.tok'} has {other.vocab_size} tokens but the "
    f"model in {run / 'ckpt'} has vocab_size={char_tok.vocab_size}: pass the tokenizer it was trained with\n")
  make_run(tmp_path / "notok", char_tok)
  (tmp_path / "notok" / "tokenizer.tok").unlink()
  res = invoke(f"--checkpoint={tmp_path / 'notok'}")
  assert res.exit_code == 1 and "no tokenizer saved with the checkpoint" in res.output and "pass --tokenizer" in res.output

def test_empty_prompt_starts_from_bos_alone(run):
  from tinystory.loader import load_model
  from tinystory.config import SampleConfig
  from tinystory.sample import sample
  writes = []
  res = sample(SampleConfig(checkpoint=str(run), start="", max_new_tokens=6, temperature=0), write=writes.append)
  greedy = list(generate(Recompute(load_model(run / "ckpt")[0]), [1], 6, np.argmax))
  assert res["samples"] == [greedy] and "".join(writes).endswith("\n---------------\n")
