"""The multi-seed study: statistics, convergence, claims and figures on fake workdirs."""

import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from experiments import claims, collect, stats, study, sweeps  # noqa: E402


def test_student_t_interval_by_hand():
  # mean 2, s = 1, n = 3: half = t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051.
  est = stats.estimate([1.0, 2.0, 3.0])
  assert est.mean == 2.0 and est.n == 3
  assert est.half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
  assert est.text() == "2.00 ± 2.48"
  assert math.isnan(stats.estimate([5.0]).half) and stats.estimate([5.0]).text() == "5.00"
  assert stats.estimate([]).text() == "–"


def test_welch_difference_and_verdicts():
  # Equal variances and sizes: dof = 4, se = sqrt(1/3 + 1/3).
  diff = stats.difference([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
  assert diff.mean == 3.0
  assert diff.half == pytest.approx(2.776445 * math.sqrt(2 / 3), rel=1e-5)
  assert stats.verdict(diff) == "holds"  # 3 - 2.27 > 0
  assert stats.verdict(stats.difference([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])) == "fails"
  assert stats.verdict(stats.difference([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])) == "inconclusive"
  assert stats.verdict(stats.difference([4.0, 5.0], [1.0, 2.0])) == "inconclusive"  # 2 seeds
  dd = stats.difference_of_differences([5, 6, 7], [1, 2, 3], [2, 3, 4], [1, 2, 3])
  assert dd.mean == pytest.approx(3.0)
  # Four groups of variance 1, n = 3: se = sqrt(4/3), dof = (4/3)^2 / (4 * (1/3)^2 / 2) = 8.
  assert dd.half == pytest.approx(2.306004 * math.sqrt(4 / 3), rel=1e-5)


def test_convergence_rule():
  flat = [(i * 10, v) for i, v in enumerate([20, 40, 50, 55, 58, 59.0, 60.0, 59.5])]
  assert study.final_spread(flat) == pytest.approx(1.0) and study.converged(flat)
  rising = flat[:-3] + [(60, 52.0), (70, 56.0), (80, 60.0)]
  assert not study.converged(rising)
  chance = [(i, 11.0) for i in range(5)]
  assert not study.converged(chance)  # flat, but at chance
  assert not study.converged(flat[:2])


def _write_run(root, name, top1_curve, macs=(2.0, 8.0), mask_acc=None, seconds=10.0):
  workdir = os.path.join(root, name)
  os.makedirs(workdir)
  records = [{"step": step, "eval_top1": top1 / 100} for step, top1 in top1_curve]
  records += [{"step": step, "train_ftwt_mask_accuracy": acc} for step, acc in (mask_acc or [])]
  records.sort(key=lambda r: r["step"])  # in the order a trainer writes them
  records.append({"step": top1_curve[-1][0], "eval_dense_macs": macs[1] * 1e6,
                  "eval_dynamic_macs": macs[0] * 1e6})
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
  json.dump({"returncode": 0, "seconds": seconds}, open(os.path.join(workdir, "run.json"), "w"))


def _curve(final):
  return [(s, final - 30 + min(30, 6 * i)) for i, s in enumerate(range(0, 100, 10))]


def test_fbs_claims_from_fake_rows(tmp_path):
  jobs = sweeps.get_sweep("cpu_fbs_condconv")
  finals = {"SCP": 50.0, "SCP-CondConv": 52.0, "FBS": 51.0, "FBS-CondConv": 56.0, "dense": 60.0}
  for job in jobs:
    series = job.series
    final = finals[series] + 0.5 * job.seed
    if job.label.endswith("d=0.5") and series == "FBS-CondConv":
      final -= 4.0  # the FBS-CondConv - SCP gap at d = 0.5 is 2, at 0.25 it is 6
    _write_run(str(tmp_path), job.name, _curve(final))
  rows = study.aggregate(jobs, str(tmp_path))
  assert [len(r.done) for r in rows] == [3] * len(rows)
  verdicts = {c.text: o.verdict for c, o in claims.evaluate(claims.for_sweep("cpu_fbs_condconv"), rows)}
  assert verdicts["FBS-CondConv beats SCP at d=0.25 (top-1)"] == "holds"
  assert verdicts["SCP-CondConv beats SCP at d=0.3 (top-1)"] == "holds"
  # 52 vs 51 with seed spread 0.5 each: +1 +- 1.13, straddles 0.
  assert verdicts["FBS-CondConv beats FBS at d=0.5 (top-1)"] == "inconclusive"
  assert verdicts["the FBS-CondConv - SCP gap grows as d falls (d=0.5 -> d=0.25)"] == "holds"
  table = study.markdown_table(rows)
  assert "| dense | 3/3 | 60.50 ± 1.24 |" in table
  # One unconverged seed makes its claims inconclusive, with the reason.
  bad = [j for j in jobs if j.label == "SCP d=0.25" and j.seed == 1][0]
  with open(os.path.join(tmp_path, bad.name, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 200, "eval_top1": 0.2}) + "\n")
  rows = study.aggregate(jobs, str(tmp_path))
  outcome = dict((c.text, o) for c, o in claims.evaluate(claims.fbs_condconv_claims(), rows))[
      "FBS-CondConv beats SCP at d=0.25 (top-1)"]
  assert outcome.verdict == "inconclusive" and "did not converge" in outcome.detail
  sweep = "cpu_fbs_condconv"
  assert collect.collect_study(sweep, jobs, str(tmp_path), str(tmp_path / "out")) == 0
  for name in (f"{sweep}.png", f"{sweep}_curves.png"):
    with open(tmp_path / "out" / name, "rb") as f:
      assert f.read(4) == b"\x89PNG"
  assert (tmp_path / "out" / f"{sweep}.md").read_text().startswith("<!-- generated")


def _fake_vgg_ftwt_rows(root, macs, top1, mask_acc=False):
  """Three seeds of every VGG row of `cpu_ftwt`, keyed by the run name's tail
  (`baseline`, `r0.92_joint`, `static_w0.5`, ...), seeds 0.3 points apart."""
  jobs = [j for j in sweeps.get_sweep("cpu_ftwt") if j.name.startswith("cpu_ftwt_cifar_vgg16_bn")]
  for job in jobs:
    key = job.name[len("cpu_ftwt_cifar_vgg16_bn_"):-3]
    gated = mask_acc and key.startswith("r0")
    _write_run(root, job.name, _curve(top1[key] + 0.3 * job.seed),
               macs=(macs[key] + 0.05 * job.seed, 8.0),
               mask_acc=[(10, 0.6), (50, 0.8 + 0.01 * job.seed)] if gated else None)
  return study.aggregate(jobs, root)


def test_ftwt_claims_pruning_static_and_mask_accuracy(tmp_path):
  macs = {"baseline": 8.0, "r0.92_joint": 4.0, "r0.92_decoupled": 5.0, "r0.85_decoupled": 3.0,
          "r0.88_joint": 3.5, "static_w0.5": 2.5, "static_w0.75": 4.5}
  top1 = {"baseline": 60.0, "r0.92_joint": 59.0, "r0.92_decoupled": 59.5, "r0.85_decoupled": 58.5,
          "r0.88_joint": 55.0, "static_w0.5": 53.0, "static_w0.75": 56.0}
  rows = _fake_vgg_ftwt_rows(str(tmp_path), macs, top1, mask_acc=True)
  outcomes = {c.text: o for c, o in claims.evaluate(claims.ftwt_claims(), rows)}
  assert outcomes["a lower r prunes more (VGG-16-BN decoupled, r = 0.85 vs 0.92)"].verdict == "holds"
  assert outcomes["at equal r, joint prunes more than decoupled (VGG-16-BN, r = 0.92)"].verdict == "holds"
  assert outcomes["accuracy holds at r = 0.92 (vgg16_bn decoupled): loses < 2 points"].verdict == "holds"
  assert outcomes["accuracy holds at r = 0.88 (vgg16_bn joint): loses < 2 points"].verdict == "fails"
  static = outcomes["FTWT beats a static network of at least its MACs (vgg16_bn r = 0.92 joint)"]
  assert static.verdict == "holds" and "vgg16_bn static w=0.75" in static.detail
  none = outcomes["FTWT beats a static network of at least its MACs (vgg16_bn r = 0.92 decoupled)"]
  assert none.verdict == "inconclusive" and "no static row" in none.detail
  mask = outcomes["the gates' mask accuracy rises during the gate phase (vgg16_bn r = 0.92)"]
  assert mask.verdict == "holds" and mask.value.mean == pytest.approx(21.0)
  assert outcomes["MobileNetV1 at r = 1 prunes substantially (reduction above 50%, decoupled)"
                  ].verdict == "inconclusive"
  study.plot_family_extras("cpu_ftwt", rows, str(tmp_path / "out"))
  assert os.path.exists(tmp_path / "out" / "cpu_ftwt_pruning_vs_r.png")
  assert os.path.exists(tmp_path / "out" / "cpu_ftwt_mask_accuracy.png")


def test_replace_block(tmp_path):
  path = tmp_path / "r.md"
  path.write_text("# T\n<!-- begin s -->\nold\n<!-- end s -->\ntail\n")
  collect.replace_block(str(path), "s", "new\ntable\n")
  assert path.read_text() == "# T\n<!-- begin s -->\nnew\ntable\n<!-- end s -->\ntail\n"
  with pytest.raises(ValueError, match="no '<!-- begin x -->'"):
    collect.replace_block(str(path), "x", "y")


def test_layer_statistics_by_hand():
  import numpy as np
  from experiments import diagnose
  fbs = {"conv0": {"mask": np.array([[1, 1, 0, 0], [1, 0, 1, 0]], np.float32),
                   "saliency": np.array([[2.0, 0.0, 0.0, 0.0], [1.0, 0.5, 3.0, 0.0]], np.float32)}}
  ftwt = {"conv0": {"mask": np.array([[1, 0, 1, 0]], np.float32),
                    "target": np.array([[1, 1, 1, 0]], np.float32),
                    "gate_logits": np.array([[1.0, -1.0, 3.0, -3.0]], np.float32)}}
  stats_fbs = diagnose.layer_statistics([fbs, {"conv0": {k: v[:1] for k, v in fbs["conv0"].items()}}])
  row = stats_fbs["conv0"]
  # 3 batches' worth of rows: [1,1,0,0], [1,0,1,0], [1,1,0,0] -> 6 of 12 active.
  assert row["active"] == 0.5 and row["union"] == 0.75 and row["dead"] == 0.25
  # Winners: 6, of which saliency 0 at (row 0, ch 1) twice -> 2/6.
  assert row["zero_win"] == pytest.approx(2 / 6)
  # Channel 0 is on for all three rows, 1 for two, 2 for one, 3 for none.
  assert row["always"] == 0.25 and row["varies"] == 0.5
  assert row["flip"] == pytest.approx((0 + 1 / 3 + 1 / 3 + 0) / 4)
  static = diagnose.layer_statistics([{"conv0": {"mask": np.array([[1, 0, 1]] * 5, np.float32)}}])
  assert static["conv0"]["varies"] == 0.0 and static["conv0"]["flip"] == 0.0
  table = diagnose.summary_table({"FBS": [stats_fbs, stats_fbs], "static": [static]})
  lines = table.splitlines()
  assert lines[2].startswith("| FBS | 2 | 1 | 0.500 ± 0.000 | 0.750 ± 0.000 | 0.250 ± 0.000")
  assert lines[2].endswith("| – | – |")  # no targets in FBS
  assert lines[3] == "| static | 1 | 1 | 0.667 | 0.667 | 0.667 | 0.000 | 0.000 | – | – |"
  row = diagnose.layer_statistics([ftwt])["conv0"]
  assert row["mask_acc"] == 0.75 and row["target_active"] == 0.75
  assert row["target_flip"] == 0.0  # one example: nothing varies
  two = {"conv0": {"mask": np.array([[1, 1, 1, 0]] * 2, np.float32),
                   "target": np.array([[1, 1, 1, 0], [0, 1, 1, 0]], np.float32)}}
  fixed = diagnose.layer_statistics([two])["conv0"]
  # Channel 0's target is on for half the examples: the best fixed gate gets 7 of 8 right.
  assert fixed["target_flip"] == 0.125 and fixed["mask_acc"] == 1 - 0.125 and fixed["flip"] == 0.0
  assert row["logit_mean"] == 0.0 and row["logit_std"] == pytest.approx(np.sqrt(5.0))


def test_exact_reduction_of_static_rows_uses_the_dense_baseline(tmp_path):
  # dense: 8 M MACs; SCP: a narrow static network of 2 M (its own dense count is
  # also 2 M); FBS: 2 M of 8 M. SCP's exact reduction is 75% of the dense row.
  jobs = [j for j in sweeps.get_sweep("cpu_fbs_condconv")
          if j.label in ("dense", "SCP d=0.25", "FBS d=0.25")]
  for job in jobs:
    macs = {"dense": (8.0, 8.0), "SCP d=0.25": (2.0, 2.0), "FBS d=0.25": (2.0, 8.0)}[job.label]
    _write_run(str(tmp_path), job.name, _curve(50.0), macs=macs)
  rows = study.by_label(study.aggregate(jobs, str(tmp_path)))
  ref = study.reference_row(list(rows.values()), rows["SCP d=0.25"])
  assert ref is rows["dense"]
  assert study.reduction_values(rows["SCP d=0.25"], exact=True, reference=ref) == [75.0] * 3
  assert study.reduction_values(rows["FBS d=0.25"], exact=True, reference=ref) == [75.0] * 3
  assert study.reduction_values(rows["dense"], exact=True, reference=ref) == [0.0] * 3
  # Without a reference a static network is compared with itself.
  assert study.reduction_values(rows["SCP d=0.25"], exact=True) == [0.0] * 3


def test_a_row_of_a_longer_recipe_is_compared_with_the_dense_row_of_that_recipe():
  def row(label):
    return study.Row(label, label, [], [], [])
  rows = [row("dense, 30 epochs"), row("SCP d=0.25, 30 epochs"), row("dense, 60 epochs"),
          row("SCP d=0.25, 60 epochs"), row("vgg16_bn baseline"), row("vgg16_bn static w=0.5")]
  assert study.reference_row(rows, rows[1]) is rows[0]
  assert study.reference_row(rows, rows[3]) is rows[2]
  assert study.reference_row(rows, rows[5]) is rows[4]
  assert study.reference_row(rows[1:2], rows[1]) is None


def test_variant_claims_compare_with_the_default_rows(tmp_path):
  jobs = sweeps.compared_rows("cpu_fbs_variants") + sweeps.get_sweep("cpu_fbs_variants")
  assert {j.label for j in jobs} >= {"FBS d=0.25", "FBS d=0.25 (strict)",
                                     "FBS-CondConv d=0.25 (swishpred)"}
  for job in jobs:
    final = 50.0 + 0.5 * job.seed + (5.0 if job.label == "FBS d=0.25 (strict)" else 0.0)
    _write_run(str(tmp_path), job.name, _curve(final))
  rows = study.aggregate(jobs, str(tmp_path))
  verdicts = {c.text: o for c, o in claims.evaluate(claims.for_sweep("cpu_fbs_variants"), rows)}
  strict = verdicts["the strict tie rule (official code) beats dynjax's default for FBS d=0.25 (top-1)"]
  assert strict.verdict == "holds" and abs(strict.value.mean - 5.0) < 1e-9
  swish = verdicts["the layer's activation in the predictor (official code) beats dynjax's default "
                   "for FBS-CondConv d=0.25 (top-1)"]
  assert swish.verdict == "inconclusive" and abs(swish.value.mean) < 1e-9


def test_cheaper_and_more_accurate_static_network_refutes_ftwt(tmp_path):
  # FTWT at 6 M MACs; both static networks are cheaper (2.5 M, 4.5 M). The
  # dearer one is 6 points more accurate: a claim that FTWT beats a static
  # network of its MACs fails. Where the cheaper static row is less accurate
  # nothing follows, and the verdict stays inconclusive.
  macs = {"baseline": 8.0, "r0.92_joint": 6.0, "r0.92_decoupled": 6.0, "r0.85_decoupled": 5.0,
          "r0.88_joint": 5.5, "static_w0.5": 2.5, "static_w0.75": 4.5}
  top1 = {"baseline": 60.0, "r0.92_joint": 54.0, "r0.92_decoupled": 62.0, "r0.85_decoupled": 58.5,
          "r0.88_joint": 55.0, "static_w0.5": 53.0, "static_w0.75": 60.0}
  rows = _fake_vgg_ftwt_rows(str(tmp_path), macs, top1)
  outcomes = {c.text: o for c, o in claims.evaluate(claims.ftwt_claims(), rows)}
  worse = outcomes["FTWT beats a static network of at least its MACs (vgg16_bn r = 0.92 joint)"]
  assert worse.verdict == "fails" and worse.value.mean == pytest.approx(-6.0)
  assert "cheaper vgg16_bn static w=0.75" in worse.detail
  better = outcomes["FTWT beats a static network of at least its MACs (vgg16_bn r = 0.92 decoupled)"]
  assert better.verdict == "inconclusive" and better.value.mean == pytest.approx(2.0)
  assert "no static row" in better.detail


def test_metrics_of_a_restarted_run_keep_only_the_final_run(tmp_path):
  from experiments import results as results_lib
  lines = [{"step": 20, "train_loss": 2.0}, {"step": 40, "eval_top1": 0.3},
           {"step": 60, "eval_top1": 0.4},
           # killed, resumed from the step-40 checkpoint: 60 is superseded
           {"step": 40, "eval_top1": 0.31}, {"step": 60, "eval_top1": 0.45},
           # killed again without a checkpoint: restarted from scratch
           {"step": 20, "train_loss": 2.1}, {"step": 40, "eval_top1": 0.32},
           {"step": 60, "eval_top1": 0.5}]
  (tmp_path / results_lib.METRICS_FILE).write_text(
      "\n".join(json.dumps(line) for line in lines) + "\n{\"step\": 8")
  assert results_lib.read_metrics(str(tmp_path)) == lines[5:]
  assert study.eval_curve(str(tmp_path)) == [(40, 32.0), (60, 50.0)]


def test_ftwt_budget_claims_compare_the_longer_baseline(tmp_path):
  jobs = sweeps.compared_rows("cpu_ftwt_budget") + sweeps.get_sweep("cpu_ftwt_budget")
  labels = {j.label for j in jobs}
  assert {"vgg16_bn baseline, 25 epochs", "vgg16_bn baseline", "vgg16_bn static w=0.75"} <= labels
  # The longer baseline runs the static comparators' recipe without the pruning.
  longer = [j for j in jobs if j.label == "vgg16_bn baseline, 25 epochs"][0]
  static = [j for j in jobs if j.label == "vgg16_bn static w=0.75"][0]
  assert set(static.overrides) - set(longer.overrides) == {
      ("dynamic.method", "static"), ("dynamic.density", "0.75")}
  finals = {"vgg16_bn baseline, 25 epochs": 72.0, "vgg16_bn baseline": 67.0,
            "vgg16_bn static w=0.75": 70.0}
  for job in jobs:
    if job.label in finals:
      _write_run(str(tmp_path), job.name, _curve(finals[job.label] + 0.2 * job.seed))
  rows = study.aggregate([j for j in jobs if j.label in finals], str(tmp_path))
  outcomes = [o for _, o in claims.evaluate(claims.for_sweep("cpu_ftwt_budget"), rows)]
  assert [o.verdict for o in outcomes] == ["holds", "holds"]
  assert [o.value.mean for o in outcomes] == [pytest.approx(5.0), pytest.approx(2.0)]


def test_probe_features_are_what_the_gate_reads():
  """The captured features, through each gate's own fc, give its recorded logits,
  and the targets/masks are the layer's."""
  import jax
  import numpy as np
  from experiments import diagnose
  from dynjax import models
  from dynjax.layers.gating import gated_layers
  from flax import traverse_util
  model = models.create("mcifarnet", dynamic=dict(method="ftwt", mass=0.9), width_multiplier=0.125)
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (12, 10, 10, 3)))
  variables = model.init(jax.random.PRNGKey(1), x[:2], train=False)
  captured = diagnose._gate_features_and_targets(model, variables, x, batch=5)
  _, state = model.apply(variables, x, train=False, mutable=["dynamic"])
  recorded = dict(gated_layers(state["dynamic"]))
  params = traverse_util.flatten_dict(variables["params"], sep="/")
  assert set(captured) == set(recorded) and len(captured) >= 3
  for path, (features, target, mask) in captured.items():
    assert features.shape[0] == 12
    np.testing.assert_allclose(features.sum(axis=1), 1.0, rtol=1e-5)  # softmax over channels
    logits = features @ params[f"{path}/gate/fc/kernel"] + params[f"{path}/gate/fc/bias"]
    np.testing.assert_allclose(logits, recorded[path]["gate_logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(target, recorded[path]["target"])
    np.testing.assert_array_equal(mask, recorded[path]["mask"])


def test_probe_scores_by_hand():
  import numpy as np
  from experiments import diagnose
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 5))
  # Channel 0 follows the sign of feature 2 (learnable), channel 1 is always on.
  target = np.stack([x[:, 2] > 0, np.ones(400, bool)], axis=1).astype(np.float32)
  mask = np.ones_like(target)  # a gate that ignores its input: always on
  train = {"conv0": (x[:300], target[:300], mask[:300])}
  test = {"conv0": (x[300:], target[300:], mask[300:])}
  row = diagnose.probe_scores(train, test)["conv0"]
  on = target[300:, 0].mean()
  assert row["mask_acc"] == row["fixed_acc"] == (on + 1) / 2  # majority of channel 0 is on
  assert row["probe_acc"] > 0.97


