"""Runs and checkpoints: where run dirs are, the safetensors files against an independent reader, saving without a
tinygrad kernel, atomic replacement, write errors (disk full in a child process) and corrupt files, file modes."""
import json, os, re, stat, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory import UserError
from tinystory.checkpoint import find_checkpoint, find_run, load_checkpoint, locate, model_weights, save_checkpoint
from tinystory.rundir import run_dir
from tinystory.config import ModelArgs
from tinystory.model import Transformer

ROOT = Path(__file__).resolve().parent.parent
ARGS = ModelArgs(dim=16, n_layers=1, n_heads=2, vocab_size=20, max_seq_len=8, multiple_of=1)  # vocab 20, hidden 42: padded
META = {"model_args": {}, "iter_num": 1, "best_val_loss": 2.0}

def read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """The format by hand: an 8-byte little-endian header length, a JSON header, then each tensor's bytes."""
  raw = path.read_bytes()
  n = int.from_bytes(raw[:8], "little")
  header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
  header.pop("__metadata__", None)
  assert all(h["dtype"] == "F32" for h in header.values())
  return {k: np.frombuffer(data[h["data_offsets"][0]:h["data_offsets"][1]], "<f4").reshape(h["shape"]) for k, h in header.items()}

def padded_model(seed=0) -> Transformer:
  m = Transformer(ARGS, seed=seed)
  assert (m.padded_vocab, m.padded_hidden) == (32, 48)  # the tests are about removing padding
  return m

# *** where runs are ***

def test_relative_run_dirs_are_under_runs_of_the_working_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert run_dir("a/b") == tmp_path / "runs" / "a" / "b" and run_dir(str(tmp_path / "x")) == tmp_path / "x"
  assert locate("r") == Path("r")  # neither exists: as given
  (tmp_path / "runs" / "r").mkdir(parents=True)
  assert locate("r") == tmp_path / "runs" / "r"  # the name train's --out_dir gave
  (tmp_path / "r").mkdir()
  assert locate("r") == Path("r")  # the path as given comes first
  with pytest.raises(UserError, match=r"^r is not a run dir: it has no config.json"): find_run("r")

# *** save and load ***

def test_saved_files_hold_logical_shapes_and_saving_runs_no_kernel(tmp_path):
  from tinygrad import Tensor
  from tinygrad.helpers import GlobalCounters
  m = padded_model()
  Tensor.realize(*m.parameters())
  opt = {"exp_avg.norm.weight": np.arange(16, dtype=np.float32)}
  kernels = GlobalCounters.kernel_count
  save_checkpoint(tmp_path, model_weights(m), opt, META)
  assert GlobalCounters.kernel_count == kernels  # no kernel and no copy ran: .numpy() of realized buffers, sliced in numpy
  want = {n: t.numpy() for n, t in m.state_dict().items()}  # tinygrad's own slicing, as the reference
  got = read_safetensors(tmp_path / "ckpt" / "model.safetensors")
  assert list(want) == list(m.shapes) and set(got) == set(want)
  for n in want: np.testing.assert_array_equal(got[n], want[n], n)
  np.testing.assert_array_equal(read_safetensors(tmp_path / "ckpt" / "optimizer.safetensors")["exp_avg.norm.weight"], opt["exp_avg.norm.weight"])
  meta, weights, opt_back = load_checkpoint(tmp_path)
  assert meta == META and sorted(os.listdir(tmp_path)) == ["ckpt"]
  for n in want: np.testing.assert_array_equal(weights[n], want[n], n)
  np.testing.assert_array_equal(opt_back["exp_avg.norm.weight"], opt["exp_avg.norm.weight"])

def test_optimizer_state_is_saved_in_logical_shapes(tmp_path):
  from tinygrad import Tensor
  from tinystory.config import TrainConfig
  from tinystory.train import TrainSteps
  m = padded_model()
  steps = TrainSteps(m, TrainConfig(batch_size=2, max_seq_len=8, compile=False))
  rng = np.random.default_rng(0)
  padded = {}
  for n, t in zip(m.weights, steps.opt.exp_avg):
    padded[n] = rng.standard_normal(t.shape).astype(np.float32)
    t.assign(Tensor(padded[n])).realize()
  state = steps.opt.state_dict(m.shapes)
  for n, s in m.shapes.items():
    np.testing.assert_array_equal(state["exp_avg." + n], padded[n][tuple(slice(0, d) for d in s)], n)
  save_checkpoint(tmp_path, model_weights(m), state, META)
  again = TrainSteps(m, TrainConfig(batch_size=2, max_seq_len=8, compile=False))
  again.opt.load_state_dict(load_checkpoint(tmp_path)[2], 3, m.shapes)
  for n, s in m.shapes.items():  # back in the padded layout: logical values, zero padding
    want = np.zeros_like(padded[n])
    want[tuple(slice(0, d) for d in s)] = padded[n][tuple(slice(0, d) for d in s)]
    np.testing.assert_array_equal(again.opt.exp_avg[list(m.weights).index(n)].numpy(), want, n)

class Crash(BaseException): """A process killed mid-save: nothing after it runs."""

def fail_second_replace(monkeypatch, error: BaseException) -> None:
  """os.replace raises `error` on its second call (a save's rename of ckpt.tmp to ckpt), works otherwise."""
  real, calls = os.replace, []
  def replace(a, b):
    calls.append(a)
    if len(calls) == 2: raise error
    real(a, b)
  monkeypatch.setattr(os, "replace", replace)

