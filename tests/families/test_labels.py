"""Classes of a classifier: contiguous indices, names, binary tasks, class weights."""

import numpy as np
import pandas as pd
import pytest

from spectral_training.families.classifier.labels import label_space, labelled_index, train_class_weights


def _index(labels, splits=None):
    return pd.DataFrame({"store_index": range(len(labels)), "label": labels,
                         "split": splits or ["train"] * len(labels)})


def test_label_map_values_become_contiguous_classes_and_unlabelled_tiles_are_dropped():
    index = _index([3, 7, -1, 7, 12])
    space = label_space(index, [], None, where="cnn.labels")
    assert space.values == (3, 7, 12) and space.names == ("class_3", "class_7", "class_12")
    rows = labelled_index(index, space)
    assert rows["label"].tolist() == [0, 1, 1, 2] and -1 not in rows["label"].tolist()


def test_folder_classes_keep_their_names():
    space = label_space(_index([0, 1, 2, 1]), ["cats", "dogs", "owls"], None, where="cnn.labels")
    assert space.names == ("cats", "dogs", "owls")


def test_positive_class_makes_a_binary_task_of_any_labelled_dataset():
    index = _index([0, 1, 2, 1, -1])
    space = label_space(index, ["land", "water", "urban"], "water", where="flood_cnn.labels")
    assert space.num_classes == 2 and space.names == ("not water", "water")
    assert labelled_index(index, space)["label"].tolist() == [0, 1, 0, 1]


def test_an_unknown_positive_class_lists_the_classes():
    with pytest.raises(ValueError, match=r"positive_class 'river'.*land \(0\), water \(1\)"):
        label_space(_index([0, 1]), ["land", "water"], "river", where="flood_cnn.labels")


def test_class_weights_come_from_the_train_split_only():
    index = _index([0, 0, 0, 1, 1, 1], ["train", "train", "train", "train", "test", "test"])
    space = label_space(index, ["a", "b"], None, where="cnn.labels")
    # train: 3 x class 0, 1 x class 1 -> total / (classes x count) = 4/6, 4/2
    np.testing.assert_allclose(train_class_weights(labelled_index(index, space), 2), [4 / 6, 2.0])


def test_a_dataset_without_labels_says_how_to_label_it():
    with pytest.raises(ValueError, match="class sub-folders"):
        label_space(_index([-1, -1]), [], None, where="cnn.labels")
