"""The run record (export-log) and the loss plot: layout against a golden file, verbatim log lines, commands that
reproduce the run and the sample, excerpt rules, the summary, and clear errors for bad input."""
import json, math, os, re, shlex, shutil, subprocess, sys
from pathlib import Path
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory import UserError
from tinystory.export import command_lines, excerpt, invocations, parse_windows, sparkline, training_section, wall_time

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "export-record.txt"
NAMES, THINGS = ["Tom", "Lily", "Sam", "Mia", "Ben"], ["red ball", "small dog", "big boat", "blue kite"]
STORIES = [f"Once upon a time, {n} had a {t}. {n} liked the {t} very much and played with it every day, "
           f"until the sun went down. Story {i}." for i in range(12) for n in NAMES for t in THINGS[i % 2:]]

def train_args(tmp: Path) -> list[str]:
  return ["--dim=16", "--n_layers=1", "--n_heads=2", "--n_kv_heads=2", "--max_seq_len=16", "--batch_size=4",
          "--eval_iters=2", f"--data={tmp / 'stories.txt'}", "--eval_interval=4", "--warmup_iters=3",
          "--learning_rate=1e-2", "--always_save_checkpoint=True"]

def run_cli(*args: str):
  """Run `python cli.py ARGS` in-process, with sys.argv as typed (train records it in config.json's commands)."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(sys, "argv", ["cli.py", *args])
    return CliRunner().invoke(cli, list(args))

@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """One tiny run, written the way a user would: a failed first attempt (a typo in --data), the run itself (8
  iterations), a resume to 10 iterations; then a record exported with a sample."""
  tmp = tmp_path_factory.mktemp("export")
  (tmp / "stories.txt").write_text("\n\n".join(STORIES) + "\n")
  rdir = tmp / "tiny"
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("TINYSTORY_DATA", str(tmp / "cache"))
    assert run_cli("train", f"--out_dir={rdir}", f"--data={tmp / 'nope.txt'}").exit_code == 1
    res = run_cli("train", f"--out_dir={rdir}", *train_args(tmp), "--max_iters=8")
    assert res.exit_code == 0, res.output
    res = run_cli("train", f"--out_dir={rdir}", *train_args(tmp), "--max_iters=10", "--init_from=resume")
    assert res.exit_code == 0, res.output
    res = run_cli("export-log", str(rdir), "--max_new_tokens=40", "--temperature=0.8", "--top_k=20", "--head=2",
                  "--tail=2", "--windows=5-6")
    assert res.exit_code == 0, res.output
  return {"tmp": tmp, "dir": rdir, "record": (rdir / "train-tiny.sh").read_text(), "output": res.output}

def sections(record: str) -> dict[str, list[str]]:
  """The record's lines under each `### ` heading."""
  out, name = {}, None
  for line in record.split("\n"):
    if line.startswith("### "): name = line; out[name] = []
    elif name: out[name].append(line)
  return out

def command_blocks(lines: list[str]) -> list[tuple[int, str]]:
  """(index of the prompt line, the command joined back into one line) for each multi-line command in `lines`."""
  out = []
  for i, line in enumerate(lines):
    if " % python cli.py train" in line:
      j = i
      while lines[j].endswith(" \\"): j += 1
      out.append((i, " ".join(l.removesuffix(" \\").strip() for l in lines[i:j + 1]).split(" % ", 1)[1]))
  return out

def masked(record: str, tmp: Path) -> str:
  """The record with what changes from run to run or machine to machine replaced by <...> marks."""
  text = record.replace(str(tmp), "<TMP>")
  text = re.sub(r"(output\.weight \[.*\]\n).*?(\n---------------\n)", r"\1<sampled text>\2", text, flags=re.S)
  for pattern, mark in [(r"[0-9a-f]{64}", "<sha256>"), (r"-[0-9a-f]{12,16}\b", "-<hex>"), (r"eta [\d:?]+", "eta <t>"),
                        (r"\d+:\d\d:\d\d", "<h:mm:ss>"), (r"-?\d+\.\d+(e[-+]\d+)?", "<x>"), (r"[\d,]+ tok/s", "<n> tok/s"),
                        (r"[▁▂▃▄▅▆▇█]+", "<spark>"), (r"(?m)^(machine|versions)( +).*$", r"\1\2<...>")]:
    text = re.sub(pattern, mark, text)
  return text

# *** the record ***

