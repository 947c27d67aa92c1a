"""Class counts, inverse-frequency weights, sampler weights and one-vs-rest labels, by hand."""

import numpy as np
import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from spectral_training.cubes.class_balance import binary_labels, class_counts, class_weights, sample_weights

# 6 samples of class 0, 2 of class 1, none of class 2, 2 unlabelled.
LABELS = np.array([0, 0, 1, 0, -1, 0, 1, 0, -1, 0])


def test_class_counts_ignore_unlabelled_and_keep_absent_classes():
    assert class_counts(LABELS, 3).tolist() == [6, 2, 0]
    assert class_counts(LABELS, 3).dtype == np.int64
    assert class_counts(np.array([], dtype=np.int64), 2).tolist() == [0, 0]


def test_class_weights_are_total_over_classes_times_count_and_zero_when_absent():
    # total 8, 3 classes: 8 / (3 * 6) = 4/9, 8 / (3 * 2) = 4/3, absent -> 0
    np.testing.assert_allclose(class_weights(np.array([6, 2, 0])), [4 / 9, 4 / 3, 0.0])
    np.testing.assert_allclose(class_weights(np.array([5, 5])), [1.0, 1.0])  # balanced -> 1
    assert class_weights(np.array([0, 0])).tolist() == [0.0, 0.0]


def test_sample_weights_give_each_sample_its_class_weight_and_unlabelled_zero():
    weights = sample_weights(LABELS, class_weights(class_counts(LABELS, 3)))
    np.testing.assert_allclose(weights, [4 / 9, 4 / 9, 4 / 3, 4 / 9, 0, 4 / 9, 4 / 3, 4 / 9, 0, 4 / 9])
    # Each present class then carries the same total weight: 6 * 4/9 == 2 * 4/3.
    assert weights[LABELS == 0].sum() == pytest.approx(weights[LABELS == 1].sum())


def test_a_weighted_sampler_draws_the_classes_equally_and_never_unlabelled():
    weights = sample_weights(LABELS, class_weights(class_counts(LABELS, 3)))
    sampler = WeightedRandomSampler(weights, num_samples=4000, generator=torch.Generator().manual_seed(0))
    drawn = LABELS[list(sampler)]
    assert (drawn != -1).all()
    assert np.mean(drawn == 1) == pytest.approx(0.5, abs=0.03)


def test_binary_labels_mark_the_positive_class_and_keep_unlabelled():
    assert binary_labels(np.array([2, 0, 2, -1, 1]), positive_class=2).tolist() == [1, 0, 1, -1, 0]
    assert binary_labels(np.array([0, 1]), positive_class=5).tolist() == [0, 0]


@pytest.mark.parametrize("labels", [np.array([0, 3]), np.array([-2, 0]), np.array([[0, 1]]), np.array([0.5])])
def test_labels_outside_the_classes_are_refused(labels):
    with pytest.raises(ValueError, match="labels?"):
        class_counts(labels, 3)


def test_negative_counts_and_bad_class_numbers_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        class_weights(np.array([3, -1]))
    with pytest.raises(ValueError, match="num_classes"):
        class_counts(LABELS, 0)
    with pytest.raises(ValueError, match="positive_class"):
        binary_labels(LABELS, -1)
