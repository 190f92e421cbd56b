import math
import zlib

import cv2
import numpy as np
import pytest
import reference_postprocess as ref
from postprocess_match import add, match, poly_iou
from prob_maps import MapMaker, dense_map

from dbdetect import _native, postprocess


# ---------------------------------------------------------------- synthetic maps
def _rot_rects(rng, shape=(320, 480), n=30, axis_frac=0.4):
    h, w = shape
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        c = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
        s = (float(rng.uniform(4, 120)), float(rng.uniform(3, 30)))
        a = 0.0 if rng.random() < axis_frac else float(rng.uniform(-90, 90))
        cv2.fillPoly(img, [cv2.boxPoints((c, s, a)).astype(np.int32)], float(rng.uniform(0.4, 1)))
    return cv2.GaussianBlur(img, (5, 5), 1.5)


def _curved_bands(rng, shape=(320, 480), n=10):
    h, w = shape
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
        r = rng.uniform(40, 150)
        a0 = rng.uniform(0, 2 * np.pi)
        t = np.linspace(a0, a0 + rng.uniform(0.8, 2.5), 40)
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
        cv2.polylines(
            img, [np.round(pts).astype(np.int32)], False, float(rng.uniform(0.6, 1)), thickness=int(rng.integers(6, 18))
        )
    return cv2.GaussianBlur(img, (5, 5), 1.5)


def _touching_blobs(rng, shape=(200, 300)):
    img = np.zeros(shape, np.float32)
    for _ in range(40):
        x, y = int(rng.integers(0, shape[1] - 20)), int(rng.integers(0, shape[0] - 10))
        img[y : y + int(rng.integers(3, 12)), x : x + int(rng.integers(3, 30))] = rng.uniform(0.5, 1)
    return img


def _check(total, min_rate=0.99, min_boxes=20):
    assert total["n_ref"] >= min_boxes, total
    assert total["ref_matched"] >= min_rate * total["n_ref"], total
    assert total["out_matched"] >= min_rate * total["n_out"], total
    assert total["score_ok"] >= min_rate * total["ref_matched"], total


# Maps per synthetic set: enough that every set holds hundreds of boxes, so
# the 99 % bound is a real bound (one miss is well under 1 %).
_N_MAPS = {"_rot_rects": 60, "_curved_bands": 80, "_touching_blobs": 16}


@pytest.mark.parametrize(
    "kw",
    [
        dict(box_type="quad"),
        dict(box_type="quad", score_mode="slow"),
        dict(box_type="quad", use_dilation=True, thresh=0.5),
        dict(box_type="poly"),
    ],
)
@pytest.mark.parametrize("maker", [_rot_rects, _curved_bands, _touching_blobs])
def test_synthetic_maps_match_reference(kw, maker):
    rng = np.random.default_rng(zlib.crc32(repr((maker.__name__, kw)).encode()))
    if maker is _curved_bands and kw["box_type"] == "quad":
        kw = dict(kw, box_thresh=0.3)  # a rectangle around an arc is mostly background
    n_maps = _N_MAPS[maker.__name__]
    if kw.get("score_mode") == "slow" and maker is not _touching_blobs:
        n_maps //= 2  # hole contours give large boxes, slow to compare
    total = {}
    for _ in range(n_maps):
        prob = maker(rng)
        dest = (int(prob.shape[0] * 1.5), int(prob.shape[1] * 1.5))
        r = ref.boxes_from_prob(prob, dest, **kw)
        m = postprocess.boxes_from_prob(prob, dest, **kw)
        assert all(p.dtype == np.float32 and p.ndim == 2 and p.shape[1] == 2 for p in m[0])
        assert m[1].dtype == np.float32 and len(m[1]) == len(m[0])
        add(total, match(*r, *m))
    _check(total, min_rate=0.99, min_boxes=150)


@pytest.fixture(scope="module")
def ic15_maps(ic15):
    maker = MapMaker()
    if maker.reason:
        pytest.skip(f"no probability-map source: {maker.reason}")
    images = sorted((ic15 / "test" / "images").glob("*.jpg"))[:4]
    return [(maker(p), cv2.imread(str(p)).shape[:2]) for p in images]


@pytest.mark.parametrize("kw", [dict(), dict(score_mode="slow"), dict(box_type="poly")])
def test_icdar_maps_match_reference(ic15_maps, kw):
    total = {}
    for prob, dest in ic15_maps:
        add(total, match(*ref.boxes_from_prob(prob, dest, **kw), *postprocess.boxes_from_prob(prob, dest, **kw)))
    _check(total, min_boxes=10)