@pytest.mark.slow
def test_record_matches_golden_layout(run):
  got = masked(run["record"], run["tmp"])
  if os.environ.get("UPDATE_GOLDEN"): GOLDEN.write_text(got)
  assert got.split("\n") == GOLDEN.read_text().split("\n")

def test_record_is_plain_text_with_sections_in_order(run):
  rec = run["record"]
  assert "\r" not in rec and "\x1b" not in rec and rec.endswith("\n")
  assert [l for l in rec.split("\n") if l.startswith("### ")] == [
    "### Running:", "### Training:", "### Run summary (added by `python cli.py export-log`; not output of the commands above)"]

def test_training_lines_are_copied_verbatim_and_in_order_from_train_log(run):
  log_lines = (run["dir"] / "train.log").read_text().split("\n")
  lines = sections(run["record"])["### Training:"]
  blocks = command_blocks(lines)
  skip = {i for start, _ in blocks for i in range(start, start + 1 + next(k for k, l in enumerate(lines[start:]) if not l.endswith(" \\")))}
  kept = [l for i, l in enumerate(lines) if i not in skip and l not in ("...", "")]
  pos = 0
  for line in kept:  # a subsequence of train.log: same lines, same order
    pos = log_lines.index(line, pos) + 1
  # 0..8, then 8..10 after the resume: 12 iteration lines logged, 9 kept (see the next test)
  assert [sum(bool(re.match(r"^\d+ \| loss ", l)) for l in ls) for ls in (kept, log_lines)] == [9, 12]

def test_excerpt_keeps_every_eval_and_checkpoint_line_and_the_windows(run):
  lines = sections(run["record"])["### Training:"]
  log_lines = (run["dir"] / "train.log").read_text().split("\n")
  kept = [l for l in log_lines if l.startswith("step ") or l.startswith("saving checkpoint")]
  assert len(kept) == 7 and all(l in lines for l in kept)  # evals at 0, 4, 8 and (resumed) 8; a save after each but 0
  iters = [int(l.split(" |")[0]) for l in lines if re.match(r"^\d+ \| loss ", l)]
  # first invocation 0..8: head 0 1, window 5 6, tail 7 8; the resume (from the step-8 checkpoint) 8..10: head 8 9, tail 9 10
  assert iters == [0, 1, 5, 6, 7, 8, 8, 9, 10]
  assert "nope.txt" not in "\n".join(lines)  # the failed first attempt is not part of the run

def test_each_invocation_is_shown_after_its_command(run):
  lines = sections(run["record"])["### Training:"]
  cmds = json.loads((run["dir"] / "config.json").read_text())["commands"]
  assert [c for _, c in command_blocks(lines)] == cmds and len(cmds) == 2
  assert lines[:3] == ["", "tinystory % python cli.py train \\", f"  --out_dir={run['dir']} \\"]
  after = next(i for i in range(1, len(lines)) if not lines[i].endswith(" \\")) + 1  # the line after the first command
  assert lines[after] == f"Overriding: out_dir = {run['dir']}" and lines[after - 1] == "  --max_iters=8"
  assert "Resuming training from " + str(run["dir"]) in lines

def test_training_command_reproduces_the_run(run, tmp_path, monkeypatch):
  monkeypatch.setenv("TINYSTORY_DATA", str(run["tmp"] / "cache"))
  command = command_blocks(sections(run["record"])["### Training:"])[0][1]
  words = shlex.split(command)
  assert words[:3] == ["python", "cli.py", "train"]
  args = [f"--out_dir={tmp_path / 'again'}" if w.startswith("--out_dir=") else w for w in words[2:]]
  res = run_cli(*args)
  assert res.exit_code == 0, res.output
  def prefixes(text):  # step-0 eval and `N | loss X | lr Y` of the first invocation
    first = [inv for inv in invocations(text.split("\n")) if any(l.startswith("step ") for l in inv)][0]
    return [l for l in first if l.startswith("step ")][:1] + [" | ".join(l.split(" | ")[:3]) for l in first if re.match(r"^\d+ \| loss ", l)]
  want = prefixes((run["dir"] / "train.log").read_text())
  assert len(want) == 10 and prefixes((tmp_path / "again" / "train.log").read_text()) == want

