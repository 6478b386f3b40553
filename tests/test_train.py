"""Training: options, schedule, optimizer maths, the loop's log and cadence, checkpoints and exact resume."""
import json, math, os, re, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory.checkpoint import load_checkpoint
from tinystory.optim import AdamW, get_lr
from tinystory.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dim=16", "--n_layers=1", "--n_heads=2", "--n_kv_heads=2", "--max_seq_len=16", "--batch_size=4",
        "--eval_iters=2", "--log_interval=1", "--data=synthetic:300"]

@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch): monkeypatch.setenv("TINYSTORY_DATA", str(tmp_path / "cache"))

def run_train(tmp_path, *args, name="run"):
  res = CliRunner().invoke(cli, ["train", f"--out_dir={tmp_path / name}", *TINY, *args])
  return res, tmp_path / name

def iter_lines(log: str) -> list[str]: return [l for l in log.splitlines() if re.match(r"^\d+ \| loss", l)]

# *** options ***

SEED_CMD = """--out_dir=outminimagic19 --batch_size=64 --max_seq_len=128 --gradient_accumulation_steps=1 --vocab_source=custom
--vocab_size=361 --dim=128 --n_layers=4 --n_heads=16 --n_kv_heads=16 --multiple_of=1 --learning_rate=3e-4 --dropout=0.15
--weight_decay=0.1 --max_iters=100000 --beta2=0.99 --warmup_iters=2500 --eval_interval=5000 --eval_iters=100
--compile=False --device=cpu""".split()

def capture_train(monkeypatch):
  got = {}
  def fake_train(cfg, overrides=(), argv=None, recipe=None, from_recipe=()):
    got.update(cfg=cfg, overrides=list(overrides), argv=argv, recipe=recipe, from_recipe=list(from_recipe))
  monkeypatch.setattr("tinystory.train.train", fake_train)
  return got

def test_seed_command_line_parses_as_llama2c(monkeypatch):
  got = capture_train(monkeypatch)
  res = CliRunner().invoke(cli, ["train", *SEED_CMD])
  assert res.exit_code == 0, res.output
  cfg = got["cfg"]
  assert (cfg.batch_size, cfg.learning_rate, cfg.compile, cfg.beta2, cfg.out_dir) == (64, 3e-4, False, 0.99, "outminimagic19")
  # the Overriding lines follow the command line's order, with llama2.c's value formatting
  assert [k for k, _ in got["overrides"]] == [a[2:].split("=")[0] for a in SEED_CMD]
  assert dict(got["overrides"])["learning_rate"] == 0.0003 and dict(got["overrides"])["compile"] is False
  assert got["argv"] == ["train", *SEED_CMD]  # recorded as typed, for config.json

def test_dash_spelling_and_booleans(monkeypatch):
  got = capture_train(monkeypatch)
  assert CliRunner().invoke(cli, ["train", "--batch-size", "8", "--decay_lr=false", "--compile", "True"]).exit_code == 0
  assert (got["cfg"].batch_size, got["cfg"].decay_lr, got["cfg"].compile) == (8, False, True)

@pytest.mark.parametrize("args, msg", [
  (["--bogus=1"], "No such option '--bogus'"),
  (["--batch_size=x"], "'x' is not a valid integer"),
  (["--compile=maybe"], "'maybe' is not a valid boolean"),
])
def test_bad_options_one_line(args, msg):
  p = subprocess.run([sys.executable, "cli.py", "train", *args], cwd=ROOT, capture_output=True, text=True)
  assert p.returncode == 2 and p.stderr.count("\n") == 1 and msg in p.stderr, p.stderr

@pytest.mark.parametrize("args, msg", [
  (["--init_from=nope"], "--init_from must be 'scratch', 'resume' or a model file (a llama2.c .bin or a Hugging Face directory, docs/exchange.md), got 'nope'"),
  (["--init_from=resume", "--overwrite=True"], "--overwrite=True starts a new run: it does not go with --init_from=resume"),
  (["--batch_size=0"], "--batch_size must be a positive integer, got 0"),
  (["--beta2=1.5"], "--beta2 must be in [0, 1), got 1.5"),
  (["--vocab_source=llama2"], "--vocab_source='llama2' is not available"),
  (["--dtype=int8"], "--dtype must be float32, bfloat16 or float16"),
  (["--device=nosuchdevice"], "--device=nosuchdevice: tinygrad cannot open NOSUCHDEVICE"),
  (["--vocab_size=999"], "char vocab size 999 is too large: the data has"),
  (["--data=/no/such/file.txt"], "/no/such/file.txt"),
])
def test_bad_values(tmp_path, args, msg):
  res, _ = run_train(tmp_path, "--max_iters=0", *args)
  assert res.exit_code == 1 and msg in res.output, res.output

