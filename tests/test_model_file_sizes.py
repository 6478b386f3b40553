"""Sizes read from model files (a run's ckpt.json, a Hugging Face config.json, a llama2.c .bin header) that the file's
own tensors cannot have, or that no memory of this machine holds, are one-line errors before the model is built
(issue 26, item 7). The commands run in a child process under a memory ulimit (RLIMIT_AS), where allocating what a
hostile size says is a MemoryError traceback, or the OOM killer, instead of the error."""
import json, os, resource, shutil, struct, subprocess, sys, time
from pathlib import Path
import pytest
from tinystory import UserError
from tinystory.exchange import export_model
from tinystory.tokenizer import fit_tokenizer
from test_reliability import one_error_line
from test_sample import STORIES, make_run
from test_train import ROOT

LIMIT = 3 << 30  # address space: tinygrad and numpy take about 1 GiB of it to import; a tiny model samples in the rest

def sample(model: Path) -> subprocess.CompletedProcess:
  """`sample --checkpoint=model` in a child process limited to LIMIT bytes of address space."""
  limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
  return subprocess.run([sys.executable, str(ROOT / "cli.py"), "sample", f"--checkpoint={model}", "--max_new_tokens=3",
                         "--start=Once"], capture_output=True, text=True, timeout=300, preexec_fn=limit,
                        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=model.parent)

def refused(model: Path) -> str:
  """The one error line of a sample that must fail, quickly, under the limit."""
  t0 = time.perf_counter()
  res = sample(model)
  assert res.returncode == 1 and time.perf_counter() - t0 < 20, (res.returncode, res.stderr[-3000:])
  return one_error_line(res.stdout + res.stderr)

@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """A tiny run, its Hugging Face export and its llama2.c exports (version 0 and Q8_0 version 2)."""
  d = tmp_path_factory.mktemp("sizes")
  run = make_run(d / "run", fit_tokenizer(STORIES, "char"), ffn_bias=False, dropout=0.0)
  for fmt in ("hf", "llama2c", "llama2c-q8"): export_model(str(run), fmt, str(d / fmt))
  return {"run": run, "hf": d / "hf", "bin": d / "llama2c" / "model.bin", "q8": d / "llama2c-q8" / "model.bin"}

def copy(src: Path, dst: Path) -> Path: return Path(shutil.copytree(src, dst))

@pytest.mark.slow
def test_tiny_models_of_every_source_sample_under_the_limit(models):
  for m in models.values():
    res = sample(m)
    assert res.returncode == 0 and "\nOnce" in res.stdout and res.stdout.endswith("\n---------------\n"), (m, res.stderr[-3000:])

def edit_json(path: Path, **changes) -> None:
  path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

def test_a_ckpt_json_context_of_a_billion_is_one_line(models, tmp_path):
  run = copy(models["run"], tmp_path / "run")
  meta = json.loads((run / "ckpt" / "ckpt.json").read_text())
  edit_json(run / "ckpt" / "ckpt.json", model_args={**meta["model_args"], "max_seq_len": 10**9})
  line = refused(run)
  assert line.startswith(f"Error: checkpoint {run / 'ckpt'}: ") and "max_seq_len=1000000000 (its model_args) need about" in line
  assert "GiB this process may use" in line, line

@pytest.mark.parametrize("n_layers", [3, 10**9])
def test_a_ckpt_json_depth_its_weights_cannot_have_is_one_line(models, tmp_path, n_layers):
  run = copy(models["run"], tmp_path / "run")
  meta = json.loads((run / "ckpt" / "ckpt.json").read_text())
  edit_json(run / "ckpt" / "ckpt.json", model_args={**meta["model_args"], "n_layers": n_layers})
  line = refused(run)
  assert line.startswith(f"Error: checkpoint {run / 'ckpt'}: the weights do not fit its model_args, ModelArgs(dim=16, "
                         f"n_layers={n_layers},"), line
  assert line.endswith("lacks layers.2.attention.wq.weight, layers.2.attention.wk.weight, layers.2.attention.wv.weight "
                       "and 6 more" if n_layers == 3 else f"its 20 tensors cannot hold n_layers={n_layers}"), line

