"""The ICDAR 2015 IoU protocol against hand-computed cases."""

from types import SimpleNamespace

import numpy as np
import pytest

from dbdetect.evaluate import evaluate_detections, evaluate_image, polygon_area, polygon_intersection, polygon_iou


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_polygon_area_and_iou_hand_computed():
    assert polygon_area(box(0, 0, 10, 10)) == pytest.approx(100)
    # counter-clockwise winding gives the same area
    assert polygon_area(box(0, 0, 10, 10)[::-1]) == pytest.approx(100)
    assert polygon_area([0, 0, 4, 0, 0, 3]) == pytest.approx(6)  # flat list, triangle
    # L shape (non-convex): 10x10 minus the 5x5 top-right corner
    ell = np.array([[0, 0], [5, 0], [5, 5], [10, 5], [10, 10], [0, 10]], np.float32)
    assert polygon_area(ell) == pytest.approx(75)
    assert polygon_intersection(ell, box(5, 0, 10, 5)) == pytest.approx(0, abs=1e-6)
    assert polygon_intersection(ell, box(0, 0, 10, 10)) == pytest.approx(75)
    # squares shifted by half: inter 50, union 150
    assert polygon_iou(box(0, 0, 10, 10), box(5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert polygon_iou(box(0, 0, 10, 10), box(20, 20, 30, 30)) == 0
    assert polygon_area([[0, 0], [1, 1], [2, 2]]) == pytest.approx(0)  # degenerate, no crash


def test_perfect():
    gt = [box(0, 0, 10, 10), box(20, 0, 40, 10)]
    r = evaluate_image(gt, [False, False], [g.copy() for g in gt[::-1]])
    assert (r["precision"], r["recall"], r["hmean"], r["matched"]) == (1, 1, 1, 2)
    assert sorted(r["pairs"]) == [[0, 1], [1, 0]]


def test_empty_cases():
    r = evaluate_image([box(0, 0, 10, 10)], [False], [])
    assert (r["precision"], r["recall"], r["hmean"]) == (0, 0, 0)
    # no care gt and no detection: the image is perfect
    r = evaluate_image([], [], [])
    assert (r["precision"], r["recall"]) == (1, 1)
    # no care gt but a detection: precision 0
    r = evaluate_image([], [], [box(0, 0, 5, 5)])
    assert (r["precision"], r["recall"], r["num_det_care"]) == (0, 1, 1)
    g = evaluate_detections([([], [])], [[]])
    assert (g["precision"], g["recall"], g["hmean"]) == (0, 0, 0)


def test_dont_care():
    gt = [box(0, 0, 10, 10), box(100, 0, 120, 10)]
    ign = [False, True]
    inside = box(101, 0, 119, 10)  # 100% inside ###  -> ignored
    half_in = box(110, 0, 126, 10)  # 10/16 = 62.5% inside -> ignored
    mostly_out = box(114, 0, 130, 10)  # 6/16 = 37.5% inside -> counts, unmatched
    r = evaluate_image(gt, ign, [box(0, 0, 10, 10), inside, half_in, mostly_out])
    assert r["det_dont_care"] == [1, 2]
    assert r["num_gt_care"] == 1 and r["num_det_care"] == 2 and r["matched"] == 1
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == 1
    # a ### region is never matched even by a perfect detection, and is not counted in recall
    r = evaluate_image([box(0, 0, 10, 10)], [True], [box(0, 0, 10, 10)])
    assert (r["matched"], r["num_gt_care"], r["num_det_care"]) == (0, 0, 0)


def test_one_to_many_and_threshold():
    gt = [box(0, 0, 10, 10)]
    # both halves have IoU 0.6 with the gt; only the first is matched (one-to-one)
    r = evaluate_image(gt, [False], [box(0, 0, 6, 10), box(4, 0, 10, 10)])
    assert r["pairs"] == [[0, 0]]
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == 1 and r["hmean"] == pytest.approx(2 / 3)
    # one detection spanning two gts: IoU exactly 0.5 with each -> no match (needs > 0.5)
    r = evaluate_image([box(0, 0, 10, 10), box(10, 0, 20, 10)], [False, False], [box(0, 0, 20, 10)])
    assert r["matched"] == 0 and r["precision"] == 0 and r["recall"] == 0
    # just above 0.5 matches
    r = evaluate_image(gt, [False], [box(0, 0, 10, 5.2)])
    assert r["matched"] == 1


def test_global_aggregation_and_detection_objects():
    gt = [
        ([box(0, 0, 10, 10), box(20, 0, 30, 10)], [False, False]),
        {"polygons": [box(0, 0, 10, 10), box(50, 50, 60, 60)], "ignore": [False, True]},
    ]
    dets = [
        [SimpleNamespace(polygon=box(0, 0, 10, 10), score=0.9)],  # 1 TP, 1 miss
        [box(0, 0, 10, 10), box(70, 70, 80, 80), box(50, 50, 60, 60).reshape(-1)],  # 1 TP, 1 FP, 1 ignored
    ]
    r = evaluate_detections(gt, dets, names=["a", "b"])
    assert (r["matched"], r["num_gt_care"], r["num_det_care"]) == (2, 3, 3)
    assert r["recall"] == pytest.approx(2 / 3) and r["precision"] == pytest.approx(2 / 3)
    assert r["hmean"] == pytest.approx(2 / 3)
    assert [p["name"] for p in r["per_image"]] == ["a", "b"]
    assert r["per_image"][0]["recall"] == 0.5 and r["per_image"][1]["precision"] == 0.5
    with pytest.raises(ValueError):
        evaluate_detections(gt, dets[:1])


def test_bad_polygon_inputs():
    with pytest.raises(ValueError):
        evaluate_image([np.array([[0, 0], [1, np.nan], [2, 2]])], [False], [])
    with pytest.raises(ValueError):
        evaluate_image([box(0, 0, 1, 1)], [], [])