def test_sampling_command_prints_the_running_section(run):
  lines = sections(run["record"])["### Running:"]
  assert lines[0] == "" and lines[1].startswith("user@host tinystory % python cli.py sample ")
  command = lines[1].split(" % ", 1)[1]
  assert command == f"python cli.py sample --checkpoint={run['dir']} --max_new_tokens=40 --temperature=0.8 --top_k=20"
  body = "\n".join(lines[2:]).rstrip("\n") + "\n"
  p = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True)
  assert p.returncode == 0, p.stderr
  assert p.stdout == body
  assert body.startswith(f"Overriding: checkpoint = {run['dir']}\nOverriding: max_new_tokens = 40\n"
                         "Overriding: temperature = 0.8\nOverriding: top_k = 20\nModelArgs(dim=16, n_layers=1,")

def test_export_saves_the_sample_and_no_sample_reuses_it(run, tmp_path):
  saved = (run["dir"] / "sample.txt").read_text()
  running = sections(run["record"])["### Running:"]
  assert saved == running[1].split(" % ", 1)[1] + "\n" + "\n".join(running[2:]).rstrip("\n") + "\n"
  res = CliRunner().invoke(cli, ["export-log", str(run["dir"]), "--no-sample", f"--out={tmp_path / 'r.sh'}", "--prompt=me@box runs %"])
  assert res.exit_code == 0, res.output
  rec = (tmp_path / "r.sh").read_text()
  again = sections(rec)["### Running:"]
  assert again[1] == "me@box runs %" + running[1].split(" %", 1)[1] and again[2:] == running[2:]
  assert sections(rec)["### Training:"][1] == "runs % python cli.py train \\"
  assert f"reused from {run['dir'] / 'sample.txt'}" in rec and f"using the sample saved in {run['dir'] / 'sample.txt'}" in res.output

def summary_rows(record: str) -> dict[str, str]:
  return dict(re.split(r"  +", l, maxsplit=1) for l in sections(record)["### Run summary (added by `python cli.py export-log`; not output of the commands above)"] if l)

def test_summary_quotes_the_log_and_config(run):
  rows = summary_rows(run["record"])
  cfg = json.loads((run["dir"] / "config.json").read_text())
  log_text = (run["dir"] / "train.log").read_text()
  evals = re.findall(r"^step (\d+): train loss (\S+), val loss (\S+)$", log_text, re.M)
  best = min(evals, key=lambda e: float(e[2]))
  assert rows["best val loss"] == f"{best[2]} at step {best[0]} (train loss {best[1]})"
  assert rows["data"] == f"{run['tmp'] / 'stories.txt'} sha256 {cfg['data_meta']['sources'][0]['sha256']}"
  assert rows["tokenizer"] == f"char, {cfg['tokenizer']['vocab_size']} tokens, sha256 {cfg['tokenizer']['sha256']}"
  d, nd = re.findall(r"parameter tensors: (\d+), with ([\d,]+) parameters", log_text)[:2]
  assert rows["parameters"] == f"{int(d[1].replace(',', '')) + int(nd[1].replace(',', '')):,} ({d[1]} decayed in {d[0]} tensors + {nd[1]} non-decayed in {nd[0]} tensors)"
  assert rows["iterations"] == "11 (0 to 10), 64 tokens each" and rows["tokens seen"] == f"{11 * 64:,}"
  assert rows["checkpoint"] == f"{run['dir'] / 'ckpt'} (step 8)"  # the last eval of the resume, at 8
  assert rows["versions"].startswith(f"tinystory {cfg['versions']['tinystory']}, tinygrad {cfg['versions']['tinygrad']}")

def test_summary_numbers_come_from_config_and_metrics_not_the_log(run, tmp_path):
  rdir = copy_run(run, tmp_path)
  cfg = json.loads((rdir / "config.json").read_text())
  log_text = (rdir / "train.log").read_text()
  logged = re.findall(r"(?m)^num (decayed|non-decayed) parameter tensors: (\d+), with ([\d,]+) parameters$", log_text)
  assert cfg["num_params"] == {g: {"tensors": int(n), "parameters": int(p.replace(",", ""))} for g, n, p in logged[:2]}
  # the log's wording changes: the summary does not depend on it
  (rdir / "train.log").write_text(re.sub(r"(?m)^num (non-)?decayed parameter tensors.*\n", "", log_text).replace("val loss", "val_loss"))
  assert run_cli("export-log", str(rdir), "--no-sample", f"--out={tmp_path / 'r.sh'}").exit_code == 0
  rows = summary_rows((tmp_path / "r.sh").read_text())
  d, nd = cfg["num_params"]["decayed"], cfg["num_params"]["non-decayed"]
  assert rows["parameters"] == f"{d['parameters'] + nd['parameters']:,} ({d['parameters']:,} decayed in {d['tensors']} tensors + " \
                               f"{nd['parameters']:,} non-decayed in {nd['tensors']} tensors)"
  best = min((json.loads(l) for l in (rdir / "metrics.jsonl").read_text().splitlines() if "val_loss" in l), key=lambda r: r["val_loss"])
  assert rows["best val loss"] == f"{best['val_loss']:.4f} at step {best['iter']} (train loss {best['train_loss']:.4f})"
  # a run from before config.json recorded num_params: no parameters row, the rest as before
  del cfg["num_params"]
  (rdir / "config.json").write_text(json.dumps(cfg))
  res = run_cli("export-log", str(rdir), "--no-sample", f"--out={tmp_path / 'old.sh'}")
  assert res.exit_code == 0, res.output
  assert summary_rows((tmp_path / "old.sh").read_text()) == {k: v for k, v in rows.items() if k != "parameters"}