def _flat_row(label, values):
  """A finished, converged row with final top-1 `values` (one per seed)."""
  jobs = [sweeps.Job(f"{label}{s}", "c.py", "a", label=label, seed=s) for s in range(len(values))]
  runs = [study.results_lib.JobResult(status="done", top1=v) for v in values]
  return study.Row(label, label, jobs, runs, [[(1, v - 0.5), (2, v), (3, v)] for v in values])


def test_a_failed_recipe_check_voids_the_claims_on_its_architecture():
  row = _flat_row
  gated = claims.Claim("ftwt", "x holds", "", ("vgg16_bn r=0.9 decoupled", "vgg16_bn baseline"),
                       claims.better_accuracy("vgg16_bn r=0.9 decoupled", "vgg16_bn baseline"))
  guarded = claims.with_recipe_checks([gated])
  assert [c.family for c in guarded] == ["recipe", "ftwt"]
  trained = {r.label: r for r in (row("vgg16_bn baseline", [60, 61, 62]),
                                   row("vgg16_bn static w=0.5", [59, 60, 61]),
                                   row("vgg16_bn r=0.9 decoupled", [70, 71, 72]))}
  assert guarded[0].test(trained).verdict == "inconclusive"
  assert guarded[1].test(trained).verdict == "holds"
  # A baseline 30 points below its half-width static network did not train:
  # the same comparison no longer counts.
  untrained = dict(trained, **{"vgg16_bn baseline": row("vgg16_bn baseline", [30, 31, 32])})
  assert guarded[0].test(untrained).verdict == "fails"
  outcome = guarded[1].test(untrained)
  assert outcome.verdict == "inconclusive" and "recipe check fails" in outcome.detail