def test_vocab_size_must_agree_with_tokenizer_file(tmp_path):
  from tinystory.tokenizer import fit_tokenizer
  fit_tokenizer(["a tiny story.", "another one!"], "char").save(tmp_path / "t.tok")
  res, _ = run_train(tmp_path, "--max_iters=0", f"--tokenizer={tmp_path / 't.tok'}", "--vocab_size=361")
  assert res.exit_code == 1 and f"--vocab_size=361 disagrees with the tokenizer {tmp_path / 't.tok'}, which has 16 tokens" in res.output

@pytest.mark.slow
def test_resume_without_checkpoint_and_scratch_over_checkpoint(tmp_path):
  res, _ = run_train(tmp_path, "--init_from=resume")
  assert res.exit_code == 1 and "no checkpoint in" in res.output
  res, rdir = run_train(tmp_path, "--max_iters=2", "--eval_interval=2", "--always_save_checkpoint=True")
  assert res.exit_code == 0, res.output
  res, _ = run_train(tmp_path, "--max_iters=2")
  assert res.exit_code == 1 and f"Error: {rdir} already holds a checkpoint ({rdir / 'ckpt'}): pass --init_from=resume to continue it, " \
    "--overwrite=True to delete that run and start a new one there, or another --out_dir\n" in res.output
  res, _ = run_train(tmp_path, "--max_iters=1", "--eval_interval=1", "--always_save_checkpoint=True", "--overwrite=True")  # a new run there
  assert res.exit_code == 0 and f"--overwrite=True: deleted the previous run in {rdir}" in res.output, res.output
  assert (rdir / "train.log").read_text() == res.output and len(json.loads((rdir / "config.json").read_text())["commands"]) == 1
  assert [m["iter"] for m in map(json.loads, (rdir / "metrics.jsonl").read_text().splitlines()) if "loss" in m] == [0, 1]
  assert load_checkpoint(rdir)[0]["iter_num"] == 1

# *** schedule and optimizer maths ***

def test_lr_schedule_matches_llama2c():
  cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
  assert get_lr(0, cfg) == 0 and get_lr(5, cfg) == pytest.approx(5e-4)
  assert get_lr(10, cfg) == pytest.approx(1e-3) and get_lr(60, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4)
  assert get_lr(110, cfg) == pytest.approx(1e-4) and get_lr(500, cfg) == 1e-4
  assert get_lr(7, TrainConfig(decay_lr=False, learning_rate=2e-3)) == 2e-3
  assert get_lr(60, TrainConfig(learning_rate=1e-3, warmup_iters=10, max_iters=1000, lr_decay_iters=110)) == pytest.approx(5e-4)

def numpy_adamw(p, g, m, v, lr, step, wd, b1, b2, clip, eps=1e-8):
  """torch.nn.utils.clip_grad_norm_ then torch.optim.AdamW, in float64."""
  norm = math.sqrt(sum((x ** 2).sum() for x in g))
  if clip: g = [x * min(clip / (norm + 1e-6), 1.0) for x in g]
  out = []
  for pi, gi, mi, vi, wdi in zip(p, g, m, v, wd):
    pi = pi * (1 - lr * wdi)
    mi, vi = b1 * mi + (1 - b1) * gi, b2 * vi + (1 - b2) * gi * gi
    out.append((pi - lr / (1 - b1 ** step) * mi / (np.sqrt(vi) / math.sqrt(1 - b2 ** step) + eps), mi, vi))
  return out

