"""Faults injected into real runs: kill -9 during checkpoint saves, then resume; a full disk (RLIMIT_FSIZE) in a child
process; two trainers on one run dir; unwritable run dirs; a failed data prepare over a good shard dir; a diverging run
with always_save_checkpoint; resume restoring the run's options. docs/training.md's "What survives what" is this."""
import json, os, random, re, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory import UserError
from tinystory.checkpoint import find_checkpoint, load_checkpoint, read_metrics
from tinystory.pretok import load_meta, prepare
from tinystory.tokenizer import fit_tokenizer
from tinystory.optim import get_lr
from tinystory.config import TrainConfig
from test_train import ROOT, TINY, iter_lines, run_train

@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch): monkeypatch.setenv("TINYSTORY_DATA", str(tmp_path / "cache"))

def env(tmp_path) -> dict: return {**os.environ, "PYTHONPATH": str(ROOT), "TINYSTORY_DATA": str(tmp_path / "cache")}

def leftovers(rdir: Path) -> list[str]:
  """Temporary files and dirs a write may leave: none may stay."""
  return sorted(str(p.relative_to(rdir)) for p in rdir.rglob("*") if p.name.endswith((".tmp", ".prev")) or "-tmp." in p.name)

def one_error_line(text: str) -> str:
  lines = [l for l in text.splitlines() if l.startswith("Error: ") or "Traceback" in l]
  assert len(lines) == 1 and "Traceback" not in text, text
  return lines[0]

def wait_for(cond, proc, what: str, timeout: float = 600) -> None:
  deadline = time.time() + timeout
  while not cond():
    assert proc.poll() is None, f"{what}: the trainer exited early: {proc.communicate()[0]}"
    assert time.time() < deadline, f"timed out waiting for {what}"
    time.sleep(0.1)

# *** kill -9 during checkpoint saves ***

# a trainer that SIGKILLs itself at file operation `op` of its save number `save`: a write cut off after a random
# prefix of its bytes, an fsync, a rename, the removal of ckpt.prev
KILLER = """
import os, random, shutil, signal, sys
import tinystory.checkpoint as ck
save_no, op_no, seed = map(int, sys.argv[1:4])
rng, count = random.Random(seed), {"save": 0, "op": 0, "in": False}
def point():
  count["op"] += 1
  return count["in"] and count["save"] == save_no and count["op"] == op_no
def die(): os.kill(os.getpid(), signal.SIGKILL)
def hook(real, cut=False):
  def wrapper(*a, **kw):
    if point():
      if cut: real(a[0], a[1][:rng.randrange(len(a[1]) + 1)])
      die()
    return real(*a, **kw)
  return wrapper
real_save = ck.save_checkpoint
def save(*a, **kw):
  count.update(save=count["save"] + 1, op=0, **{"in": True})
  try: return real_save(*a, **kw)
  finally: count["in"] = False
ck.write_file, ck.fsync_dir, os.replace = hook(ck.write_file, cut=True), hook(ck.fsync_dir), hook(os.replace)
real_rmtree = shutil.rmtree
def rmtree(path, *a, **kw):
  if str(path).endswith(".prev") and os.path.isdir(path) and point():  # half removed
    os.unlink(sorted(os.scandir(path), key=lambda e: e.name)[0].path)
    die()
  return real_rmtree(path, *a, **kw)
ck.shutil.rmtree = rmtree
ck.save_checkpoint = save
import tinystory.rundir
tinystory.rundir.save_checkpoint = save
sys.argv = ["cli.py", "train", *sys.argv[4:]]
import cli
cli.main()
"""

@pytest.mark.slow
def test_kill_9_during_saves_then_resume(tmp_path):
  """Trainers killed (SIGKILL) at random points of a checkpoint save, each followed by a resume that must load the
  checkpoint left behind (and save again, where the next one is killed); the last resume runs to the end."""
  rdir, rng = tmp_path / "run", random.Random(1)
  common = [f"--out_dir={rdir}", *TINY, "--eval_interval=1", "--always_save_checkpoint=True"]
  res = CliRunner().invoke(cli, ["train", *common, "--max_iters=1"])
  assert res.exit_code == 0, res.output
  for n, op in enumerate(rng.sample(range(1, 9), 3)):  # of 8 points: 3 writes, 2 fsyncs, 2 renames, ckpt.prev's removal
    # the first save of a resume is at its first eval, before its first step: ckpt.prev exists, every point is reached
    p = subprocess.run([sys.executable, "-c", KILLER, "1", str(op), str(n), *common, "--max_iters=1000", "--init_from=resume"],
                       cwd=ROOT, env=env(tmp_path), capture_output=True, text=True, timeout=900)
    assert p.returncode == -signal.SIGKILL and "Resuming training from" in p.stdout, (op, p.stdout, p.stderr)
    meta, weights, _ = load_checkpoint(rdir)  # one complete checkpoint, whatever the point
    assert meta["iter_num"] == 1 and all(np.isfinite(w).all() for w in weights.values())
  res = CliRunner().invoke(cli, ["train", *common, "--max_iters=2", "--init_from=resume"])
  assert res.exit_code == 0, res.output
  assert [int(l.split()[0]) for l in iter_lines(res.output)] == [1, 2]
  assert leftovers(rdir) == [] and load_checkpoint(rdir)[0]["iter_num"] == 2
  iters, evals = read_metrics(rdir)  # every record whole
  assert [r["iter"] for r in iters] == [0, 1, 1, 2] and evals[-1]["iter"] == 2

