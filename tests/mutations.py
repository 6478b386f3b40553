"""Mutation check: does the suite catch known bugs? Each mutation below breaks the code in one small, plausible way;
the tests listed with it must then fail. For each one this script edits the file, runs those tests (pytest -x, stopping
at the first failure), restores the file whatever happens, and prints `caught` or `MISSED`.

  .venv/bin/python tests/mutations.py            # all (about 10 minutes on two cores)
  .venv/bin/python tests/mutations.py NAME ...   # some; --list names them

Exit status 1 when a mutation is missed or no longer applies (its text is not in the file: update it with the code).
When you change the training step, the optimizer or the model's backward, add the mutation that your tests catch.
"""
import subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (file, text, replacement, tests that must fail)
MUTATIONS = {
  "pinv gradient: one term's sign flipped": (
    "tinystory/pinv.py", "- (AdEt @ E) @ P", "+ (AdEt @ E) @ P", ["tests/test_pinv.py"]),
  "lr warmup: nanoGPT-style off-by-one": (
    "tinystory/optim.py", "cfg.learning_rate * it / cfg.warmup_iters", "cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)",
    ["tests/test_train.py"]),
  "top-p: the +1 dropped (the token that reaches p is cut)": (
    "tinystory/sample.py", "np.searchsorted(np.cumsum(p), top_p) + 1]", "np.searchsorted(np.cumsum(p), top_p)]",
    ["tests/test_sample.py"]),
  "gradient accumulation: adds g, not g / n": (
    "tinystory/train.py", "a.assign(a + g / n)", "a.assign(a + g)", ["tests/test_train_step.py"]),
  "linear: input gradients doubled (x not detached in the value term)": (
    "tinystory/model.py", "y = x.detach() @ packed(weight) + ", "y = x @ packed(weight) + ", ["tests/test_train_step.py"]),
  "weight_grad_path: positions paired wrongly (a transpose before the reshape)": (
    "tinystory/model.py", "x2, (out, inp) = x.detach().reshape(-1, x.shape[-1]), weight.shape",
    "x2, (out, inp) = x.detach().transpose(0, 1).reshape(-1, x.shape[-1]), weight.shape", ["tests/test_train_step.py"]),
  "causal halves: the first half of the queries attends to the second half of the keys": (
    "tinystory/model.py", "own(k[..., :h, :]), own(v[..., :h, :])", "own(k[..., h:, :]), own(v[..., h:, :])",
    ["tests/test_model.py::test_causal_halves_are_the_whole_attention"]),
  "attention: no gradient through the softmax's row sums": (
    "tinystory/model.py", "* e.sum(-1, keepdim=True).reciprocal()", "* e.sum(-1, keepdim=True).reciprocal().detach()",
    ["tests/test_model.py::test_gradients_match_finite_differences"]),
  "weight decay on every parameter (norm gains and biases too)": (
    "tinystory/optim.py", "weight_decay if p.ndim >= 2 else 0.0", "weight_decay", ["tests/test_train_step.py"]),
  "AdamW: no bias correction of the first moment": (
    "tinystory/optim.py", "(lr / bias1) * m", "lr * m", ["tests/test_train_step.py"]),
  "gradient clipping: scales up small gradients too": (
    "tinystory/optim.py", "(self.grad_clip / (norm + 1e-6)).minimum(1.0)", "(self.grad_clip / (norm + 1e-6))", ["tests/test_train.py::test_adamw_step_matches_numpy"]),
  "resume: the dropout RNG state is not restored": (
    "tinystory/train.py", 'resume.meta["rng_state"] if resume else ', "", ["tests/test_train_step.py"]),
  "Ctrl-C: the second Ctrl-C no longer aborts": (
    "tinystory/train.py", "if self.flag: raise KeyboardInterrupt", "if False: raise KeyboardInterrupt", ["tests/test_train_step.py"]),
  "resume: the saved options are not restored (defaults for what is not typed)": (
    "tinystory/resume.py", "if (k not in given or given[k] == v) and hasattr(cfg, k)}", "if k in RESUME_FIXED}",
    ["tests/test_reliability.py::test_resume_takes_the_saved_options_and_refuses_shape_changes"]),
  "two trainers: the run dir's lock is not taken": (
    "tinystory/rundir.py", "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "fd", ["tests/test_reliability.py::test_one_trainer_per_run_dir"]),
  "data parallel: only the first device's dropout counter is saved": (
    "tinystory/device.py", '**({"more_counters": counters[1:]} if len(counters) > 1 else {})', "",
    ["tests/test_devices.py::test_two_devices_resume_exactly"]),
  "data parallel: the batch replicated on every device instead of split (each device does all the work)": (
    "tinystory/train.py", "dtype=dtypes.int64, axis=0)", "dtype=dtypes.int64)",
    ["tests/test_devices.py::test_each_device_gets_its_shard_of_the_batch_and_all_the_weights"]),
  "replay: one thread per part, however few the cores": (
    "tinystory/replay.py", "group_parts(parts, usable_cores())", "[[p] for p in parts]",
    ["tests/test_replay.py::test_more_parts_than_cores_run_as_one_group_per_core_and_equal_the_jit"]),
  "kernel table: its kernels no longer split over the cores": (
    "tinystory/kernel_opts.py", "  thread(k)\n", "\n", ["tests/test_kernel_opts.py"]),
  "kernel table: not installed in tinygrad's compile workers (most runs compile there)": (
    "tinystory/kernel_opts.py", '\n          (realize, "_compile_kernel", functools.partial(compile_kernel, str(table_path())))', "",
    ["tests/test_kernel_opts.py::test_a_tables_opts_are_applied_with_the_same_numbers"]),
  "kernel table: keys that include the device (the CPU's table misses on the NULL device and elsewhere)": (
    "tinystory/kernel_opts.py", "return (ast.substitute(params) if params else ast).key.hex()", "return ast.key.hex()",
    ["tests/test_kernel_opts.py::test_every_entry_matches_a_kernel_of_the_seed_step"]),
  "weight gradients in chunks: positions paired wrongly (chunk-major taken as position-major)": (
    "tinystory/model.py", "x2.reshape(S, N // S, inp)", "x2.reshape(N // S, S, inp).transpose(0, 1)",
    ["tests/test_train_step.py::test_train_step_gradients_match_float64_finite_differences"]),
  "chunked gradients on several devices: chunks that straddle two shards of the batch (tinygrad refuses the reshape)": (
    "tinystory/model.py", " and parts % len(devices_of(device)) == 0 else 0", " else 0",
    ["tests/test_devices.py::test_chunked_gradients_never_straddle_two_shards_of_a_batch"]),
  "weight gradients summed over all positions at once (a few hundred GPU threads, each a long loop)": (
    "tinystory/device.py", "Choices(grad_chunk=WEIGHT_GRAD_CHUNK)", "Choices(grad_chunk=0)",
    ["tests/test_bench.py::test_schedule_of_the_seed_step_for_a_gpu_renderer_needs_no_gpu_and_recomputes_little"]),
  "gradient clipping: the norm's sums in one kernel (16 GPU threads sum every gradient)": (
    "tinystory/optim.py", "(g.float() * g.float()).sum().contiguous() for g in grads", "(g.float() * g.float()).sum() for g in grads",
    ["tests/test_bench.py::test_schedule_of_the_seed_step_for_a_gpu_renderer_needs_no_gpu_and_recomputes_little"]),
  "gradient clipping: the norm left lazy (a GPU recomputes it in every thread block of every update)": (
    "tinystory/optim.py", "(g.float() * g.float()).sum().contiguous() for g in grads]).sum().sqrt()\n      clip = (self.grad_clip / (norm + 1e-6)).minimum(1.0).contiguous()",
    "(g.float() * g.float()).sum() for g in grads]).sum().sqrt()\n      clip = (self.grad_clip / (norm + 1e-6)).minimum(1.0)",
    ["tests/test_bench.py::test_schedule_of_the_seed_step_for_a_gpu_renderer_needs_no_gpu_and_recomputes_little"]),
  "bench workers: the working directory on their path (a tinystory there shadows the command's)": (
    "tinystory/bench.py", '[sys.executable, "-P", "-m", *cmd]', '[sys.executable, "-m", *cmd]',
    ["tests/test_install.py::test_bench_workers_import_the_commands_tinystory"]),
  "export-log: paths relative to the project root, not the working directory": (
    "tinystory/export.py", "Path.cwd().resolve()", "Path(__file__).resolve().parent.parent",
    ["tests/test_install.py::test_export_log_names_paths_as_typed_in_the_working_directory"]),
  "versions(): a made-up tinygrad version": (
    "tinystory/replay.py", 'try: return metadata.version("tinygrad")', 'try: return "0.14.0"',
    ["tests/test_install.py::test_versions_reads_tinygrads_installed_version"]),
}

def run(name: str) -> str:
  file, text, replacement, tests = MUTATIONS[name]
  path = ROOT / file
  original = path.read_text()
  if original.count(text) != 1: return "NO LONGER APPLIES"
  path.write_text(original.replace(text, replacement))
  try:
    p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT,
                       capture_output=True, text=True)
  finally: path.write_text(original)
  return "caught" if p.returncode == 1 else "MISSED" if p.returncode == 0 else f"ERROR (pytest exit {p.returncode})"

def main(argv: list[str]) -> int:
  if argv == ["--list"]:
    print("\n".join(MUTATIONS))
    return 0
  if unknown := [a for a in argv if a not in MUTATIONS]: sys.exit(f"unknown mutation {unknown[0]!r}: see --list")
  bad = 0
  for name in argv or MUTATIONS:
    t = time.perf_counter()
    result = run(name)
    bad += result != "caught"
    print(f"{result:>18}  {time.perf_counter() - t:6.1f}s  {name}", flush=True)
  return 1 if bad else 0

if __name__ == "__main__": sys.exit(main(sys.argv[1:]))