def test_weight_decay_groups_are_llama2cs():
  """AdamW decays the 2+-dim tensors (matmuls, embedding), not the biases and norm weights: llama2.c's
  configure_optimizers, whose counts train logs (29 decayed tensors, 13 not, for the seed)."""
  from tinystory.config import SEED_MODEL, ModelArgs
  from tinystory.model import Transformer
  from tinystory.train import TrainSteps
  model = Transformer(ModelArgs(**SEED_MODEL), seed=0)
  decays = dict(zip(model.weights, TrainSteps(model, TrainConfig(weight_decay=0.25)).opt.decays))
  assert {n for n, d in decays.items() if d == 0.25} == {n for n in decays if n.endswith(".weight") and "norm" not in n}
  assert {n for n, d in decays.items() if d == 0.0} == {n for n in decays if n.endswith(("norm.weight", ".bias"))}
  assert len(decays) == 42 and sum(d == 0.25 for d in decays.values()) == model.num_params()[0][0] == 29

@pytest.mark.parametrize("clip", [0.0, 1.0, 0.01, 100.0])  # off, active (norm ~4), inactive
def test_adamw_step_matches_numpy(clip):
  from tinygrad import Tensor
  rng = np.random.default_rng(0)
  shapes = [(5, 3), (3,)]
  p, g, m = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
  v = [np.abs(rng.standard_normal(s)) for s in shapes]
  wd, lr, step = [0.1, 0.0], 3e-3, 7
  tp, tg = [[Tensor(x.astype(np.float32)).contiguous().realize() for x in xs] for xs in (p, g)]
  opt = AdamW(tp, wd, 0.9, 0.99, clip)
  opt.load_state_dict({f"{k}.p{i}": x for k, xs in (("exp_avg", m), ("exp_avg_sq", v)) for i, x in enumerate(xs)}, step - 1,
                      {f"p{i}": x.shape for i, x in enumerate(p)})
  Tensor.realize(*opt.update(tg, Tensor([lr]), Tensor([float(step)])))
  for (rp, rm, rv), a, b, c in zip(numpy_adamw(p, g, m, v, lr, step, wd, 0.9, 0.99, clip), tp, opt.exp_avg, opt.exp_avg_sq):
    np.testing.assert_allclose(a.numpy(), rp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), rm, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c.numpy(), rv, rtol=1e-5, atol=1e-7)

# *** the loop ***

ITER_LINE = re.compile(r"^\d+ \| loss \d+\.\d{4} \| lr \d\.\d{6}e[-+]\d\d \| \d+\.\d{2}ms \| mfu -?\d+\.\d{2}% \| [\d,]+ tok/s \| eta (\d+:\d\d:\d\d|\?)$")

