"""The CLI documents itself: every option of every command has help, written once next to its config field."""
import dataclasses, re, subprocess, sys
from pathlib import Path
import click
import pytest
from cli import cli
from tinystory.config import SEED_MODEL, EvalConfig, ModelArgs, SampleConfig, TrainConfig

ROOT = Path(__file__).resolve().parent.parent

def commands(group: click.Group, path=()):
  for name, cmd in group.commands.items():
    if isinstance(cmd, click.Group): yield from commands(cmd, path + (name,))
    else: yield path + (name,), cmd

def test_every_option_of_every_command_has_help():
  found = list(commands(cli))
  assert {" ".join(p) for p, _ in found} >= {"train", "sample", "eval", "export-log", "bench", "tokenizer fit", "data prepare"}
  for path, cmd in found:
    for p in cmd.params:
      if isinstance(p, click.Option): assert p.help and p.help.strip(), f"{' '.join(path)} {p.opts[0]} has no help"

@pytest.mark.parametrize("command, config", [("train", TrainConfig), ("sample", SampleConfig), ("eval", EvalConfig)])
def test_help_lists_each_config_field_with_its_help(command, config):
  """`python cli.py train --help` (a real process, as typed) shows every field's option and its help text, once."""
  out = subprocess.run([sys.executable, "cli.py", command, "--help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
  flat = re.sub(r"\s+", " ", out)
  params = {p.name: p for p in cli.commands[command].params}
  for f in dataclasses.fields(config):
    assert f.metadata["help"] and f.metadata["help"] == params[f.name].help
    assert f"--{f.name}" in flat and re.sub(r"\s+", " ", f.metadata["help"]) in flat, f.name

def test_train_help_names_what_resume_keeps_and_what_vocab_source_takes():
  helps = {p.name: p.help for p in cli.commands["train"].params}
  assert "only 'custom'" in helps["vocab_source"]
  for kept in ("model shape", "optimizer state", "data position", "RNG", "saved options", "changed on resume", "refused"):
    assert kept in helps["init_from"]

def test_seed_model_is_trains_defaults_and_builds_the_seed_modelargs():
  cfg = TrainConfig()
  assert {k: getattr(cfg, k) for k in SEED_MODEL if hasattr(cfg, k) and k != "vocab_size"} == \
         {k: v for k, v in SEED_MODEL.items() if k not in ("vocab_size", "hidden_dim", "norm_eps")}
  assert repr(ModelArgs(**SEED_MODEL)) == ("ModelArgs(dim=128, n_layers=4, n_heads=16, n_kv_heads=16, vocab_size=361, "
                                           "hidden_dim=None, multiple_of=1, norm_eps=1e-05, max_seq_len=128, dropout=0.15)")