@pytest.mark.parametrize("box_type", ["quad", "poly"])
def test_dense_map_matches_reference(box_type):
    prob = dense_map(500)
    r = ref.boxes_from_prob(prob, (720, 1280), box_type=box_type)
    m = postprocess.boxes_from_prob(prob, (720, 1280), box_type=box_type)
    assert len(r[0]) > 400
    _check(match(*r, *m), min_rate=0.99)


def test_quad_boxes_are_clockwise_from_top_left():
    prob = np.zeros((100, 200), np.float32)
    cv2.fillPoly(prob, [cv2.boxPoints(((100, 50), (120, 20), 20)).astype(np.int32)], 0.9)
    polys, scores = postprocess.boxes_from_prob(prob, (100, 200))
    assert len(polys) == 1 and polys[0].shape == (4, 2)
    p = polys[0].astype(np.float64)
    area2 = np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])
    assert area2 > 0  # clockwise on screen (y down)
    assert p[0, 0] == p[:, 0].min() or p[0, 1] == p[:, 1].min()
    assert scores[0] == pytest.approx(0.9, abs=0.05)


def test_max_candidates_follows_reference_order():
    rng = np.random.default_rng(3)
    prob = _touching_blobs(rng)
    for k in (0, 1, 5):
        r = ref.boxes_from_prob(prob, prob.shape, max_candidates=k, box_thresh=0.3)
        m = postprocess.boxes_from_prob(prob, prob.shape, max_candidates=k, box_thresh=0.3)
        assert len(m[0]) == len(r[0])
        for a, b in zip(r[0], m[0]):
            assert poly_iou(a, b) > 0.9


def test_batch_equals_single_calls():
    rng = np.random.default_rng(4)
    probs = np.stack([_rot_rects(rng) for _ in range(3)])
    dests = [(640, 960), (320, 480), (100, 150)]
    out = postprocess.boxes_from_prob_batch(probs, dests, box_type="quad")
    out4 = postprocess.boxes_from_prob_batch(probs[:, None], dests, box_type="quad")
    for (pb, sb), (pb4, _), prob, d in zip(out, out4, probs, dests):
        ps, ss = postprocess.boxes_from_prob(prob, d)
        assert len(ps) == len(pb) == len(pb4)
        assert all(np.array_equal(a, b) for a, b in zip(ps, pb))
        np.testing.assert_array_equal(ss, sb)


# ------------------------------------------------------------- native pieces
def test_contours_equal_cv2():
    rng = np.random.default_rng(0)
    for _ in range(150):
        h, w = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        prob = (rng.random((h, w)) < rng.uniform(0.05, 0.7)).astype(np.float32)
        mine = _native.postprocess_find_contours(prob, 0.5, False)
        theirs = cv2.findContours((prob > 0.5).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[0]
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a, b.reshape(-1, 2))