def test_log_format_cadence_and_records(tmp_path):
  res, rdir = run_train(tmp_path, "--max_iters=6", "--eval_interval=3", "--warmup_iters=2", "--learning_rate=1e-2")
  assert res.exit_code == 0, res.output
  log = (rdir / "train.log").read_text()
  assert log == res.output  # the file holds exactly what the user saw
  lines = log.splitlines()
  assert lines[0] == f"Overriding: out_dir = {rdir}" and "Overriding: dim = 16" in lines
  assert "tokens per iteration will be: 64" in lines
  assert "breaks down as: 1 grad accum steps * 1 processes * 4 batch size * 16 max seq len" in lines
  assert "Initializing a new model from scratch" in lines
  assert any(re.fullmatch(r"num decayed parameter tensors: \d+, with [\d,]+ parameters", l) for l in lines)
  assert any(re.fullmatch(r"num non-decayed parameter tensors: \d+, with [\d,]+ parameters", l) for l in lines)
  evals = [l for l in lines if l.startswith("step ")]
  assert [int(l.split()[1][:-1]) for l in evals] == [0, 3, 6]
  assert all(re.fullmatch(r"step \d+: train loss \d+\.\d{4}, val loss \d+\.\d{4}", l) for l in evals)
  its = iter_lines(log)
  assert [int(l.split()[0]) for l in its] == list(range(7))  # llama2.c runs iterations 0..max_iters
  assert all(ITER_LINE.match(l) for l in its), its
  assert "lr 5.000000e-03" in its[1]  # warmup: 1e-2 * 1/2
  # a checkpoint only when val improves, never at step 0: here after the evals at steps 3 and 6 (lr 1e-2 learns)
  assert [lines[i - 1].split(":")[0] for i, l in enumerate(lines) if l == f"saving checkpoint to {rdir}"] == ["step 3", "step 6"]
  metrics = [json.loads(l) for l in (rdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["iter"] for m in metrics if "loss" in m] == list(range(7))
  assert [m["iter"] for m in metrics if "val_loss" in m] == [0, 3, 6]
  assert metrics[-1]["tokens"] == 7 * 64 and all({"lr", "dt", "time"} <= set(m) for m in metrics if "loss" in m)
  cfg = json.loads((rdir / "config.json").read_text())
  assert cfg["options"]["dim"] == 16 and cfg["versions"]["tinygrad"]
  assert cfg["commands"] == [f"python cli.py train --out_dir={rdir} " + " ".join(TINY) + " --max_iters=6 --eval_interval=3 --warmup_iters=2 --learning_rate=1e-2"]
  assert (rdir / "tokenizer.tok").is_file()

@pytest.mark.slow
def test_grad_accumulation_equals_larger_batch(tmp_path):
  common = ["--max_iters=2", "--eval_interval=2", "--always_save_checkpoint=True", "--dropout=0.0", "--grad_clip=0"]
  res, big = run_train(tmp_path, *common, "--batch_size=4", name="big")
  assert res.exit_code == 0, res.output
  res, acc = run_train(tmp_path, *common, "--batch_size=2", "--gradient_accumulation_steps=2", name="acc")
  assert res.exit_code == 0, res.output
  wb, wa = load_checkpoint(big)[1], load_checkpoint(acc)[1]
  for n in wb: np.testing.assert_allclose(wa[n], wb[n], rtol=1e-4, atol=1e-6)

def test_nonfinite_loss_stops_with_message(tmp_path):
  res, rdir = run_train(tmp_path, "--max_iters=20", "--eval_interval=100", "--learning_rate=1e30", "--warmup_iters=0", "--grad_clip=0")
  # no checkpoint yet, grad_clip off: the advice says both (with clipping on, the divergence test shows it is not advised)
  assert res.exit_code == 1 and re.search(r"^Error: loss is (nan|inf) at step \d+: training stopped; no checkpoint was saved: "
                                          r"start again with a lower --learning_rate \(now 1e\+30; e.g. --learning_rate=1e\+29\) or --grad_clip=1.0$", res.output, re.M), res.output

@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(tmp_path):
  rdir = tmp_path / "sig"
  env = {**os.environ, "TINYSTORY_DATA": str(tmp_path / "cache")}
  p = subprocess.Popen([sys.executable, "cli.py", "train", f"--out_dir={rdir}", *TINY, "--max_iters=100000",
                        "--eval_interval=100000"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  logged = lambda: len(iter_lines((rdir / "train.log").read_text())) if (rdir / "train.log").exists() else 0
  deadline = time.time() + 300
  while logged() < 3:
    assert p.poll() is None and time.time() < deadline, p.stdout.read() if p.poll() is not None else "timed out"
    time.sleep(0.2)
  p.send_signal(signal.SIGINT)
  out, _ = p.communicate(timeout=120)
  assert p.returncode == 0, out
  m = re.search(r"interrupted: saved step (\d+) to ", out)
  assert m, out
  assert json.loads((rdir / "ckpt" / "ckpt.json").read_text())["iter_num"] == int(m.group(1))
  res, _ = run_train(tmp_path, "--init_from=resume", f"--max_iters={int(m.group(1)) + 1}", "--eval_interval=100000", name="sig")
  assert res.exit_code == 0, res.output
  assert [int(l.split()[0]) for l in iter_lines(res.output)] == [int(m.group(1)), int(m.group(1)) + 1]

def test_dtype_on_cpu_is_float32_like_llama2c(tmp_path):
  res, rdir = run_train(tmp_path, "--eval_only=True", "--dtype=bfloat16")
  assert res.exit_code == 0, res.output
  assert "note: --dtype=bfloat16 has no effect on the CPU (as in llama2.c): training in float32" in res.output
  assert re.search(r"^step 0: train loss \d+\.\d{4}, val loss \d+\.\d{4}$", res.output, re.M) and not iter_lines(res.output)