# *** a full disk: RLIMIT_FSIZE in a child, files over the limit fail with EFBIG (Python ignores SIGXFSZ) ***

FULL_AFTER_FIRST_SAVE = """
import resource, sys
import tinystory.rundir
real = tinystory.rundir.save_checkpoint
def save(rdir, *a, **kw):
  real(rdir, *a, **kw)
  limit = (rdir / "ckpt" / "model.safetensors").stat().st_size - 1  # the next save's first file does not fit
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
tinystory.rundir.save_checkpoint = save
sys.argv = ["cli.py", "train", *sys.argv[1:]]
import cli
cli.main()
"""

@pytest.mark.slow
def test_disk_full_mid_run_keeps_the_last_checkpoint_and_resumes(tmp_path):
  rdir = tmp_path / "run"
  args = [f"--out_dir={rdir}", *TINY, "--eval_interval=1", "--always_save_checkpoint=True", "--max_iters=3"]
  p = subprocess.run([sys.executable, "-c", FULL_AFTER_FIRST_SAVE, *args], cwd=ROOT, env=env(tmp_path),
                     capture_output=True, text=True, timeout=900)
  assert p.returncode == 1 and p.stderr == (f"Error: cannot write {rdir / 'ckpt.tmp' / 'model.safetensors'}: File too large "
                                            "(checkpoint not saved; the previous one, if any, is kept)\n"), p.stderr
  assert leftovers(rdir) == [] and load_checkpoint(rdir)[0]["iter_num"] == 1
  res = CliRunner().invoke(cli, ["train", *args, "--init_from=resume"])  # room again: it goes on from there
  assert res.exit_code == 0 and [int(l.split()[0]) for l in iter_lines(res.output)] == [1, 2, 3], res.output

LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.argv = ["cli.py", *sys.argv[2:]]
import cli
cli.main()
"""

def limited(tmp_path, limit: int, *args) -> subprocess.CompletedProcess:
  """`python cli.py ARGS` with files limited to `limit` bytes."""
  return subprocess.run([sys.executable, "-c", LIMITED, str(limit), *args], cwd=ROOT, env=env(tmp_path),
                        capture_output=True, text=True, timeout=600)

@pytest.mark.slow
def test_disk_full_at_the_start_of_a_resume_is_one_line_and_leaves_no_temp_file(tmp_path):
  res, rdir = run_train(tmp_path, "--max_iters=1", "--eval_interval=1", "--always_save_checkpoint=True")
  assert res.exit_code == 0, res.output
  files = {p.name: p.read_bytes() for p in rdir.iterdir() if p.is_file() and p.name != "train.lock"}
  log_size = (rdir / "train.log").stat().st_size
  # train.log is first written as the resume starts (config.json comes next): it cannot grow
  p = limited(tmp_path, log_size, "train", f"--out_dir={rdir}", "--init_from=resume", "--max_iters=2")
  assert p.returncode == 1 and p.stderr == f"Error: cannot write {rdir / 'train.log'}: File too large\n", p.stderr
  assert leftovers(rdir) == [] and load_checkpoint(rdir)[0]["iter_num"] == 1
  assert {n: (rdir / n).read_bytes() for n in files if n != "train.log"} == {n: b for n, b in files.items() if n != "train.log"}
  # config.json (written through a temp file) cannot be written: one line, no config.json.tmp
  os.truncate(rdir / "train.log", 0)
  assert len(files["config.json"]) > 2000
  p = limited(tmp_path, 2000, "train", f"--out_dir={rdir}", "--init_from=resume", "--max_iters=2")
  assert p.returncode == 1 and p.stderr == f"Error: cannot write {rdir / 'config.json'}: File too large\n", p.stderr
  assert leftovers(rdir) == [] and json.loads((rdir / "config.json").read_bytes()) == json.loads(files["config.json"])
  # metrics.jsonl cannot grow: the first record after the run starts fails
  big = max(len(b) for b in files.values()) + 4096
  os.truncate(rdir / "metrics.jsonl", 0)
  (rdir / "metrics.jsonl").write_bytes(b"x" * big + b"\n")  # a full file: not JSON, but the trainer only appends
  p = limited(tmp_path, big + 1, "train", f"--out_dir={rdir}", "--init_from=resume", "--max_iters=2")
  assert p.returncode == 1 and p.stderr == f"Error: cannot write {rdir / 'metrics.jsonl'}: File too large\n", p.stderr

# *** two trainers, export-log and plot while one runs ***

@pytest.mark.slow
def test_one_trainer_per_run_dir(tmp_path):
  rdir = tmp_path / "run"
  first = subprocess.Popen([sys.executable, "cli.py", "train", f"--out_dir={rdir}", *TINY, "--max_iters=100000",
                            "--eval_interval=100000"], cwd=ROOT, env=env(tmp_path), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
  try:
    wait_for(lambda: (rdir / "train.log").exists() and iter_lines((rdir / "train.log").read_text()), first, "training")
    t0 = time.time()
    res = CliRunner().invoke(cli, ["train", f"--out_dir={rdir}", *TINY, "--learning_rate=1e-2"])
    assert res.exit_code == 1 and time.time() - t0 < 30
    assert one_error_line(res.output) == (f"Error: {rdir} is in use: another `train` (pid {first.pid}) is running in it; "
                                          "wait for it to end (Ctrl-C in it saves a checkpoint and stops), or pass another --out_dir")
    res = CliRunner().invoke(cli, ["export-log", str(rdir), "--no-sample"])
    assert res.exit_code == 1 and one_error_line(res.output) == (
      f"Error: {rdir} is still training (pid {first.pid}): export it when that run ends (Ctrl-C in it saves a checkpoint and stops)")
    res = CliRunner().invoke(cli, ["plot", str(rdir)])
    assert res.exit_code == 0 and re.search(rf"^note: {re.escape(str(rdir))} is still training \(pid {first.pid}\): the plot "
                                            r"is a snapshot, up to iteration \d+$", res.output, re.M), res.output
  finally:
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=600)
  assert first.returncode == 0 and "interrupted: saved step" in out, out
  # the first run's record only: the refused trainer wrote nothing
  assert (rdir / "train.log").read_text() == out and "learning_rate" not in out
  assert json.loads((rdir / "config.json").read_text())["commands"] == [
    "python cli.py train " + " ".join([f"--out_dir={rdir}", *TINY, "--max_iters=100000", "--eval_interval=100000"])]
  res = CliRunner().invoke(cli, ["export-log", str(rdir), "--no-sample"])  # the lock went with its process
  assert "still training" not in res.output

# *** run dirs that cannot be written ***

def test_out_dirs_that_cannot_be_run_dirs(tmp_path):
  (tmp_path / "f").write_text("x")
  for out, msg in [(tmp_path / "f", f"--out_dir {tmp_path / 'f'} is a file, expected a directory"),
                   (tmp_path / "f" / "run", f"--out_dir {tmp_path / 'f' / 'run'}: {tmp_path / 'f'} is a file, not a directory"),
                   (Path(f"/proc/tinystory-{os.getpid()}/run"), f"cannot create --out_dir /proc/tinystory-{os.getpid()}/run: "),
                   (Path(f"/sys/tinystory-{os.getpid()}/run"), f"cannot create --out_dir /sys/tinystory-{os.getpid()}/run: ")]:
    res = CliRunner().invoke(cli, ["train", f"--out_dir={out}", *TINY])
    assert res.exit_code == 1 and one_error_line(res.output).startswith(f"Error: {msg}"), res.output
  assert sorted(os.listdir(tmp_path)) == ["f"]

def can_mount() -> bool:
  try: return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0
  except OSError: return False

@pytest.mark.skipif(not can_mount(), reason="needs `unshare -m` (root) for a private read-only mount")
def test_read_only_run_dirs(tmp_path):
  """In a private mount namespace (gone with its process): a new run under a read-only mount, and a resume of a run
  dir bind-mounted read-only."""
  res, rdir = run_train(tmp_path, "--max_iters=1", "--eval_interval=1", "--always_save_checkpoint=True")
  assert res.exit_code == 0, res.output
  (ro := tmp_path / "ro").mkdir()
  py = f"{sys.executable} cli.py train"
  script = (f"mount -t tmpfs -o ro,size=64k tmpfs {ro} && mount --bind {rdir} {rdir} && mount -o remount,bind,ro {rdir} && "
            f"{py} --out_dir={ro / 'new'} {' '.join(TINY)}; {py} --out_dir={rdir} --init_from=resume")
  p = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=env(tmp_path), capture_output=True, text=True, timeout=300)
  assert p.stderr.splitlines() == [f"Error: cannot create --out_dir {ro / 'new'}: Read-only file system",
                                   f"Error: cannot write {rdir / 'train.lock'}: Read-only file system (--out_dir must be a writable directory)"], p.stderr
  assert os.listdir(ro) == [] and load_checkpoint(rdir)[0]["iter_num"] == 1

# *** outputs replaced whole, or not at all ***

def test_a_failed_prepare_leaves_the_good_shards(tmp_path):
  (tmp_path / "s.txt").write_text("\n\n".join(f"Story {i} about a cat and a dog." for i in range(60)))
  fit_tokenizer(["Story about a cat and a dog. 0123456789"], "char").save(tok := tmp_path / "t.tok")
  out = tmp_path / "shards"
  prepare([str(tmp_path / "s.txt")], tok, out)
  good = {p.name: p.read_bytes() for p in out.iterdir()}
  (tmp_path / "bad.json").write_text("[{\"story\": 1}]")
  res = CliRunner().invoke(cli, ["data", "prepare", f"--data={tmp_path / 'bad.json'}", f"--tokenizer={tok}", f"--out={out}"])
  assert res.exit_code == 1 and "record 0: expected an object with a \"story\"" in one_error_line(res.output)
  res = CliRunner().invoke(cli, ["tokenizer", "fit", "--kind=char", f"--data={tmp_path / 'bad.json'}", f"--out={tok}"])
  assert res.exit_code == 1 and tok.read_bytes() == fit_tokenizer(["Story about a cat and a dog. 0123456789"], "char").to_bytes()
  # the disk fills up while the new shards are written (other data: the build begins): the good ones stay
  (tmp_path / "s2.txt").write_text("\n\n".join(f"Another story {i} about a dog." for i in range(3000)))
  for dest in (out, tmp_path / "new" / "shards"):
    p = limited(tmp_path, 4096, "data", "prepare", f"--data={tmp_path / 's2.txt'}", f"--tokenizer={tok}", f"--out={dest}")
    assert p.returncode == 1 and p.stderr.startswith(f"Error: data prepare into {dest} failed: ") and \
      p.stderr.endswith(": File too large\n"), p.stderr
  assert {p.name: p.read_bytes() for p in out.iterdir()} == good and load_meta(out)["stories"] == 60
  assert set(os.listdir(tmp_path)) - {"cache"} == {"bad.json", "s.txt", "s2.txt", "shards", "t.tok"}  # no new/, no temp dir

def test_a_failed_train_leaves_no_run_dir(tmp_path):
  for out in (tmp_path / "new" / "run", tmp_path / "run2"):
    res = CliRunner().invoke(cli, ["train", f"--out_dir={out}", *TINY[:-1], f"--data={tmp_path / 'missing.txt'}"])
    assert res.exit_code == 1 and "missing.txt" in one_error_line(res.output)
  assert not (tmp_path / "new").exists() and not (tmp_path / "run2").exists()
  (existing := tmp_path / "mine").mkdir()
  (existing / "notes.txt").write_text("mine")
  res = CliRunner().invoke(cli, ["train", f"--out_dir={existing}", *TINY[:-1], f"--data={tmp_path / 'missing.txt'}"])
  assert res.exit_code == 1 and sorted(os.listdir(existing)) == ["notes.txt", "train.lock"]

def test_short_val_split_is_refused_before_anything_runs(tmp_path):
  (tmp_path / "s.txt").write_text("\n\n".join(f"Story {i} about a cat and a dog." for i in range(60)))
  for seq in (64, 20000):  # 20000: the model and its batches would not fit in memory; refused before either exists
    t0 = time.time()
    res = CliRunner().invoke(cli, ["train", f"--out_dir={tmp_path / 'run'}", *TINY[:-1], f"--data={tmp_path / 's.txt'}", f"--max_seq_len={seq}"])
    assert res.exit_code == 1 and time.time() - t0 < 60
    assert re.fullmatch(rf"Error: \S+: the val split has [\d,]+ tokens, too few for one window of max_seq_len\+1 = {seq + 1} .*",
                        one_error_line(res.output)), res.output
    assert "step 0" not in res.output and "Initializing" not in res.output and not (tmp_path / "run").exists()

# *** divergence ***

@pytest.mark.slow
def test_a_diverging_run_sends_the_user_back_to_its_last_trained_checkpoint(tmp_path):
  """always_save_checkpoint saves the finite but collapsed checkpoints of a diverging run (weights of ~1e8, a nearly
  uniform prediction): the advice names the last one that beat the val data's unigram loss, put back in ckpt/, and
  following it gets past the step that diverged."""
  res, rdir = run_train(tmp_path, "--learning_rate=3e-2", "--warmup_iters=10", "--eval_interval=20", "--max_iters=200")
  assert res.exit_code == 0, res.output
  good = load_checkpoint(rdir)[0]  # step 180 (val loss 2.87; the unigram loss of this data is 3.08)
  diverging = ["--learning_rate=1e3", "--eval_interval=2", "--always_save_checkpoint=True", "--max_iters=260", "--init_from=resume"]
  res = CliRunner().invoke(cli, ["train", f"--out_dir={rdir}", *diverging])
  m = re.fullmatch(rf"Error: (.*) at step (\d+): training stopped; the last checkpoint that looked trained, step "
                   rf"{good['iter_num']} \(val loss {good['best_val_loss']:.4f}\), is in {re.escape(str(rdir / 'ckpt'))}: "
                   r"continue it with --init_from=resume and a lower --learning_rate \(now 1000; e.g. --learning_rate=100\)",
                   one_error_line(res.output))
  assert res.exit_code == 1 and m, res.output
  assert re.search(rf"^put the checkpoint of step {good['iter_num']} back in \S+; the later one, of step (\d+) \(val loss "
                   r"[\d.]+\), is now \S+ckpt.diverged$", res.output, re.M), res.output
  meta, weights, opt = load_checkpoint(rdir)
  assert meta["iter_num"] == good["iter_num"] and not np.array_equal(weights["norm.weight"], load_checkpoint(rdir / "ckpt.diverged")[1]["norm.weight"])
  assert load_checkpoint(rdir / "ckpt.diverged")[0]["iter_num"] > good["iter_num"] and not (rdir / "ckpt.good").exists()
  # resumed as it was, it would diverge again, exactly: refused
  res = CliRunner().invoke(cli, ["train", f"--out_dir={rdir}", *diverging])
  assert res.exit_code == 1 and one_error_line(res.output).startswith(
    f"Error: this run diverged at step {m[2]} ({m[1]}) after its checkpoint of step {good['iter_num']}: resumed with the "
    "same options it diverges again, exactly (resume is bit-exact); change an option, e.g. a lower --learning_rate"), res.output
  # the advice followed: past the step that diverged, to the end
  res = CliRunner().invoke(cli, ["train", f"--out_dir={rdir}", "--init_from=resume", "--learning_rate=100", "--max_iters=260"])
  assert res.exit_code == 0 and f"note: this run diverged at step {m[2]} ({m[1]}) after its checkpoint of step " \
    f"{good['iter_num']}; resuming with changed options" in res.output, res.output
  assert load_checkpoint(rdir)[0]["iter_num"] > int(m[2]) and iter_lines(res.output)[-1].startswith("260 | loss ")

def test_a_run_that_diverges_before_it_learned_anything_says_so(tmp_path):
  res, rdir = run_train(tmp_path, "--learning_rate=1e3", "--warmup_iters=0", "--eval_interval=1", "--always_save_checkpoint=True",
                        "--max_iters=40")
  assert res.exit_code == 1 and re.fullmatch(
    r"Error: .* at step \d+: training stopped; no checkpoint looks trained \(the last, step \d+, has val loss [\d.]+, no "
    r"better than the tokens' frequencies alone predict, 3.0826\): start again with --overwrite=True and a lower "
    r"--learning_rate \(now 1000; e.g. --learning_rate=100\)", one_error_line(res.output)), res.output
  meta, weights, opt = load_checkpoint(rdir)  # never a non-finite checkpoint
  assert all(np.isfinite(a).all() for a in [*weights.values(), *opt.values()])

# *** resume restores the run ***

@pytest.mark.slow
def test_resume_takes_the_saved_options_and_refuses_shape_changes(tmp_path):
  res, rdir = run_train(tmp_path, "--max_iters=2", "--eval_interval=2", "--warmup_iters=2", "--learning_rate=1e-2",
                        "--always_save_checkpoint=True")
  assert res.exit_code == 0, res.output
  res = CliRunner().invoke(cli, ["train", f"--out_dir={rdir}", "--init_from=resume", "--dim=64", "--n_layers=3", "--dropout=0.2"])
  assert res.exit_code == 1 and one_error_line(res.output) == (
    "Error: --init_from=resume cannot change --dim=64 (the run's: 16), --n_layers=3 (the run's: 1): they fix the model's "
    "shape, its data or its random streams; drop them, or start a new run in another --out_dir"), res.output
  # only what is typed changes: warmup_iters stays 2 (not the default 2500), the lr schedule goes on as it was
  res = CliRunner().invoke(cli, ["train", f"--out_dir={rdir}", "--init_from=resume", "--max_iters=3"])
  assert res.exit_code == 0, res.output
  assert "changed on resume: max_iters = 3 (was 2)" in res.output.splitlines()
  opts = json.loads((rdir / "config.json").read_text())["options"]
  assert (opts["warmup_iters"], opts["learning_rate"], opts["dim"], opts["max_iters"]) == (2, 1e-2, 16, 3)
  lrs = [get_lr(it, TrainConfig(learning_rate=1e-2, warmup_iters=2, max_iters=3)) for it in (2, 3)]
  assert [r["lr"] for r in read_metrics(rdir)[0]][-2:] == lrs and lrs[0] == 1e-2

@pytest.mark.slow
def test_ckpt_prev_alone_is_restored_never_deleted(tmp_path):
  res, rdir = run_train(tmp_path, "--max_iters=1", "--eval_interval=1", "--always_save_checkpoint=True")
  assert res.exit_code == 0, res.output
  os.replace(rdir / "ckpt", rdir / "ckpt.prev")  # a save killed between its two renames
  res, _ = run_train(tmp_path, "--max_iters=1")
  assert res.exit_code == 1 and f"already holds a checkpoint ({rdir / 'ckpt.prev'})" in res.output
  assert find_checkpoint(rdir).name == "ckpt.prev"
  res, _ = run_train(tmp_path, "--max_iters=2", "--init_from=resume")
  assert res.exit_code == 0 and f"restored {rdir / 'ckpt'} from {rdir / 'ckpt.prev'} (a save was cut short)" in res.output
  assert [int(l.split()[0]) for l in iter_lines(res.output)] == [1, 2]

@pytest.mark.parametrize("key", ["shard_dir", "data_state"])
def test_resume_of_a_checkpoint_lacking_a_field_is_one_line(tmp_path, key):
  res, rdir = run_train(tmp_path, "--max_iters=1", "--eval_interval=1", "--always_save_checkpoint=True")
  meta = json.loads((rdir / "ckpt" / "ckpt.json").read_text())
  del meta[key]
  (rdir / "ckpt" / "ckpt.json").write_text(json.dumps(meta))
  res, _ = run_train(tmp_path, "--max_iters=2", "--init_from=resume")
  assert res.exit_code == 1 and one_error_line(res.output) == (
    f"Error: checkpoint {rdir / 'ckpt' / 'ckpt.json'} lacks {key!r}: it cannot be resumed (it can be sampled)")

# *** round two: SIGTERM, a damaged config.json, malformed run records, device names (issue 26) ***

@pytest.mark.slow
def test_sigterm_saves_exits_143_and_resumes_exactly(tmp_path):
  """kill, timeout, systemd and job schedulers send SIGTERM first: it is Ctrl-C's save-and-stop, with exit status
  143 (128 + 15) so that they see what happened; the resume goes on bit-exactly."""
  rdir = tmp_path / "term"
  args = [f"--out_dir={rdir}", *TINY, "--eval_interval=100000", "--dropout=0.1"]
  p = subprocess.Popen([sys.executable, "cli.py", "train", *args, "--max_iters=100000"], cwd=ROOT, env=env(tmp_path),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  wait_for(lambda: (rdir / "train.log").exists() and len(iter_lines((rdir / "train.log").read_text())) >= 3, p, "3 iterations")
  p.send_signal(signal.SIGTERM)
  out, _ = p.communicate(timeout=120)
  assert p.returncode == 143, out
  m = re.search(rf"^SIGTERM received: saved step (\d+) to {rdir / 'ckpt'}; continue with --init_from=resume --out_dir={rdir}$", out, re.M)
  assert m and m.group(0) in (rdir / "train.log").read_text(), out
  n = int(m.group(1))
  res, _ = run_train(tmp_path, "--init_from=resume", f"--max_iters={n + 1}", name="term")
  assert res.exit_code == 0 and [int(l.split()[0]) for l in iter_lines(res.output)] == [n, n + 1], res.output
  # the same losses as a run that was never stopped
  full = subprocess.run([sys.executable, "cli.py", "train", *args[1:], f"--out_dir={tmp_path / 'full'}", f"--max_iters={n + 1}"],
                        cwd=ROOT, env=env(tmp_path), capture_output=True, text=True)
  assert full.returncode == 0, full.stderr
  loss = lambda d: [(r["iter"], r["loss"]) for r in read_metrics(d)[0]]
  assert sorted(set(loss(rdir))) == loss(tmp_path / "full")

def test_a_damaged_config_json_is_refused_on_resume_not_replaced(tmp_path):
  res, rdir = run_train(tmp_path, "--max_iters=2", "--eval_interval=2", "--always_save_checkpoint=True")
  assert res.exit_code == 0, res.output
  os.truncate(rdir / "config.json", 100)
  before = (rdir / "config.json").read_bytes()
  res, _ = run_train(tmp_path, "--init_from=resume", "--max_iters=3")
  assert res.exit_code == 1 and one_error_line(res.output).startswith(f"Error: {rdir / 'config.json'} is damaged (not valid JSON: ")
  assert "put a good copy back, or move it away to resume without them" in res.output
  assert (rdir / "config.json").read_bytes() == before  # untouched: its command history is the user's to restore

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A real tiny run, with its checkpoint, train.log and records, for the tests below to damage copies of."""
  d = tmp_path_factory.mktemp("finished")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("TINYSTORY_DATA", str(d / "cache"))
    res = CliRunner().invoke(cli, ["train", f"--out_dir={d / 'r'}", *TINY, "--max_iters=2", "--eval_interval=2",
                                   "--always_save_checkpoint=True"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["export-log", str(d / "r"), "--max_new_tokens=4"])  # its sample.txt, for --no-sample
  assert res.exit_code == 0, res.output
  return d / "r"

@pytest.mark.parametrize("line, config", [("[1, 2, 3]", {}), ('{"iter": "x"}', {}), ('{"iter": 3, "loss": null, "dt": 1}', {}),
                                          (None, {"tokenizer": None}), (None, {"data_meta": {}}), (None, {"commands": [3]})])
@pytest.mark.slow
def test_malformed_run_records_are_one_line_errors_in_plot_and_export_log(tmp_path, finished_run, line, config):
  pytest.importorskip("matplotlib")
  import shutil
  rdir = tmp_path / "runs" / "r"
  shutil.copytree(finished_run, rdir)
  (rdir / "config.json").write_text(json.dumps({**json.loads((rdir / "config.json").read_text()), **config}))
  if line:  # a damaged line among good ones
    with open(rdir / "metrics.jsonl", "a") as f: f.write(line + "\n" + '{"iter": 99, "val_loss": 1, "train_loss": 1}\n')
  for args in (["plot", "r"], ["export-log", "r", "--no-sample"]):
    if not line and args[0] == "plot": continue  # a single run plotted by iteration reads no config.json
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert ("metrics.jsonl line " if line else "config.json") in p.stderr, p.stderr

@pytest.mark.parametrize("command", ["train", "sample"])
def test_an_indexed_cpu_device_is_one_line(tmp_path, command):
  p = subprocess.run([sys.executable, "cli.py", command, "--device=cpu:1"], cwd=ROOT, env=env(tmp_path), capture_output=True, text=True)
  assert p.returncode == 1 and p.stderr == ("Error: --device=cpu:1: the CPU is one device here (every kernel already runs "
                                            "on all its cores): use --device=cpu\n"), p.stderr

# *** concurrent and killed writers of a directory: the old complete output or the new complete one ***

def stories_file(path: Path, n: int, word: str) -> Path:
  path.write_text("\n\n".join(f"Story {i} about a {word} and a dog." for i in range(n)))
  return path

def prepare_proc(tmp_path, data: Path, tok: Path, out: Path, script: str | None = None, *script_args) -> subprocess.Popen:
  args = ["data", "prepare", f"--data={data}", f"--tokenizer={tok}", f"--out={out}"]
  cmd = [sys.executable, "-c", script, *script_args, *args] if script else [sys.executable, "cli.py", *args]
  return subprocess.Popen(cmd, cwd=ROOT, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

@pytest.fixture
def char_tok(tmp_path) -> Path:
  fit_tokenizer(["Story about a cat and a dog, bird. 0123456789"], "char").save(tok := tmp_path / "t.tok")
  return tok

@pytest.mark.slow
def test_concurrent_prepares_into_one_out_leave_one_complete_output(tmp_path, char_tok):
  a, b = stories_file(tmp_path / "a.txt", 20000, "cat"), stories_file(tmp_path / "b.txt", 15000, "bird")
  out = tmp_path / "shards"
  for trial in range(3):
    procs = [prepare_proc(tmp_path, src, char_tok, out) for src in (a, b)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    meta = load_meta(out)  # complete: every shard the size meta.json says
    assert meta["stories"] in (20000, 15000) and meta["sources"][0]["path"] in (str(a), str(b))
    assert set(os.listdir(tmp_path)) - {"cache"} == {"a.txt", "b.txt", "shards", "t.tok"}, os.listdir(tmp_path)  # no temp dirs
  # the same raw data, two trainers at once: both prepare it into one cache (one waits for the other, then reuses it)
  procs = [subprocess.Popen([sys.executable, "cli.py", "train", f"--out_dir={tmp_path / n}", *TINY[:-1], f"--data={a}",
                             "--max_iters=2", "--eval_interval=2"], cwd=ROOT, env=env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for n in ("r1", "r2")]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs

# a prepare that SIGKILLs itself at the n-th file operation of installing its output
PREPARE_KILLER = """
import os, shutil, signal, sys
import tinystory.files as files
n, count = int(sys.argv[1]), [0]
def hook(real):
  def wrapper(*a, **kw):
    count[0] += 1
    if count[0] == n: os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **kw)
  return wrapper
if sys.argv[2] == "no-exchange": files.exchange = lambda a, b: False  # a system without an atomic swap
else: files.exchange = hook(files.exchange)
files.os.rename, files.os.link, files.shutil.rmtree = hook(os.rename), hook(os.link), hook(shutil.rmtree)
sys.argv = ["cli.py", *sys.argv[3:]]
import cli
cli.main()
"""

@pytest.mark.parametrize("swap", ["exchange", "no-exchange"])
def test_a_prepare_killed_while_installing_leaves_the_old_shards_or_the_new(tmp_path, char_tok, swap):
  old, new = stories_file(tmp_path / "old.txt", 300, "cat"), stories_file(tmp_path / "new.txt", 400, "bird")
  out = tmp_path / "shards"
  prepare([str(old)], char_tok, out)
  (out / "notes.txt").write_text("mine")  # a file of the user's in the output directory stays
  seen = set()
  for n in range(1, 5):  # the link of notes.txt, the swap (or the two renames), the removal of the old output
    p = prepare_proc(tmp_path, new, char_tok, out, PREPARE_KILLER, str(n), swap)
    p.communicate(timeout=600)
    assert p.returncode in (-signal.SIGKILL, 0)
    if not out.exists():  # killed between the two renames of a system without an atomic swap: the next prepare restores
      assert swap == "no-exchange"
      prepare([str(old)], char_tok, out)
    seen.add(load_meta(out)["stories"])
    assert (out / "notes.txt").read_text() == "mine"
    prepare([str(old)], char_tok, out)  # back to the old output for the next kill
  assert seen == {300, 400} or (seen == {300} and swap == "no-exchange"), seen
  assert set(os.listdir(tmp_path)) - {"cache"} == {"new.txt", "old.txt", "shards", "t.tok"}  # the killed ones' temp dirs went

@pytest.mark.slow
def test_a_prepare_into_shards_a_trainer_reads_is_refused(tmp_path, char_tok):
  out = tmp_path / "shards"
  prepare([str(stories_file(tmp_path / "s.txt", 300, "cat"))], char_tok, out)
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  rdir = tmp_path / "run"
  trainer = subprocess.Popen([sys.executable, "cli.py", "train", f"--out_dir={rdir}", *TINY[:-1], f"--data={out}",
                              "--max_iters=100000", "--eval_interval=100000"], cwd=ROOT, env=env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    wait_for(lambda: (rdir / "train.log").exists() and iter_lines((rdir / "train.log").read_text()), trainer, "training")
    res = CliRunner().invoke(cli, ["data", "prepare", f"--data={stories_file(tmp_path / 'n.txt', 400, 'bird')}",
                                   f"--tokenizer={char_tok}", f"--out={out}"])
    assert res.exit_code == 1 and one_error_line(res.output) == (
      f"Error: --out {out} is in use: a `train` is reading it, and writing it now would change the data under it; wait "
      "for it to end, or write into another directory"), res.output
    res = CliRunner().invoke(cli, ["data", "prepare", f"--data={tmp_path / 's.txt'}", f"--tokenizer={char_tok}", f"--out={out}"])
    assert res.exit_code == 0 and "already holds these shards" in res.output, res.output  # the same shards: nothing to write
  finally:
    trainer.send_signal(signal.SIGINT)
    log_text, _ = trainer.communicate(timeout=600)
  assert trainer.returncode == 0 and {p.name: p.read_bytes() for p in out.iterdir()} == before, log_text
  res = CliRunner().invoke(cli, ["train", f"--out_dir={rdir}", "--init_from=resume", "--max_iters=3"])
  assert res.exit_code == 0, res.output

@pytest.mark.slow
def test_a_failed_export_leaves_the_old_export_whole(tmp_path, monkeypatch):
  from tinystory import hf
  from tinystory.loader import load_model_file
  runs = {}
  for name, dim in (("small", 16), ("big", 32)):
    res, runs[name] = run_train(tmp_path, f"--dim={dim}", "--max_iters=1", "--eval_interval=1", "--always_save_checkpoint=True", name=name)
    assert res.exit_code == 0, res.output
  out = tmp_path / "hf"
  assert CliRunner().invoke(cli, ["export-model", str(runs["small"]), "--format=hf", f"--out={out}"]).exit_code == 0
  (out / "README.md").write_text("my notes")
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  real = hf.write_atomic
  def disk_full_at_weights(path, data):
    if path.name == "model.safetensors": raise UserError(f"cannot write {path}: No space left on device")
    real(path, data)
  monkeypatch.setattr(hf, "write_atomic", disk_full_at_weights)  # config.json is written before it
  res = CliRunner().invoke(cli, ["export-model", str(runs["big"]), "--format=hf", f"--out={out}"])
  assert res.exit_code == 1 and one_error_line(res.output).endswith("model.safetensors: No space left on device"), res.output
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before and load_model_file(out)[0].args.dim == 16
  monkeypatch.setattr(hf, "write_atomic", real)
  assert CliRunner().invoke(cli, ["export-model", str(runs["big"]), "--format=hf", f"--out={out}"]).exit_code == 0
  assert load_model_file(out)[0].args.dim == 32 and (out / "README.md").read_text() == "my notes"
  assert set(os.listdir(tmp_path)) - {"cache"} == {"big", "hf", "small"}

# *** links planted in a run dir are never written through ***

@pytest.mark.parametrize("name", ["train.lock", "train.log", "metrics.jsonl"])
def test_a_link_planted_in_a_run_dir_is_refused_and_its_target_untouched(tmp_path, name):
  rdir, target = tmp_path / "run", tmp_path / "bashrc"
  rdir.mkdir()
  target.write_text("export PATH=/usr/bin\n")
  (rdir / name).symlink_to(target)
  res, _ = run_train(tmp_path, "--max_iters=1", "--eval_interval=1")
  assert res.exit_code == 1 and one_error_line(res.output) == (
    f"Error: {rdir / name} is a symbolic link: tinystory does not write through links in its directories (one pointing "
    "outside could be overwritten); remove it"), res.output
  assert target.read_text() == "export PATH=/usr/bin\n"

@pytest.mark.slow
def test_links_under_temp_names_are_never_followed(tmp_path):
  res, rdir = run_train(tmp_path, "--max_iters=1", "--eval_interval=1", "--always_save_checkpoint=True")
  assert res.exit_code == 0, res.output
  target, outside = tmp_path / "target", tmp_path / "outside"
  target.write_text("keep")
  outside.mkdir()
  (outside / "keep").write_text("keep")
  links = {"config.json.tmp": target, "tokenizer.tok.tmp": target, f"config.json.write-tmp.{os.getpid()}": target,
           "ckpt.tmp": outside, "ckpt.prev": outside}
  for name, to in links.items(): (rdir / name).symlink_to(to)
  res = CliRunner().invoke(cli, ["train", f"--out_dir={rdir}", "--init_from=resume", "--max_iters=3"])
  assert res.exit_code == 0, res.output
  assert target.read_text() == "keep" and os.listdir(outside) == ["keep"] and load_checkpoint(rdir)[0]["iter_num"] == 3
  # a copied run dir whose train.lock points at a shell rc file: refused, the file as it was
  (rdir / "train.lock").unlink()
  (rdir / "train.lock").symlink_to(target)
  res = CliRunner().invoke(cli, ["train", f"--out_dir={rdir}", "--init_from=resume", "--max_iters=4"])
  assert res.exit_code == 1 and "train.lock is a symbolic link" in one_error_line(res.output) and target.read_text() == "keep"