def test_a_holding_budget_check_voids_the_claims_of_the_shorter_recipe():
  row = _flat_row
  claim = claims.Claim("x", "A beats B", "", ("A", "B"), claims.better_accuracy("A", "B"))
  guarded = claims.with_budget_checks([claim], [("dense", "dense, 30 epochs")])
  assert [c.family for c in guarded] == ["budget", "x"]
  base = {r.label: r for r in (row("A", [70, 71, 72]), row("B", [60, 61, 62]),
                               row("dense", [75, 76, 77]))}
  # The longer run is no better: the shorter recipe's verdict stands.
  same = dict(base, **{"dense, 30 epochs": row("dense, 30 epochs", [75, 76.5, 76])})
  assert guarded[0].test(same).verdict == "inconclusive"
  assert guarded[1].test(same).verdict == "holds"
  # Twice the epochs add 8 points: the recipe had not converged, no verdict.
  longer = dict(base, **{"dense, 30 epochs": row("dense, 30 epochs", [83, 84, 85])})
  assert guarded[0].test(longer).verdict == "holds"
  outcome = guarded[1].test(longer)
  assert outcome.verdict == "inconclusive" and "under-trained" in outcome.detail
  # A budget check whose longer rows do not exist yet voids nothing.
  assert guarded[1].test(base).verdict == "holds"
