"""The smaller failures of a hostile-but-fair probe (issue 26, item 13): each mistake is one line naming the file and
the field; a damaged optimizer state blocks only resume; a path spelled otherwise is the same data on resume; the
`Error: ...` line ends train.log too; corrupt shards are refused before a run dir exists."""
import errno, json, shutil
from pathlib import Path
import numpy as np
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory import UserError, write_error
from tinystory.checkpoint import load_checkpoint
from test_train import TINY, run_train

@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch): monkeypatch.setenv("TINYSTORY_DATA", str(tmp_path / "cache"))

def invoke(*args):
  return CliRunner().invoke(cli, [str(a) for a in args])

def one_error_line(res) -> str:
  """The one `Error: ...` line of a command that exited 1 (no traceback, no exception but the exit)."""
  lines = [l for l in res.output.splitlines() if l.startswith("Error: ")]
  assert res.exit_code == 1 and len(lines) == 1 and isinstance(res.exception, SystemExit) and "Traceback" not in res.output, \
    (res.output, res.exception)
  return lines[0]

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished tiny run with a checkpoint (copied by each test that damages it)."""
  tmp = tmp_path_factory.mktemp("trained")
  mp = pytest.MonkeyPatch()
  mp.setenv("TINYSTORY_DATA", str(tmp / "cache"))
  res, rdir = run_train(tmp, "--max_iters=2", "--eval_interval=2", "--always_save_checkpoint=True")
  mp.undo()
  assert res.exit_code == 0, res.output
  return rdir

@pytest.fixture
def run(trained, tmp_path) -> Path:
  shutil.copytree(trained, tmp_path / "run", ignore=shutil.ignore_patterns("train.lock"))
  return tmp_path / "run"

def sample(checkpoint, *args): return invoke("sample", f"--checkpoint={checkpoint}", "--max_new_tokens=4", "--compile=False", *args)

# *** 1. safetensors errors name the file ***

@pytest.mark.slow
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_a_corrupt_safetensors_file_is_named(run, name):
  (run / "ckpt" / name).write_bytes(b"garbage")
  with pytest.raises(UserError, match=f"^checkpoint {run / 'ckpt' / name} is unreadable or corrupt: "):
    load_checkpoint(run, optimizer=True)

def test_a_corrupt_hf_safetensors_file_is_named(run, tmp_path):
  assert invoke("export-model", run, "--format=hf", f"--out={tmp_path / 'hf'}").exit_code == 0
  (tmp_path / "hf" / "model.safetensors").write_bytes(b"garbage")
  assert one_error_line(sample(tmp_path / "hf")).startswith(f"Error: cannot read {tmp_path / 'hf' / 'model.safetensors'}: ")

# *** 2. a corrupt optimizer.safetensors blocks resume only ***

@pytest.mark.slow
def test_a_corrupt_optimizer_state_blocks_only_resume(run, tmp_path):
  (run / "ckpt" / "optimizer.safetensors").write_bytes(b"\0" * 4)
  assert (res := sample(run)).exit_code == 0, res.output
  assert (res := invoke("eval", f"--checkpoint={run}", "--data=synthetic:20", "--max_windows=2", "--compile=False")).exit_code == 0, res.output
  assert (res := invoke("export-model", run, "--format=hf", f"--out={tmp_path / 'hf'}")).exit_code == 0, res.output
  res = invoke("train", f"--out_dir={run}", "--init_from=resume", "--max_iters=3")
  assert one_error_line(res).startswith(f"Error: checkpoint {run / 'ckpt' / 'optimizer.safetensors'} is unreadable or corrupt")

# *** 3, 4. a field of the wrong type: one line naming the file and the field, never Python's TypeError ***

BAD_VALUES = [None, "32", [], {}, True, -1, 1.5]
NUMERIC = ["dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "hidden_dim", "multiple_of", "norm_eps",
           "max_seq_len", "dropout"]

def test_model_args_of_the_wrong_type_name_ckpt_json_and_the_field(run):
  ck = run / "ckpt" / "ckpt.json"
  good = json.loads(ck.read_text())
  for field in NUMERIC + ["ffn_bias", "unembedding"]:
    for bad in BAD_VALUES:
      if (field, bad) in (("norm_eps", 1.5), ("n_kv_heads", None), ("hidden_dim", None), ("ffn_bias", True)): continue  # valid
      ck.write_text(json.dumps({**good, "model_args": {**good["model_args"], field: bad}}))
      line = one_error_line(sample(run))
      assert line.startswith(f"Error: checkpoint {ck}: model_args {field}=") and "not supported between" not in line, (field, bad, line)
  ck.write_text(json.dumps({**good, "model_args": {**good["model_args"], "width": 3}}))
  assert one_error_line(sample(run)).startswith(f"Error: checkpoint {ck}: model_args has an unknown field 'width'")

HF_INTS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
           "intermediate_size", "max_position_embeddings"]

def test_hf_config_fields_of_the_wrong_type_name_config_json_and_the_field(run, tmp_path):
  hf = tmp_path / "hf"
  assert invoke("export-model", run, "--format=hf", f"--out={hf}").exit_code == 0
  good = json.loads((hf / "config.json").read_text())
  for field in HF_INTS + ["rms_norm_eps", "rope_parameters", "mlp_bias"]:
    for bad in BAD_VALUES:
      if field == "rms_norm_eps" and bad == 1.5 or field in ("rope_parameters", "mlp_bias") and (bad is None or bad == {} or bad is True) \
         or field == "num_key_value_heads" and bad is None: continue  # valid (or the default)
      (hf / "config.json").write_text(json.dumps({**good, field: bad}))
      line = one_error_line(sample(hf))
      assert line.startswith(f"Error: {hf / 'config.json'}: {field} is "), (field, bad, line)
  (hf / "config.json").write_text(json.dumps({k: v for k, v in good.items() if k != "num_hidden_layers"}))
  assert one_error_line(sample(hf)) == f"Error: {hf / 'config.json'} lacks 'num_hidden_layers'"

# *** 5. a tokenizer that meta.json names, gone ***

def prepared(tmp_path) -> Path:
  tok = tmp_path / "char.tok"
  assert invoke("tokenizer", "fit", "--data=synthetic:300", "--kind=char", f"--out={tok}").exit_code == 0
  assert invoke("data", "prepare", "--data=synthetic:300", f"--tokenizer={tok}", f"--out={tmp_path / 'shards'}").exit_code == 0
  return tmp_path / "shards"

def test_a_missing_tokenizer_named_by_meta_json_says_so(tmp_path):
  shards = prepared(tmp_path)
  (tmp_path / "char.tok").unlink()
  res = invoke("train", f"--out_dir={tmp_path / 'run'}", *TINY, f"--data={shards}")
  assert one_error_line(res) == (f"Error: tokenizer {tmp_path / 'char.tok'} (named by {shards / 'meta.json'} as the one the "
                                 "shards were made with) does not exist: pass --tokenizer")
  assert not (tmp_path / "run").exists()

# *** 6. --data=dir/ is --data=dir on resume ***

@pytest.mark.slow
def test_a_trailing_slash_is_the_same_data_on_resume(tmp_path):
  shards = prepared(tmp_path)
  res, rdir = run_train(tmp_path, f"--data={shards}", "--max_iters=2", "--eval_interval=2", "--always_save_checkpoint=True")
  assert res.exit_code == 0, res.output
  for spelling in (f"{shards}/", f"{shards}//", f"{tmp_path}/./shards"):
    res = invoke("train", f"--out_dir={rdir}", "--init_from=resume", f"--data={spelling}", "--max_iters=2")
    assert res.exit_code == 0 and "changed on resume: data" not in res.output, res.output
    assert json.loads((rdir / "config.json").read_text())["options"]["data"] == str(shards)  # the run's spelling kept
  res = invoke("train", f"--out_dir={rdir}", "--init_from=resume", "--data=synthetic", "--max_iters=2")
  assert "Error: --init_from=resume cannot change --data=synthetic" in one_error_line(res)

# *** 7. the Error line ends train.log ***

def test_the_error_line_of_a_diverged_run_ends_train_log_and_export_log_reads_it(tmp_path):
  res, rdir = run_train(tmp_path, "--learning_rate=1e3", "--warmup_iters=0", "--eval_interval=1",
                        "--always_save_checkpoint=True", "--max_iters=40")
  line = one_error_line(res)
  assert "training stopped" in line and (rdir / "train.log").read_text().splitlines()[-1] == line
  res = invoke("export-log", rdir, "--max_new_tokens=4", "--compile=False")
  assert res.exit_code == 0, res.output
  assert line in (rdir / f"train-{rdir.name}.sh").read_text()

def test_a_train_log_that_cannot_be_written_still_shows_its_error_line(tmp_path, monkeypatch):
  from tinystory import log
  real, full = log._FlushingFileHandler.emit, [False]
  def emit(self, record):  # the disk fills up at iteration 5's line
    full[0] = full[0] or record.getMessage().startswith("5 | loss")
    if full[0]: raise write_error(self.baseFilename, OSError(errno.ENOSPC, "No space left on device"))
    return real(self, record)
  monkeypatch.setattr(log._FlushingFileHandler, "emit", emit)
  res, rdir = run_train(tmp_path, "--max_iters=40", "--eval_interval=100")
  assert one_error_line(res) == f"Error: cannot write {rdir / 'train.log'}: No space left on device"
  assert (rdir / "train.log").read_text().splitlines()[-1].startswith("4 | loss")

# *** 8. token ids past the vocabulary: refused before the run dir is made ***

def test_shard_ids_past_the_vocabulary_leave_no_run_dir(tmp_path):
  shards = prepared(tmp_path)
  ids = np.fromfile(shards / "shard_0001.bin", np.uint16)
  ids[len(ids) // 2] = 60000
  ids.tofile(shards / "shard_0001.bin")
  res = invoke("train", f"--out_dir={tmp_path / 'run'}", *TINY, f"--data={shards}")
  vocab = json.loads((shards / "meta.json").read_text())["vocab_size"]
  assert one_error_line(res) == (f"Error: {shards / 'shard_0001.bin'} holds token id 60000, but vocab_size is {vocab} "
                                 f"({shards / 'meta.json'}): the shards are corrupt; run data prepare again")
  assert not (tmp_path / "run").exists()