def test_a_crash_between_the_renames_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
  save_checkpoint(tmp_path, model_weights(padded_model(0)), {}, META)
  fail_second_replace(monkeypatch, Crash())
  with pytest.raises(Crash): save_checkpoint(tmp_path, model_weights(padded_model(1)), {}, {**META, "iter_num": 2})
  monkeypatch.undo()
  # the old checkpoint survived complete (as ckpt.prev), and it is what loading finds
  meta, weights, _ = load_checkpoint(tmp_path)
  assert meta["iter_num"] == 1 and find_checkpoint(tmp_path).name == "ckpt.prev"
  np.testing.assert_array_equal(weights["norm.weight"], np.ones(16, np.float32))

def test_a_rename_error_puts_the_previous_checkpoint_back(tmp_path, monkeypatch):
  save_checkpoint(tmp_path, model_weights(padded_model(0)), {}, META)
  fail_second_replace(monkeypatch, PermissionError(13, "Permission denied"))
  with pytest.raises(UserError) as e: save_checkpoint(tmp_path, model_weights(padded_model(1)), {}, {**META, "iter_num": 2})
  monkeypatch.undo()
  assert str(e.value) == f"cannot write {tmp_path / 'ckpt'}: Permission denied (checkpoint not saved; the previous one, if any, is kept)"
  assert sorted(os.listdir(tmp_path)) == ["ckpt"] and load_checkpoint(tmp_path)[0]["iter_num"] == 1

CHILD = """
import resource, sys
import numpy as np
from pathlib import Path
from tinystory import UserError
from tinystory.checkpoint import save_checkpoint
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # files of 1 MiB at most: a write past it is EFBIG
try: save_checkpoint(Path(sys.argv[1]), {"w": np.ones((1024, 1024), np.float32)}, {}, {"iter_num": 2})
except UserError as e: sys.exit(f"Error: {e}")
"""

def test_disk_full_is_a_one_line_error_and_keeps_the_previous_checkpoint(tmp_path):
  save_checkpoint(tmp_path, model_weights(padded_model(0)), {}, META)
  p = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 1 and p.stdout == "" and p.stderr == (
    f"Error: cannot write {tmp_path / 'ckpt.tmp' / 'model.safetensors'}: File too large "
    "(checkpoint not saved; the previous one, if any, is kept)\n"), p.stderr
  assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no ckpt.tmp, no ckpt.prev
  meta, weights, _ = load_checkpoint(tmp_path)
  assert meta == META
  for n, w in model_weights(padded_model(0)).items(): np.testing.assert_array_equal(weights[n], w, n)

@pytest.mark.parametrize("damage, msg", [
  (lambda ck: (ck / "ckpt.json").write_text("{not json"), "is unreadable or corrupt: Expecting property name"),
  (lambda ck: (ck / "model.safetensors").write_bytes(b"garbage"), "is unreadable or corrupt: Error while deserializing"),
  (lambda ck: (ck / "model.safetensors").write_bytes((ck / "model.safetensors").read_bytes()[:-10]), "is unreadable or corrupt"),
  (lambda ck: (ck / "optimizer.safetensors").write_bytes(b"\0" * 4), "is unreadable or corrupt"),
  (lambda ck: (ck / "ckpt.json").write_text("[1]"), "ckpt.json is not a JSON object"),
  (lambda ck: (ck / "ckpt.json").write_text("{}"), "ckpt.json lacks 'model_args'"),
])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, damage, msg):
  save_checkpoint(tmp_path, model_weights(padded_model()), {"m": np.zeros(3, np.float32)}, META)
  damage(tmp_path / "ckpt")
  with pytest.raises(UserError, match=f"^{re.escape(f'checkpoint {tmp_path}')}.*{msg}"): load_checkpoint(tmp_path)

# *** file modes ***

@pytest.fixture
def umask_022():
  old = os.umask(0o022)
  yield
  os.umask(old)

@pytest.mark.slow
def test_every_file_written_is_0644(tmp_path, monkeypatch, umask_022):
  monkeypatch.setenv("TINYSTORY_DATA", str(tmp_path / "cache"))
  (tmp_path / "s.txt").write_text("Once upon a time there was a cat.\n\nThe cat liked milk and naps.\n\nThe end came.\n")
  res = CliRunner().invoke(cli, ["tokenizer", "fit", "--kind=char", f"--data={tmp_path / 's.txt'}", f"--out={tmp_path / 'tok' / 't.tok'}"])
  assert res.exit_code == 0, res.output
  res = CliRunner().invoke(cli, ["train", f"--out_dir={tmp_path / 'run'}", f"--data={tmp_path / 's.txt'}", f"--tokenizer={tmp_path / 'tok' / 't.tok'}",
                                 "--dim=16", "--n_layers=1", "--n_heads=2", "--n_kv_heads=2", "--max_seq_len=8", "--batch_size=2",
                                 "--eval_iters=1", "--max_iters=1", "--eval_interval=1", "--always_save_checkpoint=True"])
  assert res.exit_code == 0, res.output
  files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "s.txt"]
  assert {"t.tok", "tokenizer.tok", "config.json", "model.safetensors", "optimizer.safetensors", "ckpt.json"} <= {p.name for p in files}
  assert {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
         {str(p.relative_to(tmp_path)): "0o644" for p in files}
