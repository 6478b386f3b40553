"""Training's evals: `--val_data` (a separate held-out text as the val loss, kept on resume) and llama2.c's wandb
logging, with a stand-in wandb module that records its calls."""
import json, re, sys, types
import numpy as np
import pytest
from tinystory.checkpoint import model_weights
from tinystory.config import ModelArgs
from tinystory.model import Transformer
from tinystory.pretok import PretokDataset, load_meta
from tinystory.synthetic import synthetic_stories
from test_model import ref_loss
from test_train import data_cache, run_train  # noqa: F401 (data_cache: an autouse fixture)

@pytest.fixture
def valid_txt(tmp_path):
  """Stories the run does not train on (--data=synthetic:300 has stories 0..299), in TinyStories-valid.txt's layout."""
  path = tmp_path / "valid.txt"
  path.write_text("".join(s + "\n<|endoftext|>\n" for s in synthetic_stories(340)[300:]))
  return path

def test_val_data_is_the_val_loss(tmp_path, valid_txt):
  res, rdir = run_train(tmp_path, "--eval_only=True", f"--val_data={valid_txt}")
  assert res.exit_code == 0, res.output
  assert re.search(r"^step 0: train loss \d+\.\d{4}, val loss \d+\.\d{4}$", res.output, re.M)  # llama2.c's line
  cfg = json.loads((rdir / "config.json").read_text())
  val_dir = cfg["val_shard_dir"]
  assert cfg["options"]["val_data"] == str(valid_txt) and f"val loss on --val_data {valid_txt}: all of {val_dir}" in res.output
  assert [s["path"] for s in load_meta(val_dir)["sources"]] == [str(valid_txt)]
  assert load_meta(val_dir)["tokenizer_sha256"] == cfg["tokenizer"]["sha256"]  # prepared with the run's tokenizer
  # the val loss: the step-0 model's mean loss, in float64, over the first eval_iters batches of every val_data shard
  args = ModelArgs(**cfg["model_args"])
  weights = model_weights(Transformer(args, seed=cfg["options"]["seed"]))
  ds = PretokDataset(val_dir, "all", 4, 16)
  ref = np.mean([ref_loss(weights, args, *ds.next_batch()) for _ in range(2)])
  val_loss = [json.loads(l) for l in (rdir / "metrics.jsonl").read_text().splitlines()][0]["val_loss"]
  assert val_loss == pytest.approx(ref, rel=1e-5)
  assert len(load_meta(val_dir)["shards"]) == 2 and sum(ds.windows) > ds.windows[0]  # not only the val shard of it

@pytest.mark.slow
def test_resume_keeps_the_val_data(tmp_path, valid_txt):
  res, rdir = run_train(tmp_path, "--max_iters=2", "--eval_interval=2", "--always_save_checkpoint=True", f"--val_data={valid_txt}")
  assert res.exit_code == 0, res.output
  res, _ = run_train(tmp_path, "--init_from=resume", "--max_iters=4", "--eval_interval=2")
  assert res.exit_code == 0, res.output
  assert f"val loss on --val_data {valid_txt}" in res.output
  assert json.loads((rdir / "config.json").read_text())["options"]["val_data"] == str(valid_txt)

def test_val_data_errors(tmp_path):
  res, _ = run_train(tmp_path, "--eval_only=True", "--val_data=/no/such/valid.txt")
  assert res.exit_code == 1 and "Error: data source /no/such/valid.txt does not exist" in res.output, res.output

class FakeWandb(types.ModuleType):
  """Records wandb.init / log / finish as llama2.c calls them."""
  def __init__(self, fail: bool = False):
    super().__init__("wandb")
    self.calls, self.fail = [], fail
  def init(self, **kw): self.calls.append(("init", kw))
  def log(self, data, step=None):
    if self.fail: raise RuntimeError("no network")
    self.calls.append(("log", data, step))
  def finish(self): self.calls.append(("finish",))

def test_wandb_logs_llama2cs_series_at_each_eval(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", fake := FakeWandb())
  res, rdir = run_train(tmp_path, "--max_iters=8", "--eval_interval=4", "--wandb_log=True", "--wandb_project=stories")
  assert res.exit_code == 0, res.output
  (kind, init), *logs, finish = fake.calls
  assert kind == "init" and finish == ("finish",) and {c[0] for c in logs} == {"log"}
  assert init["project"] == "stories" and re.fullmatch(r"run\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d", init["name"])
  assert init["config"] == json.loads((rdir / "config.json").read_text())["options"] and init["config"]["dim"] == 16
  evals = [json.loads(l) for l in (rdir / "metrics.jsonl").read_text().splitlines() if "val_loss" in l]
  assert [(step, sorted(data)) for _, data, step in logs] == [(i, ["iter", "loss/train", "loss/val", "lr", "mfu", "tokens"]) for i in (0, 4, 8)]
  for (_, data, _), e in zip(logs, evals, strict=True):
    assert (data["iter"], data["tokens"], data["loss/train"], data["loss/val"], data["lr"]) == \
           (e["iter"], e["iter"] * 64, e["train_loss"], e["val_loss"], e["lr"])
  # mfu in percent: llama2.c's running value, -1 (so -100) until the 5th iteration of the invocation
  assert [d["mfu"] for _, d, _ in logs][:2] == [-100.0, -100.0] and logs[2][1]["mfu"] > 0
  assert f"| mfu {logs[2][1]['mfu']:.2f}% |" in next(l for l in res.output.splitlines() if l.startswith("7 | loss"))

def test_wandb_run_name_and_a_failing_log(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", fake := FakeWandb(fail=True))
  res, _ = run_train(tmp_path, "--eval_only=True", "--wandb_log=True", "--wandb_run_name=mine")
  assert res.exit_code == 0, res.output
  assert fake.calls[0][1]["name"] == "mine" and fake.calls[0][1]["project"] == "llamac"
  assert "logging to wandb failed: no network" in res.output.splitlines()  # as llama2.c: the run goes on

def test_wandb_missing_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
  res, rdir = run_train(tmp_path, "--eval_only=True", "--wandb_log=True")
  assert res.exit_code == 1 and not rdir.exists()
  assert res.output == "Error: --wandb_log=True needs the wandb package: pip install wandb (or pip install -e '.[wandb]')\n"
