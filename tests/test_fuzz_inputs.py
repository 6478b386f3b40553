"""Every reader of a file the user hands in, fed mutated and random files (hypothesis): tokenizer files, shard dirs'
meta.json, shard files, checkpoints' ckpt.json (as resume and sample read them) and --start FILE: prompts. Each must
end in a one-line UserError or a correct result, never another exception."""
import copy, dataclasses, json, shutil, tempfile
from pathlib import Path
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from tinystory import UserError
from tinystory.checkpoint import model_weights, save_checkpoint
from tinystory.loader import load_model, load_tokenizer
from tinystory.config import ModelArgs, TrainConfig
from tinystory.model import Transformer
from tinystory.pretok import PretokDataset, _inputs, check_tokenizer_matches, load_meta, prepare
from tinystory.sample import load_prompt
from tinystory.tokenizer import fit_tokenizer
from tinystory.resume import load_resume, resumed_config

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STORIES = ["Once upon a time a cat sat.", "The dog ran to the park and back.", "Lily liked red apples a lot."]

def one_line_error_or(fn, *args):
  """fn(*args), or None when it raised a one-line UserError (any other exception fails the test)."""
  try: return fn(*args)
  except UserError as e:
    assert str(e) and "\n" not in str(e), repr(str(e))
    return None

# *** mutating JSON: a value anywhere in the tree replaced by any JSON value, or removed ***

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=5)

def paths(obj, prefix=()):
  yield prefix
  items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
  for k, v in items: yield from paths(v, prefix + (k,))

@st.composite
def mutated(draw, obj, most: int = 3):
  obj = copy.deepcopy(obj)
  for _ in range(draw(st.integers(1, most))):
    path = draw(st.sampled_from([p for p in paths(obj) if p]))
    parent = obj
    for k in path[:-1]: parent = parent[k]
    if draw(st.booleans()) and isinstance(parent, dict): del parent[path[-1]]
    else: parent[path[-1]] = draw(json_values)
  return obj

# *** shared inputs: a tokenizer, a prepared shard dir, a checkpoint (made once) ***

@pytest.fixture(scope="module")
def made(tmp_path_factory):
  d = tmp_path_factory.mktemp("fuzz")
  (d / "s.txt").write_text("\n\n".join(STORIES * 20))
  tok = fit_tokenizer(STORIES, "char")
  tok.save(d / "t.tok")
  prepare([str(d / "s.txt")], d / "t.tok", d / "shards", val_fraction=0.2, workers=1)
  run = d / "run"
  cfg = TrainConfig(out_dir=str(run), dim=16, n_layers=1, n_heads=2, n_kv_heads=2, max_seq_len=8, batch_size=2, data=str(d / "shards"))
  args = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=tok.vocab_size, multiple_of=1, max_seq_len=8,
              dropout=0.0, ffn_bias=True, unembedding="pinv")
  model = Transformer(ModelArgs(**args), seed=0)
  ds = PretokDataset(d / "shards", "train", 2, 8)
  for _ in range(3): ds.next_batch()
  weights = model_weights(model)
  opt = {f"{m}.{n}": np.zeros_like(w) for n, w in weights.items() for m in ("exp_avg", "exp_avg_sq")}
  run.mkdir()
  save_checkpoint(run, weights, opt, {"model_args": args, "iter_num": 3, "best_val_loss": 2.5, "opt_step": 3,
                                      "config": dataclasses.asdict(cfg), "data_state": ds.state(),
                                      "rng_state": {"seed": 1337, "counter": [5, 0]}, "shard_dir": str(d / "shards"),
                                      "tokenizer_sha256": tok.sha256})
  tok.save(run / "tokenizer.tok")
  return {"dir": d, "tok": tok, "run": run, "cfg": cfg}

def scratch_copy(src: Path) -> tuple[tempfile.TemporaryDirectory, Path]:
  tmp = tempfile.TemporaryDirectory()
  dst = Path(tmp.name) / src.name
  shutil.copytree(src, dst)
  return tmp, dst

# *** tokenizer files ***

@st.composite
def tokenizer_files(draw, good: list[bytes]):
  raw = draw(st.sampled_from(good))
  lines = raw.split(b"\n")
  kind = draw(st.sampled_from(["bytes", "line", "header", "truncate", "flip"]))
  if kind == "bytes": return draw(st.binary(max_size=300))
  if kind == "line":
    i = draw(st.integers(0, len(lines) - 1))
    lines[i] = draw(st.binary(max_size=20) | st.sampled_from([b"", b"AA== 3", lines[-2], b"YQ== 4 5"]))
    return b"\n".join(lines)
  if kind == "header":
    lines[0] = json.dumps(draw(mutated(json.loads(lines[0]), most=2))).encode()
    return b"\n".join(lines)
  if kind == "truncate": return raw[:draw(st.integers(0, len(raw)))]
  i = draw(st.integers(0, len(raw) - 1))
  return raw[:i] + bytes([raw[i] ^ (1 << draw(st.integers(0, 7)))]) + raw[i + 1:]

GOOD_TOKENIZERS = [fit_tokenizer(STORIES, "char").to_bytes(), fit_tokenizer(STORIES, "bpe", 262).to_bytes()]

