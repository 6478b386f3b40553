"""Recipe files: `train RECIPE.toml [--option=value ...]`, TOML of train's option names, typed options on top; the
run's record names the recipe; the shipped recipes parse as documented."""
import json, subprocess, sys
from dataclasses import fields
from pathlib import Path
import pytest
from hypothesis import given, settings, strategies as st
from click.testing import CliRunner
from cli import cli
from tinystory import UserError
from tinystory.recipe import load_recipe
from tinystory.config import TrainConfig
from test_train import SEED_CMD, TINY, capture_train, iter_lines

ROOT = Path(__file__).resolve().parent.parent

@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch): monkeypatch.setenv("TINYSTORY_DATA", str(tmp_path / "cache"))

def recipe(tmp_path, text: str, name="r.toml") -> Path:
  (p := tmp_path / name).write_text(text, encoding="utf-8")
  return p

def test_recipe_values_then_typed_options_on_top(tmp_path, monkeypatch):
  got = capture_train(monkeypatch)
  r = recipe(tmp_path, 'learning_rate = 2e-3\nwarmup_iters = 100\nmin_lr = 1\ndecay_lr = false\ndata = "x.txt"\n')
  res = CliRunner().invoke(cli, ["train", str(r), "--warmup_iters=7", "--batch_size", "8"])
  assert res.exit_code == 0, res.output
  cfg = got["cfg"]
  # the recipe's values, an integer for a float option, the typed ones winning, the rest train's defaults
  assert (cfg.learning_rate, cfg.warmup_iters, cfg.min_lr, cfg.decay_lr, cfg.data, cfg.batch_size, cfg.beta2) == \
         (2e-3, 7, 1.0, False, "x.txt", 8, 0.99)
  assert isinstance(cfg.min_lr, float) and got["overrides"] == [("warmup_iters", 7), ("batch_size", 8)]
  assert got["argv"] == ["train", str(r), "--warmup_iters=7", "--batch_size", "8"]