# *** bad input: one line, naming the problem ***

def copy_run(run, tmp_path) -> Path:
  shutil.copytree(run["dir"], tmp_path / "copy")
  return tmp_path / "copy"

def error_of(*args) -> str:
  res = CliRunner().invoke(cli, list(args))
  assert res.exit_code == 1 and res.output.count("\n") == 1 and res.output.startswith("Error: "), res.output
  return res.output[7:-1]

def test_not_a_run_dir(tmp_path):
  assert error_of("export-log", str(tmp_path / "nope")) == f"run dir {tmp_path / 'nope'} does not exist (give a directory made by `python cli.py train`)"
  assert error_of("export-log", str(tmp_path)) == f"{tmp_path} is not a run dir: it has no config.json (expected a directory made by `python cli.py train`)"

def test_run_without_checkpoint(run, tmp_path):
  rdir = copy_run(run, tmp_path)
  shutil.rmtree(rdir / "ckpt")
  assert error_of("export-log", str(rdir)).startswith(f"no checkpoint in {rdir}: expected {rdir / 'ckpt'}/ckpt.json")

def test_unreadable_log(run, tmp_path):
  rdir = copy_run(run, tmp_path)
  (rdir / "train.log").write_bytes(b"step 0: \xff\xfe\n")
  assert error_of("export-log", str(rdir)) == f"cannot read {rdir / 'train.log'}: not UTF-8 text (byte 8)"
  (rdir / "train.log").unlink()
  (rdir / "train.log").mkdir()
  assert error_of("export-log", str(rdir)) == f"cannot read {rdir / 'train.log'}: Is a directory"

def test_log_without_training(run, tmp_path):
  rdir = copy_run(run, tmp_path)
  (rdir / "train.log").write_text("Overriding: dim = 16\n")
  assert error_of("export-log", str(rdir), "--no-sample") == \
    "train.log holds no training: no eval or iteration line after a `tokens per iteration` line"

def test_no_sample_needs_a_fresh_saved_sample(run, tmp_path):
  rdir = copy_run(run, tmp_path)
  (rdir / "sample.txt").unlink()
  assert error_of("export-log", str(rdir), "--no-sample") == \
    f"--no-sample: {rdir / 'sample.txt'} does not exist; export once with --sample (the default) to sample and save one"
  (rdir / "sample.txt").write_text("python cli.py sample --checkpoint=x\nhello\n")
  os.utime(rdir / "sample.txt", (0, 0))
  assert error_of("export-log", str(rdir), "--no-sample") == \
    f"--no-sample: {rdir / 'sample.txt'} is older than the run's checkpoint, so it is not a sample of it; export with --sample"
  assert error_of("export-log", str(rdir), "--no-sample", "--top_k=5") == \
    "--no-sample reuses RUN_DIR/sample.txt: sampling options (--top_k) have no effect; drop them or drop --no-sample"

def test_bad_sampling_option_stops_before_writing(run, tmp_path):
  assert error_of("export-log", str(run["dir"]), "--top_k=0", f"--out={tmp_path / 'r.sh'}") == "--top_k must be a positive integer, got 0"
  assert not (tmp_path / "r.sh").exists()

def test_bad_windows_and_out(run, tmp_path):
  assert error_of("export-log", str(run["dir"]), "--no-sample", "--windows=9-3") == \
    "--windows '9-3': expected iteration ranges START-END (START <= END), comma-separated, e.g. 700-710"
  assert error_of("export-log", str(run["dir"]), "--no-sample", f"--out={tmp_path / 'no' / 'r.sh'}") == \
    f"--out {tmp_path / 'no' / 'r.sh'}: directory {tmp_path / 'no'} does not exist"

