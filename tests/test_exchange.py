"""Model exchange: llama2.c's .bin and tokenizer.bin and Hugging Face's Llama directory, out and back in. The files are
read here by small readers written from the formats (docs/exchange.md), independent of tinystory's own readers."""
import importlib.util, random, struct
from pathlib import Path
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st
from tinygrad import Tensor
from cli import cli
from tinystory import UserError
from tinystory.checkpoint import load_checkpoint, save_checkpoint
from tinystory.exchange import export_model
from tinystory.llama2c import RunCTokenizer, read_model_bin, read_tokenizer_bin
from tinystory.loader import load_model, load_model_file
from tinystory.config import ModelArgs
from tinystory.model import rope_tables
from tinystory.sample import CachedDecoder, generate
from tinystory.tokenizer import PATTERN, fit_tokenizer
from test_sample import STORIES, make_run, ref_forward

TEXTS = STORIES + ["Tom  had 1234 balls!  \n\nThe end.  ", "Lily's dog'll run...\tfast"]
HAS_HF = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "tokenizers"))

@pytest.fixture(scope="module")
def toks():
  return {"char": fit_tokenizer(STORIES, "char"), "bpe": fit_tokenizer(STORIES * 2, "bpe", 320)}

@pytest.fixture(scope="module")
def runs(tmp_path_factory, toks):
  """Runs with both tokenizers and every unembedding; 'bias' has ffn_bias (and GQA, as all of them)."""
  d = tmp_path_factory.mktemp("runs")
  out = {(k, u): make_run(d / f"{k}-{u}", toks[k], seed=3, unembedding=u, ffn_bias=False, dropout=0.0)
         for k in toks for u in ("pinv", "tied", "untied")}
  out["bias"] = make_run(d / "bias", toks["bpe"], seed=4, unembedding="pinv", ffn_bias=True, dropout=0.0)
  return out

def project_logits(run: Path, ids: list[int]) -> np.ndarray:
  model, _ = load_model(run / "ckpt")
  return model(Tensor([ids])).numpy()[0]

# *** llama2.c: a reader written from the layout ***