def test_shipped_recipes():
  seed = load_recipe(ROOT / "recipes" / "seed.toml", fields(TrainConfig))["options"]
  # the seed's command verbatim, in its order, but for compile=False (torch.compile there, TinyJit here)
  typed = [a[2:].split("=") for a in SEED_CMD]
  assert list(seed) == [k for k, _ in typed if k != "compile"]
  assert all(str(seed[k]) == v or seed[k] == float(v) for k, v in typed if k != "compile")
  # and train with no options is that command: every default equals it, but the run's name and vocab_size=0 (the
  # tokenizer's size; the seed's tokenizer had 361)
  defaults = TrainConfig()
  assert all(getattr(defaults, k) == v for k, v in seed.items() if k not in ("out_dir", "vocab_size"))
  hour = load_recipe(ROOT / "recipes" / "cpu-hour.toml", fields(TrainConfig))["options"]
  # the seed's model, unchanged: no shape option in the recipe but the vocabulary's size, 361 as the seed's
  shape = {"dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "max_seq_len", "dropout", "ffn_bias", "unembedding"}
  assert not shape & set(hour) and hour["vocab_size"] == 361 and hour["tokenizer"] == "bpe"
  assert hour["lr_decay_iters"] == hour["max_iters"] and hour["max_iters"] % hour["eval_interval"] == 0

@pytest.mark.parametrize("text, msg", [
  ("learning_rat = 1e-3\n", "'learning_rat' is not an option of train (the keys are train's option names: python cli.py train --help)"),
  ("batch-size = 8\n", "'batch-size' is not an option of train (did you mean batch_size?)"),
  ('learning_rate = "fast"\n', "learning_rate is a string, expected a number"),
  ("batch_size = 8.0\n", "batch_size is a float, expected an integer"),
  ("batch_size = true\n", "batch_size is a boolean, expected an integer"),
  ("compile = 1\n", "compile is an integer, expected a boolean (true or false)"),
  ("data = [1, 2]\n", "data is an array, expected a string"),
  ("[train]\nbatch_size = 8\n", "'train' is not an option of train"),
  ("batch_size = \n", "is not valid TOML: "),
  ("learning_rate = " + "9" * 400 + "\n", "learning_rate = 99999999999999999999... is out of range"),
  ("overwrite = true\n", "overwrite deletes a run: it is not taken from a recipe; type --overwrite=True if you mean it"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, text, msg):
  r = recipe(tmp_path, text)
  p = subprocess.run([sys.executable, "cli.py", "train", str(r)], cwd=ROOT, capture_output=True, text=True)
  assert p.returncode == 1 and p.stderr.count("\n") == 1 and p.stderr.startswith(f"Error: recipe {r}") and msg in p.stderr, p.stderr

def test_a_recipe_saved_with_a_byte_order_mark_loads(tmp_path):
  (p := tmp_path / "bom.toml").write_bytes("\ufeffbatch_size = 8\n".encode("utf-8"))
  assert load_recipe(p, fields(TrainConfig))["options"] == {"batch_size": 8}

def test_unreadable_recipes(tmp_path):
  with pytest.raises(UserError, match=f"cannot read recipe {tmp_path / 'none.toml'}: No such file or directory"):
    load_recipe(tmp_path / "none.toml", fields(TrainConfig))
  with pytest.raises(UserError, match="is a directory, expected a .toml file"): load_recipe(tmp_path, fields(TrainConfig))
  (tmp_path / "bin.toml").write_bytes(b"a = '\xff'\n")
  with pytest.raises(UserError, match="is not UTF-8 text"): load_recipe(tmp_path / "bin.toml", fields(TrainConfig))

# lr_decay_iters fixed, as in test_train_step: the schedule must not depend on each invocation's max_iters
RECIPE = """eval_interval = 4
dropout = 0.1
warmup_iters = 2
learning_rate = 1e-2
lr_decay_iters = 7
always_save_checkpoint = true
max_iters = 7
"""

def train(tmp_path, *args, name):
  res = CliRunner().invoke(cli, ["train", *map(str, args), f"--out_dir={tmp_path / name}", *TINY])
  assert res.exit_code == 0, res.output
  return res, tmp_path / name

def losses(rdir) -> list[tuple[int, float]]:
  return [(m["iter"], m["loss"]) for m in map(json.loads, (rdir / "metrics.jsonl").read_text().splitlines()) if "loss" in m]

@pytest.mark.slow
def test_a_recipe_run_is_recorded_and_resumes_bit_exact(tmp_path):
  r = recipe(tmp_path, RECIPE)
  res, full = train(tmp_path, r, name="full")
  log = (full / "train.log").read_text()
  assert log.splitlines()[0] == f"Overriding config with {r} (7 options: eval_interval = 4, dropout = 0.1, warmup_iters = 2, " \
         "learning_rate = 0.01, lr_decay_iters = 7, always_save_checkpoint = True, max_iters = 7)"
  assert log.splitlines()[1] == f"Overriding: out_dir = {full}"
  cfg = json.loads((full / "config.json").read_text())
  assert cfg["recipe"]["path"] == str(r) and cfg["recipe"]["options"]["learning_rate"] == 0.01 and len(cfg["recipe"]["sha256"]) == 64
  assert cfg["options"]["learning_rate"] == 0.01 and cfg["commands"][0].startswith(f"python cli.py train {r} --out_dir=")
  # cut at 4 (the recipe with a typed --max_iters), resumed without it: the run's own options, bit-exact
  train(tmp_path, r, "--max_iters=4", name="cut")
  res, cut = train(tmp_path, "--init_from=resume", "--max_iters=7", name="cut")
  assert "changed on resume: max_iters = 7 (was 4)" in res.output and [int(l.split()[0]) for l in iter_lines(res.output)] == [4, 5, 6, 7]
  got = losses(cut)
  assert got[:5] + got[6:] == losses(full) and got[4] == got[5]  # iteration 4 ran in both invocations
  # resumed with the recipe given again: nothing changes, nothing is refused
  res, _ = train(tmp_path, r, "--init_from=resume", "--max_iters=8", name="cut")
  assert "changed on resume: max_iters = 8 (was 7)" in res.output and res.output.count("changed on resume") == 1

def test_export_log_names_the_recipe(tmp_path):
  r = recipe(tmp_path, 'learning_rate = 5e-3\nmax_iters = 2\neval_interval = 2\n')
  _, rdir = train(tmp_path, r, name="rec")
  res = CliRunner().invoke(cli, ["export-log", str(rdir), "--no-sample"] if (rdir / "sample.txt").exists() else
                           ["export-log", str(rdir), "--max_new_tokens=4"])
  assert res.exit_code == 0, res.output
  record = next(rdir.glob("train-*.sh")).read_text()
  assert f"python cli.py train \\\n  {r} \\\n  --out_dir=" in record  # the command as typed, the recipe first
  assert f"Overriding config with {r} (3 options: learning_rate = 0.005, max_iters = 2, eval_interval = 2)" in record
  assert any(l.startswith("recipe ") and f"{r} sha256 " in l and "learning_rate=0.005, max_iters=2, eval_interval=2" in l
             for l in record.splitlines())

@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=80), st.text(max_size=80),
                 st.lists(st.tuples(st.sampled_from([f.name for f in fields(TrainConfig)] + ["x", "a.b"]),
                                    st.sampled_from(["1", "1.5", "true", '"s"', "[1]", "{a=1}", "1979-05-27", "nan", "-0"])),
                          max_size=6).map(lambda kv: "".join(f"{k} = {v}\n" for k, v in kv))))
def test_any_recipe_file_loads_or_is_a_one_line_error(tmp_path_factory, content):
  p = tmp_path_factory.mktemp("r") / "r.toml"
  p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
  try: r = load_recipe(p, fields(TrainConfig))
  except UserError as e: assert "\n" not in str(e) and str(e).startswith(f"recipe {p}") or str(e).startswith(f"cannot read recipe {p}")
  else:
    kinds = {f.name: type(f.default) for f in fields(TrainConfig)}
    assert all(type(v) is kinds[k] for k, v in r["options"].items())