# *** the parts ***

def iter_line(n: int) -> str: return f"{n} | loss 1.0000 | lr 1.000000e-04 | 10.00ms | mfu 0.01% | 6,400 tok/s | eta 0:00:01"

def test_excerpt_keeps_non_iteration_lines_and_marks_each_gap():
  lines = ["pre", "step 0: train loss 2.0000, val loss 2.0000"] + [iter_line(i) for i in range(10)] + ["step 10: x", "saving checkpoint to out"] + [iter_line(i) for i in range(10, 20)]
  got = excerpt(lines, head=2, tail=1, windows=[(5, 6), (11, 11)])
  assert got == ["pre", lines[1], iter_line(0), iter_line(1), "...", iter_line(5), iter_line(6), "...", "step 10: x",
                 "saving checkpoint to out", "...", iter_line(11), "...", iter_line(19)]
  assert excerpt(lines, head=0, tail=0, windows=[]) == ["pre", lines[1], "...", "step 10: x", "saving checkpoint to out", "..."]
  assert excerpt(lines, head=100, tail=0, windows=[]) == lines

def test_invocations_split_at_each_start_with_its_overriding_lines():
  log = ["Overriding: data = typo", "tokens per iteration will be: 64", "breaks down as: ...",  # failed: no eval
         "Overriding: device = nodev",  # failed before its tokens line
         "Overriding: dim = 16", "tokens per iteration will be: 64", "step 0: train loss 1, val loss 1", iter_line(0),
         "Overriding: init_from = resume", "tokens per iteration will be: 64", iter_line(1)]
  assert invocations(log) == [log[:3], log[3:8], log[8:]]
  got = training_section(log, ["python cli.py train --dim=16", "python cli.py train --init_from=resume"], "%", 5, 5, [])
  assert got == ["% python cli.py train \\", "  --dim=16"] + log[4:8] + ["% python cli.py train \\", "  --init_from=resume"] + log[8:]

def test_command_lines_one_option_per_line_as_typed():
  cmd = shlex.join(["python", "cli.py", "train", "--out_dir=runs/a b", "--batch-size", "8", "--compile=False", "--start="])
  assert command_lines(cmd, "d %") == ["d % python cli.py train \\", "  '--out_dir=runs/a b' \\", "  --batch-size 8 \\",
                                       "  --compile=False \\", "  --start="]
  assert shlex.split(" ".join(l.removesuffix(" \\") for l in command_lines(cmd, "")))[:3] == ["python", "cli.py", "train"]

def test_parse_windows():
  assert parse_windows(["700-710,53100-53105", "5"]) == [(700, 710), (53100, 53105), (5, 5)]
  with pytest.raises(UserError, match="--windows 'a-b'"): parse_windows(["a-b"])

def test_sparkline_maps_log_values_to_eight_levels():
  vals = [math.e ** (i / 7) for i in range(8)]  # log-spaced: one level each
  assert sparkline(vals) == "▁▂▃▄▅▆▇█" and sparkline([2.0] * 3) == "▁▁▁"
  assert sparkline(list(range(1, 121)), width=60) == sparkline([i + 0.5 for i in range(1, 120, 2)], width=60)
  assert len(sparkline(list(range(1, 1000)), width=60)) == 60

def test_wall_time_adds_up_invocations():
  recs = [{"time": t} for t in (1.0, 2.0, 5.0, 0.5, 3.0, 0.2)]
  assert wall_time(recs) == 5.0 + 3.0 + 0.2

# *** the plot ***

def test_plot_writes_a_png_and_the_record_names_it(run, tmp_path):
  pytest.importorskip("matplotlib")
  rdir = copy_run(run, tmp_path)
  for extra in ([], ["--logx"]):
    res = CliRunner().invoke(cli, ["plot", str(rdir), *extra])
    assert res.exit_code == 0 and res.output == f"wrote {rdir / 'loss.png'}\n", res.output
    assert (rdir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert CliRunner().invoke(cli, ["export-log", str(rdir), "--no-sample"]).exit_code == 0
  assert f"loss plot      {rdir / 'loss.png'}" in (rdir / "train-copy.sh").read_text()

def test_plot_without_matplotlib_says_how_to_install(run, monkeypatch):
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
  assert error_of("plot", str(run["dir"])) == \
    "plot needs matplotlib, an optional extra: pip install '.[plot]' (or: pip install matplotlib)"