def read_bin(path: Path) -> tuple[dict, dict]:
  """The llama2.c file at `path` (version 0 or 2) -> (header, float64 weights by llama2.c names)."""
  raw = path.read_bytes()
  if struct.unpack_from("<I", raw)[0] == 0x616B3432:
    version, *cfg = struct.unpack_from("<i7i", raw, 4)
    shared, group = raw[36], struct.unpack_from("<i", raw, 37)[0]
    assert version == 2 and raw[41:256] == bytes(215)
    pos = 256
  else: version, cfg, group, pos = 0, list(struct.unpack_from("<7i", raw)), 0, 28
  d, hid, L, H, KV, V, T = cfg
  if version == 0: shared, V = V > 0, abs(V)
  kv, hd = d // H * KV, d // H
  def take(shape, q8=False):
    nonlocal pos
    n = int(np.prod(shape))
    if not q8:
      a = np.frombuffer(raw, "<f4", n, pos); pos += 4 * n
    else:
      q = np.frombuffer(raw, np.int8, n, pos).astype(np.float64); pos += n
      s = np.frombuffer(raw, "<f4", n // group, pos); pos += 4 * (n // group)
      a = (q.reshape(-1, group) * s[:, None]).ravel()
    return a.astype(np.float64).reshape(shape)
  w, q8 = {}, version == 2
  layers = lambda name, shape, q=q8: [w.__setitem__(f"layers.{i}.{name}", take(shape, q)) for i in range(L)]
  mats = [("attention.wq.weight", (d, d)), ("attention.wk.weight", (kv, d)), ("attention.wv.weight", (kv, d)),
          ("attention.wo.weight", (d, d))]
  ffn = [("feed_forward.w1.weight", (hid, d)), ("feed_forward.w2.weight", (d, hid)), ("feed_forward.w3.weight", (hid, d))]
  if version == 0:
    w["tok_embeddings.weight"] = take((V, d))
    layers("attention_norm.weight", (d,))
    for m in mats: layers(*m)
    layers("ffn_norm.weight", (d,))
    for m in ffn: layers(*m)
    w["norm.weight"], w["freqs_cos"], w["freqs_sin"] = take((d,)), take((T, hd // 2)), take((T, hd // 2))
  else:
    layers("attention_norm.weight", (d,), False); layers("ffn_norm.weight", (d,), False)
    w["norm.weight"], w["tok_embeddings.weight"] = take((d,)), take((V, d), True)
    for m in mats + ffn: layers(*m)
  if not shared: w["output.weight"] = take((V, d), q8)
  assert pos == len(raw), "the file is longer than its header says"
  return {"version": version, "cfg": cfg, "shared": bool(shared), "group": group}, w

def read_tokenizer(path: Path) -> tuple[list[bytes], list[float]]:
  raw, pieces, scores = path.read_bytes(), [], []
  max_len, pos = struct.unpack_from("<i", raw)[0], 4
  while pos < len(raw):
    s, n = struct.unpack_from("<fi", raw, pos)
    pieces.append(raw[pos + 8:pos + 8 + n]); scores.append(s); pos += 8 + n
  assert max_len == max(map(len, pieces))
  return pieces, scores

def runc_encode(pieces, scores, text: str, bos=True, dummy_prefix=True) -> list[int]:
  """run.c's encode, transcribed: BOS, the dummy-prefix ' ', codepoints looked up or bytes + 3, then merge the
  best-scoring adjacent pair (leftmost on ties) until none is a token."""
  lookup = {}
  for i, p in enumerate(pieces): lookup.setdefault(p, i)
  toks = ([1] if bos else []) + ([lookup[b" "]] if text and dummy_prefix else [])
  for ch in text: toks += [lookup[ch.encode()]] if ch.encode() in lookup else [b + 3 for b in ch.encode()]
  while True:
    best, at, new = np.float32(-1e10), -1, -1
    for i in range(len(toks) - 1):
      m = lookup.get(pieces[toks[i]] + pieces[toks[i + 1]])
      if m is not None and np.float32(scores[m]) > best: best, at, new = np.float32(scores[m]), i, m
    if at < 0: return toks
    toks[at:at + 2] = [new]

def as_args(head: dict, w: dict) -> ModelArgs:
  d, hid, L, H, KV, V, T = head["cfg"]
  return ModelArgs(dim=d, hidden_dim=hid, n_layers=L, n_heads=H, n_kv_heads=KV, vocab_size=abs(V), max_seq_len=T,
                   ffn_bias=False, unembedding="untied" if "output.weight" in w else "tied")

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("unembedding", ["pinv", "tied", "untied"])
def test_llama2c_file_gives_the_projects_logits(runs, toks, tmp_path, kind, unembedding):
  run = runs[kind, unembedding]
  export_model(str(run), "llama2c", str(tmp_path))
  head, w = read_bin(tmp_path / "model.bin")
  model, _ = load_model(run / "ckpt")
  a = model.args
  assert head["cfg"] == [a.dim, a.hidden_size, a.n_layers, a.n_heads, a.kv_heads,
                         a.vocab_size if unembedding == "tied" else -a.vocab_size, a.max_seq_len]
  cos, sin = rope_tables(a.head_dim, a.max_seq_len)
  assert np.array_equal(w.pop("freqs_cos"), cos) and np.array_equal(w.pop("freqs_sin"), sin)
  ids = toks[kind].encode(TEXTS[0], bos=True)[:a.max_seq_len]
  ours = model(Tensor([ids])).numpy()[0]
  for t in range(1, len(ids) + 1):
    ref = ref_forward(w, as_args(head, w), ids[:t])
    np.testing.assert_allclose(ours[t - 1], ref, rtol=1e-5, atol=1e-4 * max(1, np.abs(ref).max()))
  # and tinystory's own reader gives the same model back
  back, tok = load_model_file(tmp_path / "model.bin")
  np.testing.assert_array_equal(back(Tensor([ids])).numpy()[0], ours) if unembedding != "pinv" else \
    np.testing.assert_allclose(back(Tensor([ids])).numpy()[0], ours, rtol=1e-6, atol=1e-5 * np.abs(ours).max())

@pytest.mark.parametrize("unembedding", ["pinv", "tied"])
def test_q8_file_is_within_half_a_step_of_every_weight(runs, toks, tmp_path, unembedding):
  run = runs["bpe", unembedding]
  export_model(str(run), "llama2c-q8", str(tmp_path))
  head, w = read_bin(tmp_path / "model.bin")
  model, _ = load_model(run / "ckpt")
  a = model.args
  assert head["group"] == 2 and head["shared"] == (unembedding == "tied")  # hidden 42 = 2 * 21: groups of 2
  exact = {n: t.numpy().astype(np.float64) for n, t in model.state_dict().items()}
  if unembedding == "pinv": exact["output.weight"] = model.logits(Tensor.eye(a.dim)).numpy().T.astype(np.float64)
  for n, q in w.items():
    g = exact[n].reshape(-1, head["group"])
    step = np.abs(g).max(1, keepdims=True) / 127 if not n.endswith("norm.weight") else 0
    assert np.all(np.abs(q.reshape(g.shape) - g) <= step / 2 * (1 + 1e-5) + 1e-12), n  # Q8_0: round to the nearest step
  ids = toks["bpe"].encode(TEXTS[1], bos=True)[:a.max_seq_len]
  ref, ours = ref_forward(w, as_args(head, w), ids), model(Tensor([ids])).numpy()[0, -1]
  assert np.abs(ref - ours).max() <= 0.02 * np.abs(ours).max()  # the stated tolerance: 2% of the largest logit
  back, _ = load_model_file(tmp_path / "model.bin")  # tinystory reads the dequantized weights
  np.testing.assert_allclose(back(Tensor([ids])).numpy()[0, -1], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())

def test_tokenizer_bin_follows_run_c(runs, toks, tmp_path):
  for kind in toks:
    out = tmp_path / kind
    export_model(str(runs[kind, "tied"]), "llama2c", str(out))
    pieces, scores = read_tokenizer(out / "tokenizer.bin")
    tok = toks[kind]
    assert pieces[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"] and len(pieces) == tok.vocab_size
    ours = read_tokenizer_bin(out / "tokenizer.bin")
    for text in TEXTS if kind == "bpe" else STORIES:  # a char vocabulary has no byte fallback for unknown characters
      runc = runc_encode(pieces, scores, text)
      assert ours.encode(text, bos=True) == runc
      assert ours.decode(runc) == text  # run.c's decoder drops the space it put before the prompt (its dummy prefix)
      if kind == "char": assert runc == [1, tok.encode(" ")[0]] + tok.encode(text)
    if kind == "char":  # where run.c would take unrelated ids (byte + 3), tinystory refuses
      with pytest.raises(UserError, match="'1' is not in .*no byte-fallback"): ours.encode("1")
    if kind == "bpe":  # merges by score = -id are the project's merges: equal on each pre-tokenized chunk
      import regex
      assert pieces[3 + ord("a")] == b"a" and pieces[3 + 0xC3] == b"<0xC3>"
      for text in TEXTS:
        for chunk in regex.findall(PATTERN, text): assert runc_encode(pieces, scores, chunk, False, False) == tok.encode(chunk)

def test_llama2c_refuses_what_run_c_cannot_run(runs, tmp_path):
  res = CliRunner().invoke(cli, ["export-model", str(runs["bias"]), "--format", "llama2c", "--out", str(tmp_path / "x")])
  assert res.exit_code == 1 and "--ffn_bias=False" in res.output and len(res.output.strip().splitlines()) == 1
  assert not (tmp_path / "x" / "model.bin").exists()
  odd = make_run(tmp_path / "odd", fit_tokenizer(STORIES, "char"), ffn_bias=False, hidden_dim=21)  # dim 16: groups of 1
  with pytest.raises(UserError, match="groups of 1"): export_model(str(odd), "llama2c-q8", str(tmp_path / "z"))
  char = fit_tokenizer(["abc"], "char")  # no ' ' for run.c's dummy prefix
  with pytest.raises(UserError, match="dummy prefix"): export_model(str(make_run(tmp_path / "r", char, ffn_bias=False)), "llama2c", str(tmp_path / "y"))

def test_version_1_files_are_read(runs, tmp_path):
  """export.py's version 1 (float32, 256-byte header, norms first), written here from its layout."""
  export_model(str(runs["bpe", "untied"]), "llama2c", str(tmp_path))
  head, w = read_bin(tmp_path / "model.bin")
  d, hid, L, H, KV, V, T = head["cfg"]
  order = ([f"layers.{i}.attention_norm.weight" for i in range(L)] + [f"layers.{i}.ffn_norm.weight" for i in range(L)] +
           ["norm.weight", "tok_embeddings.weight"] +
           [f"layers.{i}.{n}.weight" for n in ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
                                                "feed_forward.w1", "feed_forward.w2", "feed_forward.w3") for i in range(L)] + ["output.weight"])
  raw = struct.pack("<Ii7iB", 0x616B3432, 1, d, hid, L, H, KV, abs(V), T, 0).ljust(256, b"\0")
  (tmp_path / "v1.bin").write_bytes(raw + b"".join(w[n].astype("<f4").tobytes() for n in order))
  cfg, weights, version = read_model_bin(tmp_path / "v1.bin")
  assert version == 1 and not cfg["shared_classifier"] and set(weights) == set(order)
  for n in order: np.testing.assert_array_equal(weights[n], w[n].astype(np.float32))

# *** coming in: run.c's encoder, and sampling from a .bin ***

def sp_style_tokenizer(merges: list[bytes], scores: list[float]) -> RunCTokenizer:
  """A SentencePiece-style tokenizer.bin vocabulary: specials, <0xXX> byte pieces, then `merges` with `scores`."""
  pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)] + merges
  return RunCTokenizer(pieces, np.array([0.0] * 259 + scores, np.float32), b"x")

@settings(max_examples=50, deadline=None)
@given(st.lists(st.text("ab c", min_size=1, max_size=4), min_size=1, max_size=12, unique=True),
       st.randoms(use_true_random=False), st.text("ab cé", max_size=30))
def test_runc_encoder_equals_run_c_transcription(words, rnd, text):
  merges = [w.encode() for w in dict.fromkeys([" ", *words])]
  scores = [float(rnd.choice([-3, -2, -1, 0])) for _ in merges]  # ties too: run.c takes the leftmost pair
  tok = sp_style_tokenizer(merges, scores)
  assert tok.encode(text, bos=True) == runc_encode(tok.pieces, tok.scores, text)
  assert tok.decode(tok.encode(text, bos=True)) == text  # the dummy prefix is dropped after BOS, as run.c prints

def test_byte_fallback_and_decoding_like_run_c():
  tok = sp_style_tokenizer([b" ", b"a", b" a", b"\xc3\xa9"], [-1.0, -1.0, 0.0, -1.0])
  assert tok.encode("aé€", bos=True) == [1, 261, 262, 3 + 0xE2, 3 + 0x82, 3 + 0xAC]  # ' a' merged, é whole, € as bytes
  assert tok.decode([1, 261, 262, 3 + 0xE2, 3 + 0x82, 3 + 0xAC]) == "aé€"  # the space after BOS is dropped
  no_fallback = RunCTokenizer([b"<unk>", b"<s>", b"</s>", b" ", b"a"], np.zeros(5, np.float32), b"x", "t.bin")
  with pytest.raises(UserError, match="'b' is not in t.bin"): no_fallback.encode("ab")

def test_sample_from_a_bin_and_its_tokenizer(runs, toks, tmp_path):
  export_model(str(runs["bpe", "tied"]), "llama2c", str(tmp_path))
  args = ["sample", "--checkpoint", str(tmp_path / "model.bin"), "--start", "Once", "--temperature=0",
          "--max_new_tokens=4", "--no-preamble"]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  model, tok = load_model_file(tmp_path / "model.bin")
  prompt = tok.encode("Once", bos=True)
  assert prompt[:2] == [1, 3 + ord(" ")]
  greedy = list(generate(CachedDecoder(model), prompt, 4, lambda lg: int(np.argmax(lg))))
  assert res.output == "Once" + tok.decode(greedy) + "\n---------------\n"

def test_train_init_from_an_exported_file(runs, toks, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  export_model(str(runs["char", "untied"]), "llama2c", str(tmp_path / "bin"))
  toks["char"].save(tmp_path / "char.tok")
  res = CliRunner().invoke(cli, ["train", "--init_from", str(tmp_path / "bin" / "model.bin"), "--tokenizer", str(tmp_path / "char.tok"),
                                 "--data", "synthetic:50", "--out_dir", "ft", "--max_iters=0", "--eval_iters=1", "--batch_size=2",
                                 "--max_seq_len=8", "--eval_only=True"])
  assert res.exit_code == 0, res.output
  import json
  cfg = json.loads((tmp_path / "runs" / "ft" / "config.json").read_text())
  assert cfg["model_args"]["unembedding"] == "untied" and cfg["model_args"]["dim"] == 16

# *** malformed files: one-line errors, never a traceback or a huge allocation ***

@pytest.fixture(scope="module")
def good_files(runs, tmp_path_factory):
  d = tmp_path_factory.mktemp("good")
  export_model(str(runs["bpe", "untied"]), "llama2c", str(d / "v0"))
  export_model(str(runs["bpe", "untied"]), "llama2c-q8", str(d / "v2"))
  return {"v0": (d / "v0" / "model.bin").read_bytes(), "v2": (d / "v2" / "model.bin").read_bytes(),
          "tok": (d / "v0" / "tokenizer.bin").read_bytes()}

def mutate(data: bytes, rnd: random.Random) -> bytes:
  b = bytearray(data)
  match rnd.randrange(4):
    case 0: return bytes(b[:rnd.randrange(len(b))])                                   # truncated
    case 1: b[rnd.randrange(min(len(b), 64))] = rnd.randrange(256); return bytes(b)  # a header byte
    case 2:                                                                           # an absurd header int
      at = rnd.randrange(0, min(len(b), 48) - 4, 4); b[at:at + 4] = struct.pack("<i", rnd.choice([0, -1, 2**31 - 1, -2**31, 1 << 20, 3])); return bytes(b)
    case _: return bytes(b) + bytes(rnd.randrange(1, 9))                            # trailing bytes

@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["v0", "v2"]), st.randoms(use_true_random=False))
def test_malformed_model_files_are_user_errors(good_files, tmp_path_factory, which, rnd):
  path = tmp_path_factory.mktemp("bad") / "model.bin"
  path.write_bytes(mutate(good_files[which], rnd))
  try: read_model_bin(path)
  except UserError as e: assert "\n" not in str(e) and str(path) in str(e)

