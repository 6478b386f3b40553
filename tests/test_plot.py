"""plot with several runs: the smoothing has no lag, the x axes convert iterations as documented, the legend names the
options that differ, and bad runs give one line. The runs here are written by hand (config.json, train.log,
metrics.jsonl as train writes them), so no model is trained; test_export plots a real run."""
import json
from pathlib import Path
import pytest
from click.testing import CliRunner
from cli import cli
import numpy as np
from tinystory.plot import run_curves, run_labels, smooth, smooth_centred

OPTIONS = {"out_dir": "a", "batch_size": 4, "max_seq_len": 16, "gradient_accumulation_steps": 2, "unembedding": "pinv",
           "seed": 1, "data": "/x/shards-char", "learning_rate": 1e-3, "log_interval": 1}

def fake_run(root: Path, name: str, iters: int = 20, resumed_at: int | None = None, model_args: dict | None = None,
             **options) -> Path:
  """A run dir as train leaves it: iterations 0..iters-1 with dt = 1 + iter/10, evals every 5 iterations; with
  `resumed_at`, iterations from there on are written twice, the second time with different losses (a resume)."""
  rdir = root / name
  rdir.mkdir()
  (rdir / "train.log").write_text("")
  (rdir / "config.json").write_text(json.dumps({"options": {**OPTIONS, "out_dir": name, **options}, "model_args": model_args or {},
                                                "data_meta": {}, "tokenizer": {}, "versions": {}, "commands": ["x"]}))
  rec = lambda i, loss: {"iter": i, "loss": loss, "dt": 1 + i / 10, "tokens": (i + 1) * 128, "time": i}
  recs = [rec(i, 5 - i / 10) for i in range(iters)]
  if resumed_at is not None: recs += [rec(i, 4 - i / 10) for i in range(resumed_at, iters)]
  recs += [{"iter": i, "val_loss": 6 - i / 10, "train_loss": 0} for i in range(0, iters + 1, 5)]
  (rdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
  return rdir

def test_centred_smoothing_keeps_a_line_to_its_last_point_where_a_trailing_mean_lags():
  line = [10 - 0.1 * i for i in range(400)]
  assert smooth_centred(line, 20) == pytest.approx(line, abs=1e-9)
  assert smooth(line, 41)[-1] - line[-1] == pytest.approx(2.0)  # the lag of the single-run plot's trailing mean
  rng = np.random.default_rng(0)
  noisy = np.array(line) + rng.normal(0, 0.5, 400)
  got = smooth_centred(noisy.tolist(), 20)
  for k in (0, 7, 200, 390, 399):  # against numpy's own fit of a line to the window around each point
    lo, hi = max(k - 20, 0), min(k + 21, 400)
    assert got[k] == pytest.approx(np.polyval(np.polyfit(np.arange(lo, hi), noisy[lo:hi], 1), k), abs=1e-9)
  assert got[200] == pytest.approx(noisy[180:221].mean())  # the centred moving average inside
  assert np.abs(np.array(got) - line).max() < 0.5 and smooth_centred([3.0], 5) == [3.0] and smooth_centred([], 5) == []

def test_x_axes(tmp_path):
  rdir = fake_run(tmp_path, "a", resumed_at=12)
  it, tok, sec, mins = (run_curves(rdir, x) for x in ("iter", "tokens", "seconds", "minutes"))
  assert it["x"] == list(range(20)) and it["val_x"] == [0, 5, 10, 15, 20]
  assert it["loss"][11:13] == [5 - 1.1, 4 - 1.2]  # the resume's records replace the first attempt's
  assert tok["x"] == [i * 4 * 16 * 2 for i in range(20)] and tok["val_x"][-1] == 20 * 128
  began = [sum(1 + j / 10 for j in range(i)) for i in range(21)]  # wall seconds when iteration i began
  assert sec["x"] == pytest.approx(began[:20]) and sec["val_x"] == pytest.approx([began[i] for i in (0, 5, 10, 15, 20)])
  assert mins["x"] == pytest.approx([b / 60 for b in began[:20]]) and mins["val_x"][-1] == pytest.approx(began[20] / 60)

def test_labels_name_the_options_that_differ(tmp_path):
  runs = [fake_run(tmp_path, "p1"), fake_run(tmp_path, "t1", unembedding="tied"),
          fake_run(tmp_path, "t2", unembedding="tied", seed=2, data="/y/shards-bpe361")]
  assert run_labels(runs) == ["p1 (data=shards-char, seed=1, unembedding=pinv)",
                              "t1 (data=shards-char, seed=1, unembedding=tied)",
                              "t2 (data=shards-bpe361, seed=2, unembedding=tied)"]
  assert run_labels(runs[:1]) == ["p1"]
  assert run_labels([runs[0], fake_run(tmp_path, "same")]) == ["p1", "same"]  # out_dir alone is no difference
  # vocab_size=0 (the tokenizer's size) and that size spelled out are the same model: compared as resolved
  spelled, implied = (fake_run(tmp_path, n, vocab_size=v, model_args={"vocab_size": 361}) for n, v in (("v361", 361), ("v0", 0)))
  assert run_labels([spelled, implied]) == ["v361", "v0"]
  assert run_labels([spelled, fake_run(tmp_path, "v91", vocab_size=0, model_args={"vocab_size": 91})]) == \
         ["v361 (vocab_size=361)", "v91 (vocab_size=91)"]

@pytest.mark.parametrize("x", ["iter", "tokens", "seconds", "minutes"])
def test_several_runs_make_one_png(tmp_path, monkeypatch, x):
  pytest.importorskip("matplotlib")
  monkeypatch.chdir(tmp_path)
  (tmp_path / "runs").mkdir()
  for name, u in (("p", "pinv"), ("t", "tied")): fake_run(tmp_path / "runs", name, unembedding=u)
  res = CliRunner().invoke(cli, ["plot", "p", "t", f"--x={x}"])
  assert res.exit_code == 0 and res.output == f"wrote {tmp_path / 'runs' / 'compare.png'}\n", res.output
  assert (tmp_path / "runs" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

def test_bad_runs_are_one_line(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "runs").mkdir()
  fake_run(tmp_path / "runs", "p")
  for args, msg in ((["p", "nope"], "run dir nope does not exist (give a directory made by `python cli.py train`)"),
                    (["p", "runs/p"], "plot: a run is given twice"),
                    (["p", "--x=time"], "Invalid value for '--x': 'time' is not one of 'iter', 'tokens', 'seconds', 'minutes'."),
                    ([], "Missing argument 'RUNS...'.")):
    res = CliRunner().invoke(cli, ["plot", *args])
    assert res.exit_code != 0 and res.output.strip().splitlines()[-1] == f"Error: {msg}", res.output
