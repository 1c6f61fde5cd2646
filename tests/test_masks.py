"""Hand-checked cases for the pure mask functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynjax.layers import masks


def test_wta_mask_exactly_k_per_row_with_ties():
  scores = jnp.array([[0.1, 0.9, 0.5, 0.7],
                      [1.0, 1.0, 1.0, 1.0],   # all tied: lowest indices win
                      [0.2, 0.5, 0.5, 0.1]])  # tie at the k-th place
  mask = masks.wta_mask(scores, 2)
  np.testing.assert_array_equal(mask, [[0, 1, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0]])
  np.testing.assert_array_equal(masks.wta_mask(scores, 1).sum(-1), [1, 1, 1])
  tie3 = jnp.array([[0.3, 0.5, 0.5, 0.5, 0.1]])
  np.testing.assert_array_equal(masks.wta_mask(tie3, 2), [[0, 1, 1, 0, 0]])
  np.testing.assert_array_equal(masks.wta_mask(scores, 4), jnp.ones_like(scores))


def test_wta_mask_jit_batched_and_no_gradient():
  scores = jax.random.normal(jax.random.PRNGKey(0), (64, 33))
  mask = jax.jit(masks.wta_mask, static_argnums=1)(scores, 7)
  np.testing.assert_array_equal(mask.sum(-1), np.full(64, 7))
  # The 7 winners are the 7 largest.
  kth = np.sort(np.asarray(scores), axis=-1)[:, -7]
  assert np.all(np.asarray(scores)[np.asarray(mask) == 1].reshape(64, 7) >= kth[:, None])
  grad = jax.grad(lambda s: jnp.sum(masks.wta_mask(s, 7) * 3.0))(scores)
  np.testing.assert_array_equal(grad, 0.0)
  with pytest.raises(ValueError):
    masks.wta_mask(scores, 0)


def test_strict_wta_mask_follows_the_official_tie_rule():
  scores = jnp.array([[0.1, 0.9, 0.5, 0.7],    # no ties: the same 2 winners as wta_mask
                      [1.0, 1.0, 1.0, 1.0],    # all tied: nobody is above the 3rd value
                      [0.2, 0.5, 0.5, 0.1],    # tie at the k-th place: both above 0.2 win
                      [0.0, 0.3, 0.0, 0.0],    # one positive score: zeros lose
                      [0.4, 0.5, 0.5, 0.5]])   # tie across the k-th and (k+1)-th: none win
  mask = masks.strict_wta_mask(scores, 2)
  np.testing.assert_array_equal(mask, [[0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0],
                                       [0, 0, 0, 0]])
  np.testing.assert_array_equal(masks.fbs_mask(scores, 2, "exact_k"), masks.wta_mask(scores, 2))
  np.testing.assert_array_equal(masks.fbs_mask(scores, 2, "strict"), mask)
  np.testing.assert_array_equal(masks.strict_wta_mask(scores, 4), jnp.ones_like(scores))
  grad = jax.grad(lambda s: jnp.sum(masks.strict_wta_mask(s, 2) * 3.0))(scores)
  np.testing.assert_array_equal(grad, 0.0)
  with pytest.raises(ValueError, match="tie rule"):
    masks.fbs_mask(scores, 2, "loose")


@pytest.mark.parametrize("d,c,k", [(1.0, 64, 64), (0.5, 64, 32), (0.3, 64, 20),
                                   (0.7, 10, 7), (0.25, 192, 48), (0.01, 10, 1)])
def test_num_winners_is_ceil(d, c, k):
  assert masks.num_winners(d, c) == k


@pytest.mark.parametrize("d", [0.0, -0.1, 1.5])
def test_num_winners_rejects_bad_density(d):
  with pytest.raises(ValueError, match="density"):
    masks.num_winners(d, 8)


def _features_from_criterion(crit):
  """[N, C] criterion -> [N, 2, 2, C] features whose spatial |max| is crit."""
  crit = jnp.asarray(crit, jnp.float32)
  f = jnp.zeros((crit.shape[0], 2, 2, crit.shape[1]))
  return f.at[:, 1, 0, :].set(-crit).at[:, 0, 1, :].set(crit * 0.5)


def test_ftwt_target_poster_example():
  # Poster: masses .3,.3,.2,.1,.1,.03,.01 (shuffled here), r = 0.95 -> k = 4.
  crit = jnp.array([[0.1, 0.3, 0.01, 0.2, 0.3, 0.03, 0.1]])
  target = masks.ftwt_target_mask(_features_from_criterion(crit), 0.95)
  # The four heaviest; of the two tied 0.1 channels the lower index wins.
  np.testing.assert_array_equal(target, [[1, 1, 0, 1, 1, 0, 0]])


def test_ftwt_target_crossing_channel_dropped_and_order_restored():
  crit = jnp.array([[0.1, 0.5, 0.4], [0.4, 0.1, 0.5]])
  # r = 0.85: sorted .5,.4,.1 -> cumsum .5,.9,1 -> keep only the first.
  target = masks.ftwt_target_mask(_features_from_criterion(crit), 0.85)
  np.testing.assert_array_equal(target, [[0, 1, 0], [0, 0, 1]])
  # r = 0.9 exactly reaches the second channel: kept (within 1e-5).
  target = masks.ftwt_target_mask(_features_from_criterion(crit), 0.9)
  np.testing.assert_array_equal(target, [[0, 1, 1], [1, 0, 1]])
  # Top channel heavier than r: everything dropped (official edge case).
  target = masks.ftwt_target_mask(_features_from_criterion(crit), 0.3)
  np.testing.assert_array_equal(target, np.zeros((2, 3)))


def test_ftwt_target_r_equal_one_drops_only_dead_channels():
  crit = jnp.array([[0.5, 0.0, 0.5, 1e-7, 0.2]])
  target = masks.ftwt_target_mask(_features_from_criterion(crit), 1.0)
  np.testing.assert_array_equal(target, [[1, 0, 1, 0, 1]])


def test_ftwt_target_all_zero_gives_all_ones():
  feats = jnp.zeros((2, 3, 3, 5))
  np.testing.assert_array_equal(masks.ftwt_target_mask(feats, 0.9), np.ones((2, 5)))
  np.testing.assert_array_equal(masks.ftwt_target_mask(feats, 1.0), np.ones((2, 5)))


def test_ftwt_target_uniform_prunes_fraction_and_dead():
  crit = jnp.array([[0.5, 0.1, 0.3, 0.0, 0.9, 0.2]])
  # int(0.34 * 6) = 2 weakest pruned (0.0 and 0.1) -> and dead ones also pruned.
  target = masks.ftwt_target_mask(_features_from_criterion(crit), 0.34, mode="uniform")
  np.testing.assert_array_equal(target, [[1, 0, 1, 0, 1, 1]])
  # int(0.5 * 6) = 3 -> drop 0.0, 0.1, 0.2.
  target = masks.ftwt_target_mask(_features_from_criterion(crit), 0.5, mode="uniform")
  np.testing.assert_array_equal(target, [[1, 0, 1, 0, 1, 0]])
  with pytest.raises(ValueError, match="mode"):
    masks.ftwt_target_mask(_features_from_criterion(crit), 0.5, mode="bogus")


def test_ftwt_target_under_jit_matches_eager():
  feats = jax.random.normal(jax.random.PRNGKey(1), (16, 4, 4, 32))
  eager = masks.ftwt_target_mask(feats, 0.8)
  jitted = jax.jit(lambda f: masks.ftwt_target_mask(f, 0.8))(feats)
  np.testing.assert_array_equal(eager, jitted)
  # Kept channels carry at most r (+1e-5) of the mass, and adding the next
  # strongest dropped channel would exceed it.
  crit = np.asarray(masks.channel_peak(feats))
  normed = crit / crit.sum(-1, keepdims=True)
  kept = (normed * np.asarray(eager)).sum(-1)
  assert np.all(kept <= 0.8 + 1e-5)
  nxt = np.where(np.asarray(eager) == 0, normed, -1).max(-1)
  assert np.all(kept + nxt > 0.8 + 1e-5)


def test_binary_gate_and_straight_through():
  logits = jnp.array([[-1.0, 0.0, 2.0]])
  np.testing.assert_array_equal(masks.binary_gate(logits), [[0, 0, 1]])
  g_off = jax.grad(lambda p: jnp.sum(masks.binary_gate(p) * 2.0))(logits)
  np.testing.assert_array_equal(g_off, 0.0)
  g_on = jax.grad(lambda p: jnp.sum(masks.binary_gate(p, ste=True) * 2.0))(logits)
  s = jax.nn.sigmoid(logits)
  np.testing.assert_allclose(g_on, 2.0 * s * (1 - s), rtol=1e-6)
  st = masks.straight_through(jnp.array(1.0), jnp.array(0.3))
  assert float(st) == 1.0
