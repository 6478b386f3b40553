"""Data parallel training over several devices (`--device=cpu:0,cpu:1`: tinygrad's virtual CPU devices, Tensor.shard):
the same run as on one device within float tolerance, the same checkpoint format, exact resume (dropout masks drawn
per device included), and one-line errors for device lists that cannot work."""
import numpy as np
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory import UserError, device, model
from tinystory.checkpoint import load_checkpoint
from test_train import run_train
from test_train_step import RESUME, exact_losses, interrupt_after_update

TWO = "--device=cpu:0,cpu:1"
SAME = ["--max_iters=5", "--eval_interval=5", "--dropout=0", "--gradient_accumulation_steps=2", "--warmup_iters=2",
        "--learning_rate=1e-2", "--always_save_checkpoint=True"]

@pytest.mark.slow
@pytest.mark.parametrize("grad_chunk", [0, 16])
def test_two_devices_train_as_one(tmp_path, monkeypatch, grad_chunk):
  """5 iterations of 2 accumulated micro-batches, pinv unembedding: losses, evals, weights and AdamW moments agree with
  one device's to float rounding (the all-reduce adds the two halves' gradients in another order). Weight and embedding
  gradients summed over all positions at once, and in chunks of 16 positions (of each device's 32, a micro-batch's
  64; device.choose_for's 256 are more than these batches hold)."""
  monkeypatch.setattr(device, "WEIGHT_GRAD_CHUNK", grad_chunk)
  res, one = run_train(tmp_path, *SAME, name="one")
  assert res.exit_code == 0, res.output
  res, two = run_train(tmp_path, *SAME, TWO, name="two")
  assert res.exit_code == 0, res.output
  assert "data parallel over 2 devices (CPU, CPU:1): each micro-batch of 4 is split into 2 shards of 2" in res.output
  assert device.choose_for("CPU").grad_chunk == grad_chunk  # the choice both runs trained with
  (i1, l1), (i2, l2) = (zip(*exact_losses(r)) for r in (one, two))
  assert i1 == i2 == (0, 1, 2, 3, 4, 5) and np.allclose(l1, l2, rtol=1e-5, atol=0) and l1[-1] < l1[0] - 1
  (m1, w1, o1), (m2, w2, o2) = load_checkpoint(one), load_checkpoint(two)
  assert m1["iter_num"] == m2["iter_num"] == 5 and m1["best_val_loss"] == pytest.approx(m2["best_val_loss"], rel=1e-5)
  for a, b in ((w1, w2), (o1, o2)):  # the same names and shapes: a checkpoint does not know how it was trained
    assert {n: v.shape for n, v in a.items()} == {n: v.shape for n, v in b.items()}
    for n in a: np.testing.assert_allclose(b[n], a[n], rtol=1e-4, atol=1e-6 * np.abs(a[n]).max(), err_msg=n)

@pytest.mark.slow
def test_two_devices_resume_exactly(tmp_path, monkeypatch):
  """Ctrl-C after iteration 2 and a resume to the end log the same float losses as an uninterrupted two-device run:
  each device's dropout counter is in the checkpoint."""
  res, full = run_train(tmp_path, "--max_iters=7", *RESUME, TWO, name="full")
  assert res.exit_code == 0, res.output
  with monkeypatch.context() as mp:
    interrupt_after_update(mp, at=2, signals=1)
    res, cut = run_train(tmp_path, "--max_iters=7", *RESUME, TWO, name="cut")
  assert res.exit_code == 0 and load_checkpoint(cut)[0]["iter_num"] == 3, res.output
  assert len(load_checkpoint(cut)[0]["rng_state"]["more_counters"]) == 1
  res, _ = run_train(tmp_path, "--max_iters=7", "--init_from=resume", *RESUME, TWO, name="cut")
  assert res.exit_code == 0, res.output
  assert exact_losses(cut) == exact_losses(full)