@FUZZ
@given(raw=tokenizer_files(GOOD_TOKENIZERS))
def test_fuzzed_tokenizer_files(raw):
  with tempfile.TemporaryDirectory() as d:
    (Path(d) / "t.tok").write_bytes(raw)
    tok = one_line_error_or(load_tokenizer, Path(d) / "t.tok")
    if tok is None: return
    # a tokenizer that loads works: its canonical file loads back the same, and it encodes and decodes
    (Path(d) / "again.tok").write_bytes(tok.to_bytes())
    assert load_tokenizer(Path(d) / "again.tok").sha256 == tok.sha256
    text = "a cat sat"
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids) and isinstance(tok.decode(ids), str)
    if tok.kind == "bpe": assert tok.decode(ids) == text

# *** meta.json and shard files ***

def read_batches(shard_dir: Path, tok) -> None:
  """What training reads of a shard dir: meta.json, the tokenizer check, the cache key, batches of both splits."""
  meta = one_line_error_or(load_meta, shard_dir)
  if meta is None: return
  _inputs(meta)
  one_line_error_or(check_tokenizer_matches, meta, tok)
  for split in ("train", "val"):
    ds = one_line_error_or(PretokDataset, shard_dir, split, 2, 4)
    for _ in range(3 if ds else 0):
      batch = one_line_error_or(ds.next_batch)
      if batch is None: break
      x, y = batch
      assert x.shape == y.shape == (2, 4) and 0 <= x.min() and max(x.max(), y.max()) < meta["vocab_size"]

@FUZZ
@given(data=st.data())
def test_fuzzed_meta_json(made, data):
  meta = json.loads((made["dir"] / "shards" / "meta.json").read_text())
  tmp, shards = scratch_copy(made["dir"] / "shards")
  with tmp:
    raw = data.draw(st.binary(max_size=100).map(lambda b: b.decode("latin-1")) | mutated(meta).map(json.dumps))
    (shards / "meta.json").write_text(raw)
    read_batches(shards, made["tok"])

@FUZZ
@given(data=st.data())
def test_fuzzed_shard_files(made, data):
  tmp, shards = scratch_copy(made["dir"] / "shards")
  with tmp:
    meta = json.loads((shards / "meta.json").read_text())
    i = data.draw(st.integers(0, len(meta["shards"]) - 1))
    ids = data.draw(st.lists(st.integers(0, 2 * made["tok"].vocab_size), min_size=0, max_size=80))
    raw = np.array(ids, np.uint16).tobytes() + data.draw(st.sampled_from([b"", b"\x01"]))  # odd length too
    (shards / meta["shards"][i]["file"]).write_bytes(raw)
    if data.draw(st.booleans()):  # meta.json agrees with the new size (else: a size mismatch)
      meta["shards"][i]["tokens"] = len(raw) // 2
      (shards / "meta.json").write_text(json.dumps(meta))
    read_batches(shards, made["tok"])

# *** ckpt.json, as resume and sample read it ***

@FUZZ
@given(data=st.data())
def test_fuzzed_ckpt_json(made, data):
  meta = json.loads((made["run"] / "ckpt" / "ckpt.json").read_text())
  tmp, run = scratch_copy(made["run"])
  with tmp:
    raw = data.draw(st.binary(max_size=60).map(lambda b: b.decode("latin-1")) | mutated(meta).map(json.dumps), label="ckpt.json")
    (run / "ckpt" / "ckpt.json").write_text(raw)
    one_line_error_or(load_model, run / "ckpt")  # sample
    resume = one_line_error_or(load_resume, run)
    if resume is None: return
    given = [("init_from", "resume"), ("out_dir", str(run))]
    cfg = one_line_error_or(resumed_config, TrainConfig(init_from="resume", out_dir=str(run)), resume, given)
    if cfg is None: return
    cfg, changes = cfg
    assert changes == []
    one_line_error_or(lambda: ModelArgs(**{**resume.meta["model_args"], "dropout": cfg.dropout}))
    ds = one_line_error_or(PretokDataset, resume.meta["shard_dir"], "train", cfg.batch_size, cfg.max_seq_len, 42, resume.meta["data_state"])
    if ds is not None: one_line_error_or(ds.next_batch)

def test_the_unfuzzed_checkpoint_resumes_as_saved(made):
  """The fuzz above starts from a checkpoint that loads: resume reads back what was saved."""
  resume = load_resume(made["run"])
  cfg, changes = resumed_config(TrainConfig(init_from="resume"), resume, [("init_from", "resume")])
  assert changes == [] and (cfg.dim, cfg.max_seq_len, cfg.batch_size, cfg.data) == (16, 8, 2, made["cfg"].data)
  ds = PretokDataset(made["dir"] / "shards", "train", 2, 8, state=resume.meta["data_state"])
  ref = PretokDataset(made["dir"] / "shards", "train", 2, 8)
  for _ in range(3): ref.next_batch()
  for _ in range(5): np.testing.assert_array_equal(ds.next_batch()[0], ref.next_batch()[0])

# *** --start FILE: prompts ***

@FUZZ
@given(raw=st.binary(max_size=120) | st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
       name=st.sampled_from(["p.txt", "", "missing.txt", "sub", "nul\0.txt"]))
def test_fuzzed_prompt_files(made, raw, name):
  tok = made["tok"]
  with tempfile.TemporaryDirectory() as d:
    (Path(d) / "p.txt").write_bytes(raw)
    (Path(d) / "sub").mkdir()
    ids = one_line_error_or(load_prompt, f"FILE:{Path(d) / name}" if name else "FILE:", tok)
  if ids is not None:  # only the file that exists can be read, and only if it is UTF-8 the tokenizer knows
    assert name == "p.txt" and ids[0] == tok.bos_id and tok.decode(ids[1:]) == raw.decode("utf-8")
