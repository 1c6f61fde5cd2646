"""Sweep runners: expansion, commands, running, collecting, tables, plots, MACs."""

import json
import os
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from experiments import collect, macs, paper_numbers, results, run, sweeps  # noqa: E402


def test_sweep_sizes_and_dependency_order():
  assert len(sweeps.get_sweep("fbs_condconv")) == 1 + 4 * 5
  assert len(sweeps.get_sweep("ftwt_cifar10")) == 3 + 8
  assert len(sweeps.get_sweep("ftwt_imagenet")) == 6 + 1
  assert len(sweeps.get_sweep("cpu_fbs_condconv")) == len(sweeps.STUDY_SEEDS) * (1 + 4 * 3)
  assert len(sweeps.get_sweep("cpu_fbs_variants")) == len(sweeps.STUDY_SEEDS) * 2 * 2
  for name in sweeps.SWEEPS:
    jobs = sweeps.get_sweep(name)
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names)
    for i, job in enumerate(jobs):
      if job.depends_on:
        assert job.depends_on in names[:i], job.name
  with pytest.raises(ValueError, match="sweep must be one of"):
    sweeps.get_sweep("nope")


def test_every_study_claim_reads_rows_its_sweep_makes():
  from experiments import claims  # pylint: disable=g-import-not-at-top
  for name in sweeps.SWEEPS:
    labels = {j.label for j in sweeps.get_sweep(name) + sweeps.compared_rows(name)}
    for claim in claims.for_sweep(name):
      assert set(claim.rows) <= labels, (name, claim.text, set(claim.rows) - labels)
  convergence = claims.for_sweep("cpu_convergence")
  # The budget checks, then Table 2's three comparisons at each density and the growing gap.
  assert len(convergence) == 2 + 3 * 3 + 1
  assert len(sweeps.get_sweep("cpu_convergence")) == len(sweeps.STUDY_SEEDS) * (2 + 3 + 4 + 4)
  gap = convergence[-1]
  assert gap.rows == ("FBS-CondConv d=0.25, 30 epochs", "SCP d=0.25, 30 epochs",
                      "FBS-CondConv d=0.5, 30 epochs", "SCP d=0.5, 30 epochs")


def test_scaled_milestones():
  # 81*3/200 = 1.2 -> 1, 122*3/200 = 1.8 -> 2, 151*3/200 = 2.3 -> 2.
  assert sweeps.scaled_milestones((81, 122, 151), 3, 200) == "(1,2,)"
  assert sweeps.scaled_milestones((81, 122, 151), 200, 200) == "(81,122,151,)"


def test_job_command_with_dependency_data_and_extras():
  job = [j for j in sweeps.get_sweep("ftwt_cifar10") if j.depends_on][0]
  argv = run.job_command(job, "wd", data="d.npz", extra=[("num_epochs", "3")], python="py")
  assert argv == ["py", "-m", "dynjax.main", "--config=configs/ftwt_cifar.py:vgg16_bn,0.92,joint",
                  "--workdir=wd/ftwt_cifar_vgg16_bn_r0.92_joint",
                  "--config.init_from=wd/ftwt_cifar_vgg16_bn_baseline",
                  "--config.dataset.name=npz", "--config.dataset.path=d.npz",
                  "--config.num_epochs=3"]


def test_seeded_jobs_share_labels_and_chain_dependencies():
  jobs = sweeps.get_sweep("cpu_fbs_condconv")
  by_label = {}
  for job in jobs:
    by_label.setdefault(job.label, []).append(job)
  assert all(sorted(j.seed for j in group) == list(sweeps.STUDY_SEEDS)
             for group in by_label.values())
  first = jobs[0]
  assert first.name == "cpu_fbs_condconv_dense_s0" and ("seed", "0") in first.overrides
  assert ("model_kwargs.width_multiplier", "0.25") in first.overrides
  base = sweeps.Job("base", "c.py", "a")
  child = sweeps.seeded(sweeps.Job("child", "c.py", "b", depends_on="base"), 2, "p_")
  assert (child.name, child.depends_on, child.seed) == ("p_child_s2", "p_base_s2", 2)
  assert sweeps.seeded(base, 1).overrides == (("seed", "1"),)
  variants = sweeps.get_sweep("cpu_fbs_variants")
  assert {dict(j.overrides).get("dynamic.fbs_ties") for j in variants} == {"strict", None}
  assert {dict(j.overrides).get("dynamic.fbs_predictor_act") for j in variants} == {"layer", None}