@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False))
def test_malformed_tokenizer_files_are_user_errors(good_files, tmp_path_factory, rnd):
  path = tmp_path_factory.mktemp("bad") / "tokenizer.bin"
  path.write_bytes(mutate(good_files["tok"], rnd))
  try: read_tokenizer_bin(path)
  except UserError as e: assert "\n" not in str(e) and str(path) in str(e)

@pytest.mark.parametrize("header", [(2**31 - 1, 64, 2, 4, 4, 32, 8), (16, 2**31 - 1, 2, 4, 4, 32, 8), (16, 42, 2, 4, 4, -(2**31), 8),
                                    (16, 42, 1 << 20, 4, 4, 1 << 20, 1 << 20), (16, 42, 2, 3, 3, 32, 8), (0, 0, 0, 0, 0, 0, 0)])
def test_absurd_headers_are_refused_before_allocating(tmp_path, header):
  path = tmp_path / "model.bin"
  path.write_bytes(struct.pack("<7i", *header) + bytes(1000))
  with pytest.raises(UserError, match="model.bin"): read_model_bin(path)
  v2 = tmp_path / "q.bin"
  v2.write_bytes(struct.pack("<Ii7iBi", 0x616B3432, 2, *header, 1, 0).ljust(256, b"\0"))
  with pytest.raises(UserError, match="q.bin"): read_model_bin(v2)

