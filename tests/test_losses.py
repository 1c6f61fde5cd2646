"""Losses against hand-computed values.

Definitions: docs/methods.md#mask-loss-and-cooldown, #lasso and #weight-decay.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from dynjax.train import losses


def bce_with_logits(x, y):
  return math.log1p(math.exp(x)) - x * y


def test_cross_entropy_plain_and_label_smoothing():
  logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
  labels = jnp.array([2, 0])
  log_z = math.log(math.e + math.e ** 2 + math.e ** 3)
  logp0 = [1 - log_z, 2 - log_z, 3 - log_z]
  logp1 = [-math.log(3)] * 3
  expected = (-logp0[2] - logp1[0]) / 2
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-6)
  # s = 0.3, K = 3: targets 0.7 * onehot + 0.1.
  t0 = [0.1, 0.1, 0.8]
  t1 = [0.8, 0.1, 0.1]
  smoothed = (-sum(t * l for t, l in zip(t0, logp0)) - sum(t * l for t, l in zip(t1, logp1))) / 2
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, 0.3), smoothed, rtol=1e-6)


def _ftwt_layers():
  layer_a = {"gate_logits": jnp.array([[0.0, 2.0], [-1.0, 0.0]]),
             "target": jnp.array([[1.0, 0.0], [0.0, 1.0]]),
             "mask": jnp.array([[0.0, 1.0], [0.0, 0.0]])}
  layer_b = {"gate_logits": jnp.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]]),
             "target": jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
             "mask": jnp.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])}
  return [("conv0", layer_a), ("conv1", layer_b)]


def test_ftwt_mask_loss_sums_channels_means_batch_and_layers():
  # Layer A: channel 0: (BCE(0,1) + BCE(-1,0)) / 2; channel 1: (BCE(2,0) + BCE(0,1)) / 2.
  a = ((bce_with_logits(0, 1) + bce_with_logits(-1, 0)) / 2 +
       (bce_with_logits(2, 0) + bce_with_logits(0, 1)) / 2)
  b = ((bce_with_logits(1, 1) + bce_with_logits(0.5, 0)) / 2 +
       (bce_with_logits(-2, 1) + bce_with_logits(0, 0)) / 2 +
       (bce_with_logits(3, 0) + bce_with_logits(-1, 0)) / 2)
  np.testing.assert_allclose(a, (0.693147 + 0.313262) / 2 + (2.126928 + 0.693147) / 2, atol=1e-5)
  np.testing.assert_allclose(losses.ftwt_mask_loss(_ftwt_layers()), (a + b) / 2, rtol=1e-6)


def test_ftwt_mask_loss_ignores_fbs_layers_and_is_zero_without_ftwt():
  fbs_only = [("conv0", {"mask": jnp.ones((2, 3)), "saliency": jnp.ones((2, 3))})]
  assert float(losses.ftwt_mask_loss(fbs_only)) == 0.0
  mixed = _ftwt_layers() + fbs_only
  np.testing.assert_allclose(losses.ftwt_mask_loss(mixed),
                             losses.ftwt_mask_loss(_ftwt_layers()), rtol=1e-7)


@pytest.mark.parametrize("epoch,expected", [(0, 1.0), (99, 1.0), (100, 0.0), (199, 0.0)])
def test_ftwt_mask_weight_cooldown(epoch, expected):
  # 200 epochs, cooldown 0.5: gates train in epochs 0-99 (docs/methods.md#mask-loss-and-cooldown).
  assert float(losses.ftwt_mask_weight(epoch, 200, 1.0, 0.5)) == expected


def test_ftwt_mask_accuracy():
  # Layer A: only entry (1, 0) agrees -> 1/4; layer B: (1,0,1 vs 1,1,0) + (1,0,0 vs 0,0,0)
  # -> 1 + 2 of 6.
  np.testing.assert_allclose(losses.ftwt_mask_accuracy(_ftwt_layers()), (0.25 + 0.5) / 2)
  assert losses.ftwt_mask_accuracy([("c", {"mask": jnp.ones((1, 2))})]) is None


def test_fbs_lasso_batch_mean_of_l1_summed_over_layers():
  layers = [("conv0", {"mask": jnp.ones((2, 2)), "saliency": jnp.array([[1.0, 2.0], [3.0, 0.0]])}),
            ("conv1", {"mask": jnp.ones((2, 1)), "saliency": jnp.array([[0.5], [1.5]])})]
  # conv0: mean_n sum_c = (3 + 3) / 2 = 3; conv1: (0.5 + 1.5) / 2 = 1.
  np.testing.assert_allclose(losses.fbs_lasso(layers, 1e-8), 4e-8, rtol=1e-6)
  assert float(losses.fbs_lasso(layers, 0.0)) == 0.0


def test_l2_penalty_covers_conv_expert_and_logits_kernels_only():
  params = {
      "conv0": {"conv": {"kernel": jnp.array([1.0, 2.0])},     # 5
                "bn": {"scale": jnp.array([3.0])},
                "predictor": {"fc": {"kernel": jnp.array([4.0])}},
                "beta": jnp.array([7.0])},
      "conv1": {"conv": {"experts": jnp.array([[1.0], [1.0]]),  # 2
                         "router": {"kernel": jnp.array([9.0])}},
                "gate": {"fc": {"kernel": jnp.array([5.0])}}},
      "logits": {"kernel": jnp.array([2.0]), "bias": jnp.array([5.0])},  # 4
  }
  np.testing.assert_allclose(losses.l2_kernel_penalty(params, 1e-4), 1e-4 * 11 / 2, rtol=1e-6)
  assert float(losses.l2_kernel_penalty(params, 0.0)) == 0.0


def test_gated_layers_groups_the_collection_by_module():
  dynamic = {"conv0": {"mask": jnp.ones((2, 3)), "saliency": jnp.ones((2, 3))},
             "block": {"conv1": {"mask": jnp.zeros((2, 4)), "gate_logits": jnp.ones((2, 4)),
                                 "target": jnp.ones((2, 4))}},
             "conv2": {"conv": {"alpha": jnp.ones((2, 4))}}}  # CondConv only: no mask
  layers = losses.gated_layers(dynamic)
  assert [p for p, _ in layers] == ["conv0", "block/conv1"]
  assert sorted(layers[1][1]) == ["gate_logits", "mask", "target"]
  fractions = losses.active_fractions(layers)
  assert float(fractions["conv0"]) == 1.0 and float(fractions["block/conv1"]) == 0.0
  assert losses.gated_layers(None) == []


def test_topk_correct():
  logits = jnp.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
  np.testing.assert_array_equal(losses.topk_correct(logits, jnp.array([2, 0]), 1), [0.0, 1.0])
  np.testing.assert_array_equal(losses.topk_correct(logits, jnp.array([2, 1]), 2), [1.0, 1.0])