def test_print_mode_lists_selected_commands(capsys):
  assert run.main(["fbs_condconv", "--print", "--only", r"fbs_condconv_d0\.(5|3)$"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines == [
      "python -m dynjax.main --config=configs/fbs_condconv.py:fbs_condconv,0.5 "
      "--workdir=workdirs/fbs_condconv_fbs_condconv_d0.5",
      "python -m dynjax.main --config=configs/fbs_condconv.py:fbs_condconv,0.3 "
      "--workdir=workdirs/fbs_condconv_fbs_condconv_d0.3"]
  with pytest.raises(ValueError, match="key=value"):
    run.parse_set(["num_epochs"])
  assert run.parse_set(["config.seed=1", "num_epochs=2"]) == [("seed", "1"), ("num_epochs", "2")]


def test_run_job_records_and_skips(tmp_path):
  workdir = str(tmp_path / "job")
  code = run.run_job([sys.executable, "-c", "print('trained')"], workdir)
  assert code == 0 and run.is_finished(workdir)
  with open(os.path.join(workdir, run.LOG_FILE)) as f:
    assert "trained" in f.read()
  record = json.load(open(os.path.join(workdir, run.RUN_RECORD)))
  assert record["returncode"] == 0 and record["seconds"] >= 0
  failing = str(tmp_path / "bad")
  assert run.run_job([sys.executable, "-c", "raise SystemExit(3)"], failing) == 3
  assert not run.is_finished(failing)
  assert results.read_job(failing).status == "failed"


def _fake_workdir(root, name, evals, macs_json=None, returncode=0):
  workdir = os.path.join(root, name)
  os.makedirs(workdir)
  with open(os.path.join(workdir, results.METRICS_FILE), "w") as f:
    f.write(json.dumps({"step": 5, "train_loss": 2.0}) + "\n")
    for step, top1 in evals:
      f.write(json.dumps({"step": step, "eval_top1": top1, "eval_active_fraction": 0.5}) + "\n")
    f.write(json.dumps({"step": evals[-1][0], "eval_dense_macs": 8e6,
                        "eval_dynamic_macs": 2e6, "eval_mac_reduction": 0.75}) + "\n")
    f.write('{"step": 99, "eval_top1"')  # a torn line from a killed writer
  if macs_json:
    json.dump(macs_json, open(os.path.join(workdir, results.MACS_FILE), "w"))
  if returncode is not None:
    json.dump({"returncode": returncode, "seconds": 12.5},
              open(os.path.join(workdir, results.RUN_RECORD), "w"))
  return workdir


def test_read_job_from_fake_workdir(tmp_path):
  _fake_workdir(str(tmp_path), "a", [(10, 0.5), (20, 0.625), (30, 0.6)],
                macs_json={"macs": 45.258e6, "dense_macs": 174.302e6})
  res = results.read_job(str(tmp_path / "a"))
  assert res.status == "done" and res.step == 30 and res.seconds == 12.5
  assert res.top1 == pytest.approx(60.0) and res.best_top1 == pytest.approx(62.5)
  assert (res.dense_macs, res.dynamic_macs) == (8.0, 2.0)
  assert res.reduction == pytest.approx(100 * (1 - 45.258 / 174.302))
  _fake_workdir(str(tmp_path), "b", [(10, 0.5)], returncode=None)
  running = results.read_job(str(tmp_path / "b"))
  assert running.status == "running" and running.reduction == pytest.approx(75.0)
  assert results.read_job(str(tmp_path / "absent")).status == "missing"


def test_markdown_table_and_plot(tmp_path):
  jobs = sweeps.get_sweep("fbs_condconv")[:2]  # dense, scp d=0.9
  _fake_workdir(str(tmp_path), jobs[0].name, [(10, 0.9484)],
                macs_json={"macs": 174.302e6, "dense_macs": 174.302e6})
  rows = collect.collect(jobs, str(tmp_path))
  table = collect.markdown_table(rows).splitlines()
  assert table[0].startswith("| run | paper top-1 | top-1 (final) | top-1 (best) | paper MACs")
  assert table[2] == ("| dense | 94.84 | 94.84 | 94.84 | 174.3 | 174.30 | – | 0.0% | 2.00 | done |")
  assert table[3] == "| SCP d=0.9 | 94.91 | – | – | 145.5 | – | 16.5% | – | – | missing |"
  md_path, png_path = collect.write_outputs("fbs_condconv", rows, str(tmp_path / "out"))
  with open(png_path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert open(md_path).read().count("\n| ") == 3


def test_paper_numbers():
  row = paper_numbers.seed_table2("fbs_condconv", 0.3)
  assert (row.top1, row.macs) == (92.05, 16.5)
  assert row.reduction == pytest.approx(100 * (1 - 16.5 / 174.3))
  assert paper_numbers.seed_table2("fbs", 0.5) is None  # FBS alone: figure only
  vgg = paper_numbers.ftwt_cifar10("vgg16_bn", 0.92, "joint")
  assert (vgg.top1, vgg.reduction) == (93.55, 65.0)
  assert vgg.macs == pytest.approx(313.478144 * 0.35)
  r34 = paper_numbers.ftwt_imagenet("resnet34", 0.93)
  assert (r34.top1, r34.reduction) == (72.17, 47.42)
  assert paper_numbers.ftwt_imagenet("mobilenet_v1", 0.0).top1 == 69.57


def test_load_config_applies_overrides():
  config = macs.load_config(f"{ROOT}/configs/ftwt_cifar.py", "vgg16_bn,0.85,decoupled", [
      ("num_epochs", "3"), ("model_kwargs.width_multiplier", "0.25"),
      ("optimizer.milestones", "(1,2,)"), ("dataset.path", "x.npz"), ("init_from", "w/b")])
  assert config.num_epochs == 3 and config.model_kwargs.width_multiplier == 0.25
  assert tuple(config.optimizer.milestones) == (1, 2)
  assert (config.dataset.path, config.init_from) == ("x.npz", "w/b")
  assert macs.convention_for(config) == ("ftwt_code", {})


@pytest.fixture
def tiny_npz(tmp_path):
  path = str(tmp_path / "tiny.npz")
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  np.savez(path, x_train=x, y_train=np.arange(4) % 10, x_test=x, y_test=np.arange(4) % 10)
  return path


def test_recount_reproduces_seed_table1(tiny_npz):
  # docs/methods.md#counting-macs: FBS at d = 0.3 without the expert-combination term is
  # 16.014 M MACs (fractional d*C), dense 174.302 M. One full-width count only:
  # the counter interprets every op, so each case costs seconds on a CPU.
  config = macs.load_config(f"{ROOT}/configs/fbs_condconv.py", "fbs,0.3", [
      ("dataset.name", "npz"), ("dataset.path", tiny_npz), ("batch_size", "4"),
      ("eval_batch_size", "4")])
  counted = macs.recount(config, workdir="unused")
  assert counted["convention"] == "fbs_condconv_paper"
  assert counted["macs"] / 1e6 == pytest.approx(16.014, abs=0.001)
  assert counted["dense_macs"] / 1e6 == pytest.approx(174.302, abs=0.001)


def test_force_reruns_from_a_clean_workdir(tmp_path, monkeypatch):
  job = sweeps.Job("only", "configs/x.py", "a")
  monkeypatch.setattr(sweeps, "SWEEPS", {"tiny": lambda: [job]})
  workdir = tmp_path / "only"
  run.run_job([sys.executable, "-c", "pass"], str(workdir))
  (workdir / "stale.txt").write_text("old checkpoint")
  calls = []
  monkeypatch.setattr(run, "run_job", lambda argv, wd: calls.append(wd) or 0)
  assert run.main(["tiny", "--workdir_root", str(tmp_path)]) == 0 and calls == []
  assert run.main(["tiny", "--workdir_root", str(tmp_path), "--force"]) == 0
  assert calls == [str(workdir)] and not (workdir / "stale.txt").exists()


def test_a_finished_dependency_without_its_checkpoint_is_trained_again(tmp_path, monkeypatch):
  base = sweeps.Job("base", "configs/x.py", "a")
  child = sweeps.Job("child", "configs/x.py", "b", depends_on="base")
  monkeypatch.setattr(sweeps, "SWEEPS", {"tiny": lambda: [base, child]})
  real_run_job = run.run_job
  real_run_job([sys.executable, "-c", "pass"], str(tmp_path / "base"))
  calls = []
  monkeypatch.setattr(run, "run_job", lambda argv, wd: calls.append(os.path.basename(wd)) or 0)
  # No checkpoint and an unfinished dependant: the base runs again first.
  assert run.main(["tiny", "--workdir_root", str(tmp_path)]) == 0
  assert calls == ["base", "child"]
  # With its checkpoint (or with every dependant finished) it is skipped.
  calls.clear()
  real_run_job([sys.executable, "-c", "pass"], str(tmp_path / "base"))
  (tmp_path / "base" / "checkpoints").mkdir()
  assert run.main(["tiny", "--workdir_root", str(tmp_path)]) == 0 and calls == ["child"]
  calls.clear()
  (tmp_path / "base" / "checkpoints").rmdir()
  real_run_job([sys.executable, "-c", "pass"], str(tmp_path / "child"))
  assert run.main(["tiny", "--workdir_root", str(tmp_path)]) == 0 and calls == []


def _plan(tmp_path, specs):
  """`(job, argv, workdir)` entries running `python -c <code>` per spec."""
  plan = []
  for name, depends, code in specs:
    job = sweeps.Job(name, "configs/x.py", "a", depends_on=depends)
    plan.append((job, [sys.executable, "-c", code], str(tmp_path / name)))
  return plan


def test_run_parallel_waits_for_dependencies_and_drops_dependants_of_failures(tmp_path):
  # `child` may start only after `base` wrote its file; `orphan` depends on a
  # failing job and never runs; `free` runs alongside.
  write = "import pathlib; pathlib.Path({!r}).write_text('x')"
  check = "import pathlib, sys; sys.exit(0 if pathlib.Path({!r}).exists() else 5)"
  marker = str(tmp_path / "base_ran")
  plan = _plan(tmp_path, [
      ("base", None, "import time; time.sleep(1.5); " + write.format(marker)),
      ("bad", None, "raise SystemExit(3)"),
      ("child", "base", check.format(marker)),
      ("orphan", "bad", "pass"),
      ("free", None, "pass"),
  ])
  failed = run.run_parallel(plan, parallel=3, poll_seconds=0.1)
  assert sorted(failed) == ["bad", "orphan"]
  for name in ("base", "child", "free"):
    assert run.is_finished(str(tmp_path / name)), name
  assert not run.is_finished(str(tmp_path / "bad"))
  assert not (tmp_path / "orphan").exists()


def test_run_parallel_stops_starting_and_stops_running_jobs_on_time(tmp_path):
  plan = _plan(tmp_path, [("slow", None, "import time; time.sleep(60)"),
                          ("later", None, "pass")])
  start = time.time()
  failed = run.run_parallel(plan, parallel=1, stop_after=0.5, kill_after=1.0, poll_seconds=0.1)
  assert time.time() - start < 30
  assert sorted(failed) == ["later", "slow"]
  # The stopped job is left unfinished (no run.json) and the other never started.
  assert not run.is_finished(str(tmp_path / "slow"))
  assert not (tmp_path / "later").exists()


def test_full_width_sweeps_change_only_the_width_and_the_names():
  cpu = {job.name: job for job in sweeps.get_sweep("cpu_convergence")}
  gpu = sweeps.get_sweep("gpu_fbs_condconv")
  assert len(gpu) == len(cpu)
  for job in gpu:
    twin = cpu["cpu_" + job.name.removeprefix("gpu_")]
    assert job.label == twin.label and job.seed == twin.seed
    assert dict(job.overrides)["model_kwargs.width_multiplier"] == "1.0"
    assert {k: v for k, v in job.overrides if k != "model_kwargs.width_multiplier"} == \
        {k: v for k, v in twin.overrides if k != "model_kwargs.width_multiplier"}
  ftwt = sweeps.get_sweep("gpu_ftwt")
  names = [job.name for job in ftwt]
  for job in ftwt:
    assert dict(job.overrides)["model_kwargs.width_multiplier"] == "1.0"
    if job.depends_on:  # every FTWT row starts from a full-width baseline listed before it
      assert job.depends_on.startswith("gpu_") and names.index(job.depends_on) < names.index(job.name)


def test_gpu_study_script_runs_its_sweeps_and_packs_the_results(tmp_path):
  # No job matches: the script must still record the environment, run each
  # sweep's runner, and leave an (empty) archive of results.
  import subprocess  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  env = dict(os.environ, OUT=str(out), GPU_STUDY_ROOT=str(tmp_path / "runs"),
             PYTHON=sys.executable, GPU_STUDY_SWEEPS="gpu_fbs_condconv:2 gpu_ftwt:1",
             GPU_STUDY_ARGS="--only=no-such-job")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(["bash", "experiments/gpu_study.sh", "60"], cwd=root, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "jax" in (out / "env.txt").read_text()
  for sweep in ("gpu_fbs_condconv", "gpu_ftwt"):
    assert (out / f"run_{sweep}.log").exists()
  with tarfile.open(out / "gpu_results.tgz") as archive:
    assert archive.getnames() == []


def test_the_gpu_ftwt_warmup_sweep_warms_up_only_the_rows_trained_from_scratch():
  plain = {job.name: job for job in sweeps.get_sweep("gpu_ftwt")}
  for job in sweeps.get_sweep("gpu_ftwt_warmup"):
    twin = plain[job.name.replace("gpu_warmup_", "gpu_", 1)]
    assert job.label == twin.label
    warmup = dict(job.overrides).get("optimizer.warmup_epochs")
    if job.depends_on:  # the FTWT stage starts from its own family's baseline, unchanged
      assert warmup is None and job.depends_on.startswith("gpu_warmup_")
      assert job.overrides == twin.overrides
    else:
      assert warmup == str(sweeps.GPU_WARMUP_EPOCHS)