def test_the_cli_prints_a_file_error_as_one_line(tmp_path):
  (tmp_path / "model.bin").write_bytes(b"ak42garbage")
  res = CliRunner().invoke(cli, ["sample", "--checkpoint", str(tmp_path / "model.bin")])
  assert res.exit_code == 1 and res.output.startswith("Error: ") and len(res.output.strip().splitlines()) == 1

# *** Hugging Face ***

hf = pytest.mark.skipif(not HAS_HF, reason="needs the hf extra: pip install -e '.[hf]' (torch, transformers)")

@pytest.mark.slow
@hf
@pytest.mark.parametrize("key", [("bpe", "pinv"), ("char", "tied"), ("char", "untied"), "bias"])
def test_transformers_gives_the_projects_logits_and_greedy_tokens(runs, toks, tmp_path, key):
  import torch
  from transformers import LlamaForCausalLM
  run, tok = runs[key], toks["bpe" if key == "bias" else key[0]]
  export_model(str(run), "hf", str(tmp_path))
  model, _ = load_model(run / "ckpt")
  hf_model = LlamaForCausalLM.from_pretrained(tmp_path).eval()
  assert hf_model.config.tie_word_embeddings is False and hf_model.config.mlp_bias == (key == "bias")
  for text in TEXTS[:3]:
    ids = tok.encode(text, bos=True)[:model.args.max_seq_len]
    with torch.no_grad(): theirs = hf_model(torch.tensor([ids])).logits[0].numpy()
    ours = model(Tensor([ids])).numpy()[0]
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4 * max(1, np.abs(ours).max()))
  prompt = tok.encode("Once", bos=True)
  with torch.no_grad():
    out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=model.args.max_seq_len - len(prompt), do_sample=False,
                            eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
  assert out == list(generate(CachedDecoder(model), prompt, len(out), lambda lg: int(np.argmax(lg))))
  back, back_tok = load_model_file(tmp_path)  # and back in: the same logits, the same tokenizer
  np.testing.assert_allclose(back(Tensor([prompt])).numpy(), model(Tensor([prompt])).numpy(), rtol=0, atol=1e-5 * max(1, np.abs(ours).max()))
  assert back_tok.sha256 == tok.sha256