@pytest.mark.parametrize("changes", [dict(max_position_embeddings=10**9), dict(num_hidden_layers=10**9),
                                     dict(hidden_size=65536, head_dim=65536 // 4, num_hidden_layers=64),
                                     dict(hidden_size=65536, head_dim=65536 // 4, intermediate_size=65536),
                                     dict(num_hidden_layers=3)])
def test_hf_config_sizes_its_weights_cannot_have_are_one_line(models, tmp_path, changes):
  hf = copy(models["hf"], tmp_path / "hf")
  edit_json(hf / "config.json", **changes)
  line = refused(hf)
  if "max_position_embeddings" in changes:
    assert line.startswith(f"Error: {hf}: dim=16, hidden_size=42, n_layers=2, n_heads=4, vocab_size=31, "
                           "max_seq_len=1000000000 (config.json) need about"), line
  elif changes.get("num_hidden_layers", 0) > 3:  # a name for each of them would be made before the shapes are seen
    assert line == f"Error: {hf / 'config.json'}: num_hidden_layers={changes['num_hidden_layers']}, but " \
                   f"{hf / 'model.safetensors'} holds 21 tensors, too few for that many layers", line
  else:
    assert line.startswith(f"Error: {hf}: the weights do not fit config.json, ModelArgs(dim="), line
    assert line.endswith("tok_embeddings.weight has shape [31, 16], expected [31, 65536]" if "hidden_size" in changes
                         else "lacks layers.2.attention.wq.weight, layers.2.attention.wk.weight, "
                              "layers.2.attention.wv.weight and 6 more"), line

HEADER = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")

def bin_with(src: Path, dst: Path, **header) -> Path:
  """A copy of the .bin at `src` (and its tokenizer.bin) with header values changed."""
  copy(src.parent, dst)
  raw = bytearray((dst / "model.bin").read_bytes())
  at = 8 if raw[:4] == struct.pack("<I", 0x616B3432) else 0
  values = dict(zip(HEADER, struct.unpack_from("<7i", raw, at))) | header
  struct.pack_into("<7i", raw, at, *(values[k] for k in HEADER))
  (dst / "model.bin").write_bytes(raw)
  return dst / "model.bin"

def test_a_bin_header_is_checked_against_the_file_size_before_anything_is_read(models, tmp_path):
  huge = dict(dim=1 << 20, n_layers=1 << 20, seq_len=1 << 20)
  for kind, version in (("bin", 0), ("q8", 2)):
    m = bin_with(models[kind], tmp_path / kind, **huge)
    size, line = m.stat().st_size, refused(m)
    assert line.startswith(f"Error: {m}: {size:,} bytes, but its header (dim=1048576, hidden_dim=42, n_layers=1048576, "
                           f"n_heads=4, n_kv_heads=2, vocab_size=31, seq_len=1048576, version {version}) implies "), line
    assert line.endswith(": truncated, or not a llama2.c model file"), line

def test_a_bin_context_no_memory_holds_is_one_line(models, tmp_path):
  """Version 2 holds no RoPE tables: its seq_len is in no tensor's size, and only the memory estimate bounds it."""
  m = bin_with(models["q8"], tmp_path / "q8", seq_len=1 << 20)
  line = refused(m)
  assert line.startswith(f"Error: {m}: dim=16, hidden_size=42, n_layers=2, n_heads=4, vocab_size=31, max_seq_len=1048576 "
                         "(its header) need about"), line

def test_the_memory_estimate_counts_the_context(monkeypatch):
  """Checked in-process with a smaller machine: a plausible model that does not fit it is refused, one that does is not."""
  import tinystory.model as model
  from tinystory.config import ModelArgs
  from tinystory.model import check_file_sizes, memory_needed, param_shapes
  a = ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=100, max_seq_len=4096, multiple_of=1)
  shapes = param_shapes(a, a.vocab_size, a.hidden_size)
  assert memory_needed(a) > 13 * 4096 ** 2 * 4  # the prefill's (n_heads, T, T) scores, their exp and more, and the mask
  monkeypatch.setattr(model, "memory_available", lambda: 512 << 20)
  with pytest.raises(UserError, match=r"^f.bin: dim=64, hidden_size=170, n_layers=2, n_heads=4, vocab_size=100, "
                                      r"max_seq_len=4096 \(its header\) need about 0\.8 GiB to build the model and "
                                      r"sample from it, more than the 0\.5 GiB this process may use"):
    check_file_sizes(a, shapes, "f.bin", "its header")
  a.max_seq_len = 1024
  check_file_sizes(a, shapes, "f.bin", "its header")
