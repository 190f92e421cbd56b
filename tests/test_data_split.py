"""Held-out splits: the rules pick by name in natural order, and the label files read back exactly."""

import numpy as np
import pytest

from dbdetect.data import load_samples
from dbdetect.data.split import natural_key, split_by_rule, write_split


def test_natural_order_puts_numbers_by_value():
    names = ["img_10.jpg", "img_2.jpg", "img_1.jpg", "IMG_0100.JPG"]
    assert sorted(names, key=natural_key) == ["img_1.jpg", "img_2.jpg", "img_10.jpg", "IMG_0100.JPG"]


def test_every_and_numbered_rules():
    names = [f"img_{i}.jpg" for i in range(20, 0, -1)]  # given in reverse: the rule sorts them
    keep, held = split_by_rule(names, {"every": 10, "offset": 9})
    assert [names[i] for i in held] == ["img_10.jpg", "img_20.jpg"]
    assert len(keep) == 18 and not set(keep) & set(held)
    keep, held = split_by_rule(names, {"numbered": [19, 20]})
    assert [names[i] for i in held] == ["img_19.jpg", "img_20.jpg"]
    assert [names[i] for i in keep][:3] == ["img_1.jpg", "img_2.jpg", "img_3.jpg"]


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"every": 1}, "integer >= 2"),
        ({"every": "10"}, "integer >= 2"),
        ({"every": 10, "offset": 1.5}, "offset must be an integer"),
        ({"numbered": [1]}, "[FIRST, LAST]"),
        ({"numbered": [50, 60]}, "keeps 4 of 4 images"),
        ({"numbered": [1, 4]}, "keeps 0 of 4 images"),
        ({"every": 2, "numbered": [1, 2]}, "one rule"),
        ("every 10", "one rule"),
        ({}, "one rule"),
    ],
)
def test_bad_rules_are_named(rule, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        split_by_rule(["a_1", "a_2", "a_3", "a_4"], rule)


def test_split_files_read_back_as_the_source(ic15, tmp_path):
    samples = load_samples(ic15 / "test")[:12]
    train, val = write_split(samples, {"every": 4, "offset": 3}, tmp_path / "split")
    back = {str(s.image_path): s for s in load_samples(train) + load_samples(val)}
    assert len(back) == 12 and len(load_samples(val)) == 3
    for s in samples:
        b = back[str(s.image_path.resolve())]
        assert b.ignore == s.ignore
        assert [t for t, ign in zip(b.texts, b.ignore) if not ign] == [t for t, i in zip(s.texts, s.ignore) if not i]
        for p, q in zip(b.polygons, s.polygons):
            np.testing.assert_array_equal(p, q)