def test_dilation_equals_cv2():
    rng = np.random.default_rng(1)
    prob = (rng.random((40, 60)) < 0.1).astype(np.float32)
    mine = _native.postprocess_find_contours(prob, 0.5, True)
    dil = cv2.dilate((prob > 0.5).astype(np.uint8), np.ones((2, 2), np.uint8))
    theirs = cv2.findContours(dil, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[0]
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        np.testing.assert_array_equal(a, b.reshape(-1, 2))


@pytest.mark.parametrize("lo,hi", [(0, 20), (-4, 24), (-200, 200)])
def test_fill_poly_equals_cv2(lo, hi):
    rng = np.random.default_rng(lo + 1000)
    for _ in range(400):
        n = int(rng.integers(1, 8))
        mh, mw = int(rng.integers(1, 21)), int(rng.integers(1, 21))
        pts = rng.integers(lo, hi, (n, 2)).astype(np.int32)
        want = np.zeros((mh, mw), np.uint8)
        cv2.fillPoly(want, pts.reshape(1, -1, 2), 1)
        np.testing.assert_array_equal(_native.postprocess_fill_poly(pts, mh, mw), want)


def test_min_area_box_matches_cv2():
    rng = np.random.default_rng(2)
    exact = 0
    for _ in range(500):
        pts = rng.integers(-50, 300, (int(rng.integers(3, 30)), 2)).astype(np.int32)
        box, side = _native.postprocess_min_area_box(pts)
        rbox, rside = ref._mini_box(pts.reshape(-1, 1, 2))
        rect = cv2.minAreaRect(pts)
        mine_area = np.linalg.norm(box[1] - box[0]) * np.linalg.norm(box[2] - box[1])
        assert mine_area == pytest.approx(rect[1][0] * rect[1][1], rel=1e-4, abs=1e-3)
        # Bit-identical corners are what keeps the reference's integer
        # truncation (pyclipper, int32 scoring) the same; cv2 breaks exact area
        # ties its own way, so a rare tie may differ.
        exact += np.array_equal(box, rbox.astype(np.float32)) and np.float32(side) == np.float32(rside)
        # Every point lies inside the (slightly grown) rectangle.
        c = box.mean(0)
        grown = c + (box - c) * 1.001 + np.sign(box - c) * 1e-3
        inside = [cv2.pointPolygonTest(grown.reshape(-1, 1, 2), (float(x), float(y)), False) >= 0 for x, y in pts]
        assert all(inside)
    assert exact >= 495, exact  # measured 499 of 500 with OpenCV 5.0


def test_unclip_matches_pyclipper():
    import pyclipper

    rng = np.random.default_rng(5)
    same_count = same_vertices = 0
    for _t in range(200):
        n = int(rng.integers(3, 14))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(5, 60, n)
        pts = np.stack([100 + rad * np.cos(ang), 100 + rad * np.sin(ang)], 1).astype(np.int64)
        delta = float(rng.uniform(0.5, 25))
        off = pyclipper.PyclipperOffset()
        off.AddPath(pts.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        want = off.Execute(delta)
        got = _native.postprocess_unclip(np.ascontiguousarray(pts), delta)
        same_count += len(got) == len(want)
        if len(want) == 1 and len(got) == 1:
            assert poly_iou(np.array(want[0]), got[0]) > 0.97
            assert np.array_equal(got[0], np.round(got[0]))  # integer vertices, as Clipper
            same_vertices += set(map(tuple, want[0])) == set(map(tuple, got[0].astype(int).tolist()))
    assert same_count == 200
    # Clipper's sweep rounds intersection points in its own way; the rest of
    # the vertices are the same (measured 175 of 200 identical vertex sets).
    assert same_vertices >= 160, same_vertices


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "prob,exc",
    [
        (np.zeros((10, 10), np.float64), TypeError),
        (np.zeros((10, 10), np.uint8), TypeError),
        (np.zeros((1, 10, 10), np.float32), ValueError),
        (np.zeros(10, np.float32), ValueError),
        ([[0.5]], TypeError),
    ],
)
def test_rejects_bad_prob(prob, exc):
    with pytest.raises(exc):
        postprocess.boxes_from_prob(prob, (10, 10))


def test_nan_is_background_and_rejected_inside_a_box():
    prob = np.zeros((40, 40), np.float32)
    prob[5, 5] = np.nan  # away from any text: background, nothing to score
    polys, scores = postprocess.boxes_from_prob(prob, (40, 40))
    assert polys == [] and scores.shape == (0,)
    assert postprocess.boxes_from_prob(np.full((40, 40), np.nan, np.float32), (40, 40))[0] == []
    prob[10:30, 8:32] = 0.9
    prob[20, 20] = np.nan  # a hole in a text region, inside its box
    for box_type in ("quad", "poly"):
        with pytest.raises(ValueError, match="NaN"):
            postprocess.boxes_from_prob(prob, (40, 40), box_type=box_type)


@pytest.mark.parametrize("dest", [(0, 10), (10, 0), (-1, 5), (5,), "ab", None])
def test_rejects_bad_dest_shape(dest):
    with pytest.raises(ValueError):
        postprocess.boxes_from_prob(np.zeros((8, 8), np.float32), dest)


@pytest.mark.parametrize(
    "kw",
    [
        dict(box_type="box"),
        dict(score_mode="exact"),
        dict(unclip_ratio=-1.0),
        dict(thresh=math.nan),
        dict(max_candidates=-1),
        dict(min_size=1.5),
    ],
)
def test_rejects_bad_params(kw):
    with pytest.raises(ValueError):
        postprocess.boxes_from_prob(np.zeros((8, 8), np.float32), (8, 8), **kw)


@pytest.mark.parametrize("box_type", ["quad", "poly"])
@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0), (1, 1), (1, 50), (50, 1)])
def test_degenerate_maps_do_not_crash(shape, box_type):
    for v in (0.0, 1.0):
        prob = np.full(shape, v, np.float32)
        polys, scores = postprocess.boxes_from_prob(prob, (10, 10), box_type=box_type)
        assert len(polys) == len(scores)
        r = ref.boxes_from_prob(prob, (10, 10), box_type=box_type) if min(shape) > 0 else ([], [])
        assert len(polys) == len(r[0])


