"""The training step itself against independent float64 references: the gradients TrainSteps accumulates (under
TRAINING, through the weight-gradient path, compiled and replayed or eager) against finite differences of the numpy
llama2.c model; its clip + AdamW update against numpy float64 AdamW with llama2.c's decay groups; Ctrl-C resume
exactness; and a short run that learns. tests/README.md lists the code mutations these tests must catch."""
import json, math, os, signal
from pathlib import Path
import numpy as np
import pytest
from tinygrad import Tensor
import cli as cli_module
from tinystory.config import ModelArgs, TrainConfig
from tinystory.model import Transformer
from tinystory.checkpoint import load_checkpoint
from tinystory.train import TrainSteps
from test_model import random_tokens, ref_loss
from test_train import TINY, iter_lines, numpy_adamw, run_train

B, T = 2, 6

def batch(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Token ids and targets as TrainSteps takes them, (B, T) int64."""
  return random_tokens(vocab, B, T, seed=seed).astype(np.int64), random_tokens(vocab, B, T, seed=seed + 1).astype(np.int64)

def logical(t: Tensor, shape: tuple[int, ...]) -> np.ndarray:
  """The logical part of a padded parameter-shaped tensor, and a check that its padding is exactly zero."""
  a = t.numpy()
  part = a[tuple(slice(0, d) for d in shape)]
  assert np.count_nonzero(a) == np.count_nonzero(part), "nonzero values in the padding"
  return part

def perturbed_model(args: ModelArgs, pad_to: int, grad_chunk: int = 0) -> tuple[Transformer, dict[str, np.ndarray]]:
  """A model whose norm gains and biases are not 1 and 0 and whose weights are large enough that every path of the
  gradient matters (as test_model's finite-difference test), and its float64 state dict."""
  m = Transformer(args, seed=3, pad_to=pad_to, grad_chunk=grad_chunk)
  rng = np.random.default_rng(4)
  sd = {n: v.numpy().astype(np.float64) for n, v in m.state_dict().items()}
  sd = {n: v + rng.normal(0, 0.3, v.shape) if v.ndim == 1 else v * 10 for n, v in sd.items()}
  m.load_state_dict(sd)
  return m, {n: v.astype(np.float32).astype(np.float64) for n, v in sd.items()}  # exactly the model's float32 values

def numeric_derivative(sd, args, tokens, targets, name: str, direction: np.ndarray, h: float = 1e-6) -> float:
  """d loss / d t of ref_loss at sd[name] + t * direction, by central differences in float64."""
  plus, minus = {**sd, name: sd[name] + h * direction}, {**sd, name: sd[name] - h * direction}
  return (ref_loss(plus, args, tokens, targets) - ref_loss(minus, args, tokens, targets)) / (2 * h)

def assert_gradient_matches_reference(g: np.ndarray, sd, args, tokens, targets, name: str, rng) -> None:
  """g = d loss / d sd[name]: along two random directions (every entry counts) and at its two largest entries."""
  directions = [rng.standard_normal(g.shape) for _ in range(2)]
  for idx in np.argsort(-np.abs(g), axis=None)[:2]:
    directions.append(np.zeros(g.shape))
    directions[-1].flat[idx] = 1.0
  for d in directions:
    numeric, analytic = numeric_derivative(sd, args, tokens, targets, name, d), float((g * d).sum())
    # float32 gradients: ~1e-6 relative per entry; the bound scales with |g| |d|, the size of what is summed
    assert analytic == pytest.approx(numeric, abs=2e-4 * np.linalg.norm(g) * np.linalg.norm(d)), name

# (unembedding, vocab_size, pad_to, n_kv_heads, ffn_bias, compile, n_layers, weight_grad_chunk): pinv in both
# orientations (vocab >= dim: E^T E; vocab < dim: E E^T), padded (vocab and hidden rounded up to 16) and unpadded,
# grouped-query attention, with and without the FFN bias, the compiled step (TinyJit, its capture, then the kernels
# replayed on every core) and eager; weight gradients summed over all B * T = 12 positions at once and in chunks of 4
# or 3 positions (device.choose_for's chunks, of 256 positions in the seed's batches)
STEP_VARIANTS = [("pinv", 11, 16, 1, True, True, 2, 0), ("pinv", 5, 1, 2, False, False, 1, 0), ("tied", 11, 16, 2, True, False, 1, 0),
                 ("untied", 11, 1, 1, True, True, 1, 0), ("pinv_scaled", 11, 16, 1, True, False, 1, 0),
                 ("pinv", 11, 16, 1, True, True, 2, 4), ("untied", 11, 1, 2, False, False, 1, 3)]

@pytest.mark.slow
@pytest.mark.parametrize("unembedding,vocab,pad_to,n_kv_heads,ffn_bias,compile,n_layers,chunk", STEP_VARIANTS)
def test_train_step_gradients_match_float64_finite_differences(unembedding, vocab, pad_to, n_kv_heads, ffn_bias, compile, n_layers,
                                                               chunk):
  args = ModelArgs(dim=8, n_layers=n_layers, n_heads=2, n_kv_heads=n_kv_heads, vocab_size=vocab, multiple_of=1, max_seq_len=8,
                   dropout=0.0, ffn_bias=ffn_bias, unembedding=unembedding)
  model, sd = perturbed_model(args, pad_to, chunk)
  tokens, targets = batch(vocab, seed=5)
  # three micro-steps on the same batch accumulate g/3 three times: the mean gradient, g (the second call captures
  # the JIT, the third replays it: every variant of the step contributes)
  steps = TrainSteps(model, TrainConfig(batch_size=B, max_seq_len=T, gradient_accumulation_steps=3, compile=compile))
  losses = [steps.micro_step(tokens, targets).item() for _ in range(3)]
  assert losses[0] == losses[1] == losses[2] == pytest.approx(ref_loss(sd, args, tokens, targets), rel=1e-5)
  rng = np.random.default_rng(7)
  for (name, shape), acc in zip(model.shapes.items(), steps.grad_acc, strict=True):
    g = logical(acc, shape).astype(np.float64)
    assert np.abs(g).max() > 0, name
    assert_gradient_matches_reference(g, sd, args, tokens, targets, name, rng)

def test_train_step_update_matches_numpy_float64_adamw():
  """Three iterations of three accumulated micro-steps each, gradient clipping active, llama2.c's decay groups: the
  accumulated gradient is the mean of the micro-batches' gradients (each from the model's plain, non-training
  backward), and the update is torch's clip_grad_norm_ + AdamW computed in float64 from the state before it."""
  args = ModelArgs(dim=16, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=37, multiple_of=1, max_seq_len=8, dropout=0.0,
                   unembedding="tied")  # the pinv unembedding's gradient is checked above; here a smaller graph
  model = Transformer(args, seed=0)  # pad_to=16: vocab 37 -> 48, hidden 42 -> 48
  cfg = TrainConfig(batch_size=B, max_seq_len=T, gradient_accumulation_steps=3, grad_clip=0.05, weight_decay=0.5,
                    beta1=0.8, beta2=0.95)
  steps, shapes = TrainSteps(model, cfg), list(model.shapes.values())
  decays = [cfg.weight_decay if len(s) == 2 else 0.0 for s in shapes]  # weights decay; norm gains and biases do not
  assert sorted(set(decays)) == [0.0, 0.5]
  state = lambda ts: [logical(t, s).astype(np.float64) for t, s in zip(ts, shapes, strict=True)]
  rng = np.random.default_rng(1)
  for it in range(1, 4):
    batches = [batch(37, seed=int(s)) for s in rng.integers(0, 1 << 30, 3)]
    # equal micro-batches: the mean of their mean losses is the mean loss of all of them at once
    loss = model(Tensor(np.concatenate([x for x, _ in batches]))).sparse_categorical_crossentropy(Tensor(np.concatenate([y for _, y in batches])))
    expected = [logical(g, s).astype(np.float64) for g, s in zip(loss.gradient(*model.parameters()), shapes)]
    p, m, v = state(model.parameters()), state(steps.opt.exp_avg), state(steps.opt.exp_avg_sq)
    for x, y in batches: steps.micro_step(x, y)
    grads = state(steps.grad_acc)
    for g, e, name in zip(grads, expected, model.shapes):
      np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * np.abs(e).max(), err_msg=name)
    assert math.sqrt(sum((g ** 2).sum() for g in grads)) > 4 * cfg.grad_clip  # clipping is active
    lr = 1e-2 * it
    steps.update(lr)
    ref = numpy_adamw(p, grads, m, v, lr, it, decays, cfg.beta1, cfg.beta2, cfg.grad_clip)
    for (rp, rm, rv), tp, tm, tv, name in zip(ref, model.parameters(), steps.opt.exp_avg, steps.opt.exp_avg_sq, model.shapes):
      s = model.shapes[name]
      np.testing.assert_allclose(logical(tm, s), rm, rtol=1e-5, atol=1e-9, err_msg=name)
      np.testing.assert_allclose(logical(tv, s), rv, rtol=1e-5, atol=1e-12, err_msg=name)
      np.testing.assert_allclose(logical(tp, s), rp, rtol=1e-6, atol=1e-7, err_msg=name)
    assert all(np.count_nonzero(g.numpy()) == 0 for g in steps.grad_acc)  # the update starts the next accumulation

# *** Ctrl-C ***

def interrupt_after_update(monkeypatch, at: int, signals: int) -> None:
  """Ctrl-C (`signals` SIGINTs) while the optimizer update of iteration `at` (0-based) runs, as a user's would arrive."""
  real, calls = TrainSteps.update, []
  def update(self, lr):
    real(self, lr)
    calls.append(lr)
    if len(calls) == at + 1:
      for _ in range(signals): os.kill(os.getpid(), signal.SIGINT)
  monkeypatch.setattr(TrainSteps, "update", update)

def exact_losses(rdir) -> list[tuple[int, float]]:
  return [(m["iter"], m["loss"]) for m in map(json.loads, (rdir / "metrics.jsonl").read_text().splitlines()) if "loss" in m]

# lr_decay_iters fixed: the schedule must not depend on each invocation's max_iters
RESUME = ["--eval_interval=4", "--dropout=0.1", "--warmup_iters=2", "--learning_rate=1e-2", "--lr_decay_iters=7",
          "--always_save_checkpoint=True"]

@pytest.mark.slow
def test_resume_from_ctrl_c_and_eval_checkpoints_is_exact(tmp_path, monkeypatch):
  """A run stopped by Ctrl-C after iteration 2 (its checkpoint is written after an update, mid-way between evals),
  resumed to iteration 5 (the eval checkpoint at step 4 is written before iteration 4 runs), then resumed again from
  that one to 7, logs bit-identical float losses to an uninterrupted run: dropout masks, data position, AdamW moments
  and step all restored at both save points."""
  res, full = run_train(tmp_path, "--max_iters=7", *RESUME, name="full")
  assert res.exit_code == 0, res.output
  with monkeypatch.context() as mp:
    interrupt_after_update(mp, at=2, signals=1)
    res, cut = run_train(tmp_path, "--max_iters=7", *RESUME, name="cut")
  assert res.exit_code == 0, res.output
  assert f"interrupted: saved step 3 to {cut / 'ckpt'}; continue with --init_from=resume --out_dir={cut}" in res.output
  assert load_checkpoint(cut)[0]["iter_num"] == 3 and [int(l.split()[0]) for l in iter_lines(res.output)] == [0, 1, 2]
  res, _ = run_train(tmp_path, "--max_iters=5", "--init_from=resume", *RESUME, name="cut")
  assert res.exit_code == 0 and [int(l.split()[0]) for l in iter_lines(res.output)] == [3, 4, 5], res.output
  assert load_checkpoint(cut)[0]["iter_num"] == 4  # the eval at step 4, before iteration 4
  res, _ = run_train(tmp_path, "--max_iters=7", "--init_from=resume", *RESUME, name="cut")
  assert res.exit_code == 0 and [int(l.split()[0]) for l in iter_lines(res.output)] == [4, 5, 6, 7], res.output
  # every invocation's float losses (iterations 4 and 5 twice) equal the uninterrupted run's
  losses = exact_losses(cut)
  assert [i for i, _ in losses] == [0, 1, 2, 3, 4, 5, 4, 5, 6, 7] and losses[:6] + losses[8:] == exact_losses(full)
  assert losses[4:6] == losses[6:8]
  evals = lambda p: [l for l in (p / "train.log").read_text().splitlines() if l.startswith("step 4:")]
  assert evals(cut)[0] == evals(full)[0] and len(evals(full)) == 1

def test_second_ctrl_c_aborts_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
  rdir = tmp_path / "abort"
  interrupt_after_update(monkeypatch, at=3, signals=2)
  monkeypatch.setenv("TINYSTORY_DATA", str(tmp_path / "cache"))
  monkeypatch.setattr("sys.argv", ["cli.py", "train", f"--out_dir={rdir}", *TINY, "--max_iters=10", "--eval_interval=2",
                                   "--always_save_checkpoint=True"])
  with pytest.raises(SystemExit) as e: cli_module.main()
  assert e.value.code == "Aborted."
  out = capsys.readouterr().out
  assert [int(l.split()[0]) for l in iter_lines(out)] == [0, 1, 2]  # aborted in iteration 3, before its line
  assert "interrupted" not in out and out.count("saving checkpoint") == 1
  meta, _, _ = load_checkpoint(rdir)  # the step-2 eval checkpoint is untouched and complete
  assert meta["iter_num"] == 2 and not (rdir / "ckpt.tmp").exists()

# *** learning ***

def test_a_short_run_learns(tmp_path):
  res, rdir = run_train(tmp_path, "--max_iters=400", "--eval_interval=400", "--eval_iters=8", "--warmup_iters=10",
                        "--learning_rate=3e-2", "--unembedding=tied", "--dropout=0.0")
  assert res.exit_code == 0, res.output
  evals = [m for m in map(json.loads, (rdir / "metrics.jsonl").read_text().splitlines()) if "val_loss" in m]
  vocab = json.loads((rdir / "config.json").read_text())["tokenizer"]["vocab_size"]
  assert [m["iter"] for m in evals] == [0, 400]
  assert evals[0]["val_loss"] == pytest.approx(math.log(vocab), rel=0.05)  # tied, small init: a uniform guess
  # the entropy of the training tokens' frequencies: the best loss without context. Below it, the model uses context
  counts = np.bincount(np.concatenate([np.fromfile(f, np.uint16) for f in sorted(Path(json.loads(
    (rdir / "config.json").read_text())["shard_dir"]).glob("shard_*.bin"))[1:]]))
  freq = counts[counts > 0] / counts.sum()
  unigram = float(-(freq * np.log(freq)).sum())
  assert evals[1]["val_loss"] < unigram - 0.2 and evals[1]["val_loss"] < 0.75 * evals[0]["val_loss"], (evals, unigram)