@pytest.mark.skipif(not importlib.util.find_spec("tokenizers"), reason="needs the tokenizers package (hf extra)")
@settings(max_examples=30, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_characters="<"), max_size=60) | st.sampled_from(TEXTS))
def test_tokenizer_json_encodes_and_decodes_as_the_project(toks, tmp_path_factory, text):
  from tokenizers import Tokenizer as HFTokenizer
  from tinystory.hf import tokenizer_json
  import json
  for kind, tok in toks.items():
    path = tmp_path_factory.mktemp("tj") / "tokenizer.json"
    path.write_text(json.dumps(tokenizer_json(tok)))
    theirs = HFTokenizer.from_file(str(path))
    ids = theirs.encode(text).ids
    assert ids == tok.encode(text, bos=True), kind
    if 0 not in ids: assert theirs.decode(ids, skip_special_tokens=True) == tok.decode(ids)

def test_pinv_scaled_leaves_with_its_scale_in_the_output_matrix(toks, tmp_path):
  """A pinv_scaled model (beyond the seed: pinv's logits times a learned scale) exports as an untied llama2.c model
  whose output matrix holds the scale: the file gives the project's logits, and has no extra tensor."""
  run = make_run(tmp_path / "run", toks["char"], seed=3, unembedding="pinv_scaled", ffn_bias=False, dropout=0.0)
  meta, w, opt = load_checkpoint(run)
  save_checkpoint(run, {**w, "output.log_scale": np.array([0.7], np.float32)}, opt, meta)  # a learned scale
  export_model(str(run), "llama2c", str(tmp_path / "bin"))
  back, _ = load_model_file(tmp_path / "bin" / "model.bin")
  assert back.args.unembedding == "untied" and "output.log_scale" not in back.weights
  ids = toks["char"].encode(TEXTS[0], bos=True)[:back.args.max_seq_len]
  ours = project_logits(run, ids)
  np.testing.assert_allclose(back(Tensor([ids])).numpy()[0], ours, rtol=1e-6, atol=1e-5 * np.abs(ours).max())