@pytest.mark.parametrize("box_type", ["quad", "poly"])
def test_all_ones_and_border_touching(box_type):
    prob = np.ones((40, 60), np.float32)
    polys, scores = postprocess.boxes_from_prob(prob, (80, 120), box_type=box_type)
    assert len(polys) == 1 and scores[0] == pytest.approx(1.0)
    assert polys[0].min() >= 0 and polys[0][:, 0].max() <= 120 and polys[0][:, 1].max() <= 80
    r = ref.boxes_from_prob(prob, (80, 120), box_type=box_type)
    assert poly_iou(r[0][0], polys[0]) > 0.95


def test_many_tiny_blobs():
    prob = np.zeros((600, 600), np.float32)
    prob[::3, ::3] = 0.9  # 40000 single-pixel blobs
    polys, scores = postprocess.boxes_from_prob(prob, (600, 600), max_candidates=100000)
    assert polys == [] and scores.shape == (0,)
    prob[::3, 1::3] = 0.9  # 2-pixel blobs, still below min_size
    assert postprocess.boxes_from_prob(prob, (600, 600))[0] == []


def test_non_contiguous_input_is_accepted():
    prob = np.zeros((60, 80), np.float32)
    prob[10:30, 10:60] = 0.9
    a = postprocess.boxes_from_prob(prob, (60, 80))
    b = postprocess.boxes_from_prob(np.asfortranarray(prob), (60, 80))
    assert len(a[0]) == len(b[0]) == 1 and np.array_equal(a[0][0], b[0][0])


def test_approx_poly_matches_cv2():
    rng = np.random.default_rng(6)
    same = total = 0
    for _ in range(10):
        prob = _touching_blobs(rng) + _curved_bands(rng, shape=(200, 300))
        for c in cv2.findContours((prob > 0.3).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[0]:
            eps = 0.002 * cv2.arcLength(c, True)
            want = cv2.approxPolyDP(c, eps, True).reshape(-1, 2)
            got = _native.postprocess_approx(np.ascontiguousarray(c.reshape(-1, 2)), eps)
            total += 1
            same += got.shape == want.shape and np.array_equal(got, want)
    assert total > 50 and same >= 0.99 * total, (same, total)  # measured: all equal


def _thin_and_small(rng, h=97, w=131):
    """Regions 1..7 rows tall (the row-skipping pass must keep exactly the ones that can matter),
    rotated bars, rings with holes, and shapes cut by the map border."""
    prob = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(5, 40)):
        v = float(rng.uniform(0.31, 1.0))
        kind = rng.integers(0, 4)
        x, y = int(rng.integers(-5, w)), int(rng.integers(-5, h))
        if kind == 0:
            prob[max(y, 0) : max(y + int(rng.integers(1, 8)), 0), max(x, 0) : max(x + int(rng.integers(1, 60)), 0)] = v
        elif kind == 1:
            ang = float(rng.uniform(0, 180))
            box = cv2.boxPoints(((x, y), (float(rng.uniform(1, 60)), float(rng.uniform(0.5, 6))), ang))
            cv2.fillPoly(prob, [np.round(box).astype(np.int32)], v)
        elif kind == 2:
            cv2.circle(prob, (x, y), int(rng.integers(2, 12)), v, int(rng.integers(1, 3)))
        else:
            prob[y % h, x % w] = v
    return prob


@pytest.mark.parametrize("box_type", ["quad", "poly"])
@pytest.mark.parametrize("dilate", [False, True])
@pytest.mark.parametrize("min_size", [1, 3, 5])
def test_row_skipping_pass_equals_reading_every_row(box_type, dilate, min_size):
    from dbdetect import _native

    rng = np.random.default_rng(min_size * 10 + dilate + 2 * (box_type == "poly"))
    n_boxes = 0
    for _ in range(40):
        prob = _thin_and_small(rng)
        args = (prob, 97, 131, 0.3, 0.0, 1.5, 1000, min_size, box_type == "poly", False, dilate)
        fast = _native.postprocess_boxes(*args)
        full = _native.postprocess_boxes(*args, row_skip=1)
        assert len(fast[0]) == len(full[0])
        for a, b in zip(fast[0], full[0]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(fast[1], full[1])
        n_boxes += len(full[0])
        if box_type == "quad":  # (poly parity on such odd shapes is the >= 99% of the tests above)
            r = ref.boxes_from_prob(prob, (97, 131), box_thresh=0.0, min_size=min_size, use_dilation=dilate)
            assert len(r[0]) == len(fast[0])
    assert n_boxes > 100  # the maps do produce boxes