@pytest.mark.parametrize("args, message", [
  (["--batch_size=3", TWO], "--batch_size=3 must be a multiple of the 2 devices of --device=cpu:0,cpu:1: each gets an "
                            "equal shard of every micro-batch"),
  (["--device=cpu,cpu:0"], "--device=cpu,cpu:0: a device is listed twice"),
  (["--device=cpu:x,cpu:1"], "--device=cpu:x,cpu:1: expected DEVICE or DEVICE:N (e.g. cuda:1), got 'cpu:x'"),
])
def test_device_lists_that_cannot_work_are_one_line(tmp_path, args, message):
  res, rdir = run_train(tmp_path, "--max_iters=1", *args)
  assert res.exit_code == 1 and res.output.strip().splitlines()[-1] == f"Error: {message}", res.output
  assert not rdir.exists()

def test_sampling_takes_one_device(tmp_path):
  res = CliRunner().invoke(cli, ["sample", f"--checkpoint={tmp_path}", "--device=cpu:0,cpu:1"])
  assert res.exit_code == 1 and res.output.strip().splitlines()[-1] == \
    "Error: --device=cpu:0,cpu:1: one device here (several, comma-separated, are for data parallel training)", res.output

@pytest.mark.slow
def test_training_on_another_device_runs_no_cpu_kernel(tmp_path):
  """A run on tinygrad's NULL device (it runs nothing; NULL_ALLOW_COPYOUT lets the host read its buffers, as zeros)
  with evals and checkpoints: DEBUG=2 lists every kernel with its device, and none is a CPU kernel: the checkpoint,
  eval and log paths read the device's buffers without computing on the host's tinygrad device."""
  import os, re, subprocess, sys
  from pathlib import Path
  root = Path(__file__).resolve().parent.parent
  env = {**os.environ, "DEBUG": "2", "NULL_ALLOW_COPYOUT": "1", "TINYSTORY_DATA": str(tmp_path / "cache")}
  p = subprocess.run([sys.executable, str(root / "cli.py"), "train", f"--out_dir={tmp_path / 'run'}", "--device=null",
                      "--unembedding=tied", "--dim=16", "--n_layers=1", "--n_heads=2", "--n_kv_heads=2", "--max_seq_len=16",
                      "--batch_size=4", "--max_iters=3", "--eval_interval=2", "--eval_iters=1", "--data=synthetic:50",
                      "--always_save_checkpoint=True"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  devices = re.findall(r"\*\*\* (\S+)\s+\d+", re.sub(r"\x1b\[[0-9;]*m", "", p.stdout + p.stderr))
  assert devices.count("NULL") > 50 and set(devices) == {"NULL"}
  assert (tmp_path / "run" / "ckpt" / "model.safetensors").is_file() and "saving checkpoint" in p.stdout

def test_each_device_gets_its_shard_of_the_batch_and_all_the_weights():
  from tinystory.config import ModelArgs, TrainConfig
  from tinystory.model import Transformer
  from tinystory.train import TrainSteps
  devices = ("CPU", "CPU:1")
  model = Transformer(ModelArgs(dim=16, n_layers=1, n_heads=2, vocab_size=40, max_seq_len=8), seed=0).shard(devices)
  steps = TrainSteps(model, TrainConfig(batch_size=4, max_seq_len=8))
  for t in steps.batch: assert t.device == devices and t.uop.axis == 0 and t.shape == (4, 8)
  for t in [*model.parameters(), *steps.opt.exp_avg, *steps.opt.exp_avg_sq, *steps.grad_acc]:
    assert t.device == devices and t.uop.axis is None  # replicated

def test_nvidia_gpus_get_tf32_matmuls_as_the_seeds_pytorch_allows(monkeypatch):
  from tinystory.device import settings_for
  monkeypatch.delenv("ALLOW_TF32", raising=False)
  for backend in ("CPU", "METAL", "AMD", ("AMD:0", "AMD:1")): assert "ALLOW_TF32" not in settings_for(backend), backend
  for backend in ("CUDA", "NV", "CUDA:1", ("NV:0", "NV:1")): assert settings_for(backend)["ALLOW_TF32"] == 1, backend
  monkeypatch.setenv("ALLOW_TF32", "0")  # the user's own choice stands
  assert "ALLOW_TF32" not in settings_for("CUDA")
  assert settings_for(("CUDA:0", "CUDA:1"))["DEV"] == "CUDA"  # tinygrad's DEV names the backend

def test_the_cpu_gets_512_bit_vectors_where_it_has_avx512(tmp_path):
  """DEV for the CPU (device.cpu_target): tinygrad's Clang renderer with clang's -mprefer-vector-width=512 on an
  x86-64 CPU whose flags list avx512f, and tinygrad's own choice elsewhere; a compile under it runs on this machine."""
  import os
  from tinygrad import Tensor
  from tinystory.device import cpu_target, settings_for, using_device
  with_avx512, without = tmp_path / "avx512", tmp_path / "avx2"
  with_avx512.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n\n")
  without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n\n")
  x86 = os.uname().machine == "x86_64"
  assert cpu_target(str(with_avx512)) == ("CPU:CLANG:x86_64,native,prefer-vector-width=512" if x86 else "CPU")
  assert cpu_target(str(without)) == cpu_target(str(tmp_path / "missing")) == "CPU"
  assert settings_for("CPU")["DEV"] == cpu_target() and settings_for("NULL")["DEV"] == "NULL"
  with using_device("cpu"):
    assert (Tensor.arange(64).float() * 2).sum().item() == 4032

def test_a_commands_device_is_tinygrads_default_for_its_block_only(monkeypatch):
  """using_device makes the command's device tinygrad's default, with its settings, and puts them back after the
  command, also when it fails: a second command in the same process (the tests, a notebook) starts from the first's
  settings, not from what the first one chose."""
  from tinygrad import Device
  from tinygrad.helpers import ALLOW_TF32, DEV
  from tinystory.device import using_device
  before = (DEV.value, ALLOW_TF32.value, Device.DEFAULT)
  monkeypatch.setattr("tinystory.device.settings_for", lambda device: {"DEV": "NULL", "ALLOW_TF32": 1})  # a GPU's, here
  with using_device("cpu") as dev:
    assert dev == "CPU" and Device.DEFAULT == "NULL" and ALLOW_TF32.value == 1
  assert (DEV.value, ALLOW_TF32.value, Device.DEFAULT) == before
  with pytest.raises(RuntimeError), using_device("cpu"):
    raise RuntimeError("the command failed")
  assert (DEV.value, ALLOW_TF32.value, Device.DEFAULT) == before
  with pytest.raises(UserError, match=r"--device=cpu:1: the CPU is one device here"), using_device("cpu:1"): pass

def test_chunked_gradients_never_straddle_two_shards_of_a_batch(monkeypatch):
  """With the GPUs' chunked weight and embedding gradients: 6 positions make 3 chunks of 2 on one device, which two
  devices (3 positions each) cannot share, so there the gradient is one sum (a reshape that moves positions between
  shards is an error in tinygrad). Both match float64 numpy."""
  from tinygrad import Tensor
  from tinygrad.helpers import Context
  rng = np.random.default_rng(0)
  x, w = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4))
  E, tok = rng.standard_normal((7, 4)), rng.integers(0, 7, (2, 3))
  for devices in (None, ("CPU", "CPU:1")):
    assert model.grad_parts(6, devices or "CPU", 2) == (0 if devices else 3)
    tx, tw, tt, tE = Tensor(x.astype(np.float32)), Tensor(w.astype(np.float32)), Tensor(tok), Tensor(E.astype(np.float32))
    if devices: tx, tw, tt, tE = tx.shard(devices, axis=0), tw.shard(devices), tt.shard(devices, axis=0), tE.shard(devices)
    with Context(TRAINING=1):
      gw, gE = (model.linear(tx, tw, chunk=2).square().sum() + model.embed(tE, tt, chunk=2).square().sum()).gradient(tw, tE)
    np.testing.assert_allclose(gw.numpy(), 2 * np.einsum("nk,ni->ki", x.reshape(6, 4) @ w.T, x.reshape(6, 4)), rtol=1e-5)
    np.testing.assert_allclose(gE.numpy(), 2 * np.stack([E[v] * (tok == v).sum() for v in range(7)]), rtol=1e-5)
