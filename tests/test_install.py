"""`pip install .` (not editable), run from another directory: train, sample, export-log and bench work from the
installed package alone, with the working directory's paths; bench's workers import the command's own tinystory; and
versions() reads tinygrad's installed version."""
import importlib.metadata, importlib.util, json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dim=16", "--n_layers=1", "--n_heads=2", "--n_kv_heads=2", "--max_seq_len=16", "--batch_size=4"]
WHERE = "import json, tinystory, cli, tinystory.kernel_opts as k; print(json.dumps([tinystory.__file__, cli.__file__, str(k.TABLE)]))"
# where a bench worker imports tinystory from: run_worker's own command (flags, environment, working directory), the
# module it runs replaced by a probe, started in the directory given (the tests give the checkout: another tinystory)
WORKER_WHERE = """import os, subprocess, sys
from tinystory import bench
run, probe = subprocess.run, "import json, tinystory; print(json.dumps(tinystory.__file__))"
subprocess.run = lambda argv, **kw: run(argv[:argv.index("-m")] + ["-c", probe], **kw)
os.chdir(sys.argv[1])
print(bench.run_worker(["tinystory.bench"], dict(os.environ)))"""

@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
  """The package installed into a directory of its own (pip --target, no network: no deps, no build isolation), built
  from a copy of the files the build reads, so that nothing is written into the checkout."""
  tmp = tmp_path_factory.mktemp("install")
  for f in ("setup.cfg", "pyproject.toml", "README.md", "cli.py"): shutil.copy(ROOT / f, tmp / f)
  shutil.copytree(ROOT / "tinystory", tmp / "tinystory", ignore=shutil.ignore_patterns("__pycache__"))
  p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(tmp / "site"),
                      str(tmp)], capture_output=True, text=True)
  assert p.returncode == 0, p.stderr
  return tmp / "site"

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path: return tmp_path_factory.mktemp("work")  # the user's directory: not the checkout

def installed_env(site: Path) -> dict:
  """The installed package on the path, not the checkout (PYTHONPATH replaced; it also wins over the venv's editable
  install, which the tests below check); data in ./data of the working directory, its default."""
  return {**{k: v for k, v in os.environ.items() if k != "TINYSTORY_DATA"}, "PYTHONPATH": str(site)}

def tinystory(site: Path, work: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
  """The installed `tinystory` console script, run in `work`."""
  p = subprocess.run([str(site / "bin" / "tinystory"), *args], cwd=work, env=installed_env(site), capture_output=True, text=True,
                     timeout=timeout)
  assert p.returncode == 0, p.stdout + p.stderr
  return p

def test_the_installed_package_is_imported_not_the_checkout(site, work):
  out = subprocess.run([sys.executable, "-c", WHERE], cwd=work, env=installed_env(site), capture_output=True, text=True, check=True).stdout
  package, cli, table = map(Path, json.loads(out))
  assert package == site / "tinystory" / "__init__.py" and cli == site / "cli.py"
  assert table == site / "tinystory" / "kernel_opts.json" and table.is_file()  # the package's data, installed with it
  assert (site / "tinystory" / "torch_llama.py").is_file() and not (site / "bench").exists()

def test_bench_workers_import_the_commands_tinystory(site, work):
  """Wherever the worker starts (here the checkout, which holds another tinystory) it imports the command's: the
  installed one, or the checkout's for `python cli.py` (its directory is sys.path[0], not on PYTHONPATH)."""
  p = subprocess.run([sys.executable, "-c", WORKER_WHERE, str(ROOT)], cwd=work, env=installed_env(site), capture_output=True, text=True)
  assert p.returncode == 0, p.stderr
  assert Path(p.stdout.strip()) == site / "tinystory" / "__init__.py"
  from_checkout = f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.argv[1:] = [{str(work)!r}]\n" + WORKER_WHERE
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  p = subprocess.run([sys.executable, "-c", from_checkout], cwd=work, env=env, capture_output=True, text=True)
  assert p.returncode == 0, p.stderr
  assert Path(p.stdout.strip()) == ROOT / "tinystory" / "__init__.py"

@pytest.fixture(scope="module")
def trained(site, work) -> Path:
  tinystory(site, work, "train", "--data=synthetic:200", *TINY, "--max_iters=2", "--eval_interval=2", "--eval_iters=1", "--out_dir=r")
  return work / "runs" / "r"

@pytest.mark.slow
def test_train_and_sample_write_and_read_the_working_directory(site, work, trained):
  assert (trained / "ckpt" / "ckpt.json").is_file() and (work / "data").is_dir()  # ./runs and ./data of the cwd
  assert json.loads((trained / "config.json").read_text())["versions"]["tinygrad"] == importlib.metadata.version("tinygrad")
  out = tinystory(site, work, "sample", "--checkpoint=runs/r", "--max_new_tokens=5").stdout
  assert out.startswith("Overriding: checkpoint = runs/r\nOverriding: max_new_tokens = 5\nModelArgs(dim=16, n_layers=1,")

@pytest.mark.slow
def test_export_log_names_paths_as_typed_in_the_working_directory(site, work, trained):
  assert tinystory(site, work, "export-log", "runs/r", "--max_new_tokens=5").stdout.endswith("wrote runs/r/train-r.sh\n")
  record = (trained / "train-r.sh").read_text()
  assert "% python cli.py sample --checkpoint=runs/r --max_new_tokens=5\n" in record
  assert "checkpoint     runs/r/ckpt (step 2)\n" in record and "saved as runs/r/sample.txt\n" in record
  assert str(work) not in record and str(ROOT) not in record

@pytest.mark.slow
def test_bench_runs_its_workers_from_the_install(site, work):
  against = ["--against", "torch", "--repeat", "1"] if importlib.util.find_spec("torch") else []
  cfg = [a for kv in ("dim=16", "n_layers=1", "n_heads=2", "n_kv_heads=2", "vocab_size=40", "max_seq_len=16") for a in ("--config", kv)]
  tinystory(site, work, "bench", *cfg, "--batch-size", "2", "--steps", "1", "--new-tokens", "4", *against, "--json", "b.json")
  res = json.loads((work / "b.json").read_text())
  assert res["train_tokens_per_s"] > 0 and res["sample_tokens_per_s"] > 0
  if against: assert {r["device"] for r in res["against"].values()} == {"cpu"} and res["against"]["torch_eager"]["train_speed_ratio"] > 0

def test_versions_reads_tinygrads_installed_version(monkeypatch):
  from tinystory.train import versions  # tinygrad has no __version__: the version is its distribution's
  assert versions()["tinygrad"] == importlib.metadata.version("tinygrad")
  monkeypatch.setattr("importlib.metadata.version", lambda name: "0.15.0")
  assert versions()["tinygrad"] == "0.15.0"
  def missing(name): raise importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr("importlib.metadata.version", missing)  # a tinygrad checkout on PYTHONPATH, never installed
  assert versions()["tinygrad"] == "unknown"
