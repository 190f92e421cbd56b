"""dbdetect.labels.make_targets against the NumPy/pyclipper/OpenCV twin, plus bad input."""

import numpy as np
import pytest
import reference_labels as ref

from dbdetect import labels

KEYS = ("shrink_map", "shrink_mask", "thresh_map", "thresh_mask")


read_gt = ref.read_icdar_gt
compare = ref.compare


def curved_polygon(rng, cx, cy, radius, thickness, start, sweep, n_side):
    """A text line bent along an arc: n_side points on each side, 2 * n_side in all."""
    ang = np.linspace(start, start + sweep, n_side)
    outer = np.stack([cx + (radius + thickness) * np.cos(ang), cy + (radius + thickness) * np.sin(ang)], 1)
    inner = np.stack([cx + radius * np.cos(ang), cy + radius * np.sin(ang)], 1)[::-1]
    return np.concatenate([outer, inner]) + rng.uniform(-0.3, 0.3, (2 * n_side, 2))


@pytest.fixture(scope="module")
def ic15_sample(ic15):
    gts = sorted((ic15 / "train" / "gts").glob("*.txt"))
    if not gts:
        pytest.skip("no ICDAR 2015 train gts")
    return [read_gt(p) for p in gts[::40][:25]]


def test_parity_icdar2015(ic15_sample):
    for polys, tags in ic15_sample:
        mine = labels.make_targets(polys, tags, (720, 1280))
        theirs = ref.make_targets([p.copy() for p in polys], tags, (720, 1280))
        s, m, d, ign = compare(mine, theirs)
        assert s >= 0.98 and m >= 0.98 and d <= 0.01 and ign >= 0.98, (s, m, d, ign)
        for k in KEYS:
            assert mine[k].dtype == np.float32 and mine[k].shape == (720, 1280)


def test_close_to_upstream_integer_pipeline(ic15_sample):
    # Upstream rounds outlines to whole pixels (+-0.5 px jitter on 3-6 px kernels): only the
    # average must agree, which catches a systematic size bias (e.g. losing the half pixel).
    shrink, mask = [], []
    for polys, tags in ic15_sample:
        mine = labels.make_targets(polys, tags, (720, 1280))
        theirs = ref.make_targets([p.copy() for p in polys], tags, (720, 1280), precise=False)
        s, m, _, _ = compare(mine, theirs)
        shrink.append(s)
        mask.append(m)
        area_ratio = mine["shrink_map"].sum() / max(1.0, theirs["shrink_map"].sum())
        assert 0.8 <= area_ratio <= 1.25, area_ratio
    assert np.mean(shrink) >= 0.88 and np.mean(mask) >= 0.96, (np.mean(shrink), np.mean(mask))


def test_parity_curved_polygons():
    rng = np.random.default_rng(3)
    for trial in range(6):
        polys, tags = [], []
        for _ in range(5):
            n_side = int(rng.integers(5, 11))  # 10-20 points
            polys.append(
                curved_polygon(
                    rng,
                    rng.uniform(100, 540),
                    rng.uniform(100, 380),
                    rng.uniform(60, 200),
                    rng.uniform(12, 40),
                    rng.uniform(0, 2 * np.pi),
                    rng.uniform(0.5, 2.0),
                    n_side,
                )
            )
            tags.append(bool(rng.random() < 0.15))
        shape = (480, 640)
        mine = labels.make_targets(polys, tags, shape)
        theirs = ref.make_targets([p.copy() for p in polys], tags, shape)
        s, m, d, ign = compare(mine, theirs)
        assert s >= 0.98 and m >= 0.98 and d <= 0.01 and ign >= 0.98, (trial, s, m, d, ign)


@pytest.mark.parametrize("ratio,tmin,tmax,mts", [(0.4, 0.3, 0.7, 8), (0.6, 0.2, 0.9, 4), (0.2, 0.5, 0.5, 16)])
def test_parity_parameters_curved_and_quads(ratio, tmin, tmax, mts):
    rng = np.random.default_rng(int(ratio * 100))
    polys = [
        curved_polygon(rng, 320, 240, 120, 30, 0.3, 1.5, 8),
        curved_polygon(rng, 300, 250, 60, 14, 3.5, 2.0, 6),
        np.array([[20, 20], [200, 30], [198, 70], [18, 60]], float) + rng.uniform(-0.5, 0.5, (4, 2)),
        np.array([[400, 400], [630, 390], [635, 470], [402, 479]], float),
    ]
    tags = [False, False, False, True]
    mine = labels.make_targets(polys, tags, (480, 640), ratio, tmin, tmax, mts)
    theirs = ref.make_targets([p.copy() for p in polys], tags, (480, 640), ratio, tmin, tmax, mts)
    s, m, d, ign = compare(mine, theirs)
    assert s >= 0.98 and m >= 0.98 and d <= 0.01 and ign >= 0.98, (s, m, d, ign)
    assert np.isclose(mine["thresh_map"].min(), tmin) and mine["thresh_map"].max() <= tmax + 1e-6


def test_semantics_single_box():
    box = np.array([[10, 10], [60, 10], [60, 30], [10, 30]], float)
    t = labels.make_targets([box], [False], (45, 75))
    d = 1000 * 0.84 / 140  # area * (1 - r^2) / perimeter = 6
    ys, xs = np.nonzero(t["shrink_map"])
    # Kernel: centres at distance >= D - 0.5 from the edges.
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (16, 24, 16, 54)
    ys, xs = np.nonzero(t["thresh_mask"])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (4, 36, 4, 66)
    assert t["shrink_mask"].min() == 1.0
    # On the outline the threshold map peaks at thresh_max, D away it is back to thresh_min.
    assert np.isclose(t["thresh_map"][10, 35], 0.7)
    assert np.isclose(t["thresh_map"][20, 35], 0.3)
    assert np.isclose(t["thresh_map"][10 - 3, 35], 0.3 + 0.4 * (1 - 3 / d))


def test_ignored_polygons():
    box = np.array([[10, 10], [60, 10], [60, 30], [10, 30]], float)
    thin = np.array([[10, 40], [60, 40], [60, 45], [10, 45]], float)  # 5 px < min_text_size
    t = labels.make_targets([box, thin], [True, False], (60, 75))
    assert t["shrink_map"].max() == 0 and t["thresh_mask"].max() == 0 and np.all(t["thresh_map"] == np.float32(0.3))
    assert t["shrink_mask"][20, 30] == 0 and t["shrink_mask"][42, 30] == 0 and t["shrink_mask"][35, 30] == 1
    assert t["shrink_mask"][10, 10] == 0 and t["shrink_mask"][9, 30] == 1
    # A bowtie has zero area: ignored, no kernel.
    bow = np.array([[10, 10], [60, 30], [60, 10], [10, 30]], float)
    t = labels.make_targets([bow], [False], (45, 75))
    assert t["shrink_map"].max() == 0 and t["thresh_mask"].max() == 0


def test_empty_and_far_outside():
    t = labels.make_targets([], [], (7, 9))
    assert t["shrink_map"].max() == 0 and t["shrink_mask"].min() == 1
    assert np.all(t["thresh_map"] == np.float32(0.3)) and t["thresh_mask"].max() == 0
    far = np.array([[1e6, 1e6], [1e6 + 50, 1e6], [1e6 + 50, 1e6 + 30], [1e6, 1e6 + 30]])
    neg = -far
    t = labels.make_targets([far, neg], [False, False], (40, 50))
    assert t["shrink_map"].max() == 0 and t["thresh_mask"].max() == 0
    # Clamped onto a corner: only the pixels near it can be masked.
    assert t["shrink_mask"][1:-1, 1:-1].min() == 1


def test_out_buffers_and_no_writes_outside():
    rng = np.random.default_rng(0)
    polys = [rng.uniform(-50, 150, (int(rng.integers(3, 12)), 2)) for _ in range(40)]
    tags = list(rng.random(40) < 0.3)
    want = labels.make_targets(polys, tags, (80, 100))
    canvases = {k: np.full((82, 100), 7.0, np.float32) for k in KEYS}
    out = {k: canvases[k][1:81] for k in KEYS}
    for k in KEYS:
        out[k][:] = -1
    got = labels.make_targets(polys, tags, (80, 100), out=out)
    for k in KEYS:
        assert got[k] is out[k]
        np.testing.assert_array_equal(got[k], want[k])
        assert np.all(canvases[k][0] == 7) and np.all(canvases[k][81] == 7)


def test_batch_matches_single():
    rng = np.random.default_rng(1)
    imgs = []
    for i in range(7):
        polys = [rng.uniform(0, 200, 2) + rng.uniform(-40, 40, (int(rng.integers(3, 17)), 2)) for _ in range(12)]
        imgs.append((polys, list(rng.random(12) < 0.2), (150 + i, 230)))
    single = [labels.make_targets(*a) for a in imgs]
    for threads in (0, 1, 3):
        batch = labels.make_targets_batch(
            [a[0] for a in imgs], [a[1] for a in imgs], [a[2] for a in imgs], threads=threads
        )
        for s, b in zip(single, batch):
            for k in KEYS:
                np.testing.assert_array_equal(s[k], b[k])
    assert labels.make_targets_batch([], [], []) == []
    with pytest.raises(ValueError, match="image 1"):
        labels.make_targets_batch([[], [np.full((4, 2), np.nan)]], [[], [False]], [(5, 5), (5, 5)])
    with pytest.raises(ValueError):
        labels.make_targets_batch([[]], [[], []], [(5, 5)])


def test_quad_array_fast_path():
    rng = np.random.default_rng(2)
    quads = rng.uniform(0, 90, (30, 1, 2)) + np.array([[0, 0], [30, 2], [31, 14], [1, 12]])
    tags = rng.random(30) < 0.2
    a = labels.make_targets(quads, tags, (110, 130))
    b = labels.make_targets(list(quads), list(tags), (110, 130))
    for k in KEYS:
        np.testing.assert_array_equal(a[k], b[k])


def test_thousands_of_polygons():
    rng = np.random.default_rng(4)
    base = np.array([[0, 0], [12, 0], [12, 9], [0, 9]], float)
    quads = rng.uniform(-20, 700, (3000, 1, 2)) + base
    t = labels.make_targets(quads, np.zeros(3000, bool), (720, 720))
    assert t["shrink_map"].sum() > 0 and set(np.unique(t["shrink_map"])) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "polygons,tags,shape,exc,match",
    [
        ([np.full((4, 2), np.nan)], [False], (10, 10), ValueError, "NaN"),
        ([np.array([[0, 0], [np.inf, 0], [5, 5]])], [False], (10, 10), ValueError, "polygon 0"),
        ([np.zeros((4, 2)), np.zeros((2, 2))], [False, False], (10, 10), ValueError, "polygon 1 has 2 points"),
        ([np.zeros((4, 3))], [False], (10, 10), ValueError, "shape"),
        ([np.zeros(8)], [False], (10, 10), ValueError, "shape"),
        ([np.array([["a", "b"]] * 4)], [False], (10, 10), TypeError, "real"),
        ([np.zeros((4, 2), complex)], [False], (10, 10), TypeError, "real"),
        ([np.zeros((4, 2))], [False, True], (10, 10), ValueError, "1 polygons but 2"),
        ([np.zeros((4, 2))], [], (10, 10), ValueError, "ignore_tags"),
        ([np.zeros((4, 2))], ["###"], (10, 10), TypeError, "ignore_tags"),
        ([], [], (0, 10), ValueError, "positive"),
        ([], [], (-3, 10), ValueError, "positive"),
        ([], [], (10,), ValueError, r"\(H, W\)"),
        ([], [], (10.5, 10), TypeError, "integers"),
        ([], [], 10, TypeError, "shape"),
        ("abc", [], (10, 10), TypeError, "polygons"),
        (np.zeros((3, 2, 2)), [False] * 3, (10, 10), ValueError, "at least 3"),
    ],
)
def test_bad_input(polygons, tags, shape, exc, match):
    with pytest.raises(exc, match=match):
        labels.make_targets(polygons, tags, shape)


@pytest.mark.parametrize(
    "kw,exc",
    [
        (dict(shrink_ratio=1.0), ValueError),
        (dict(shrink_ratio=-0.1), ValueError),
        (dict(shrink_ratio=float("nan")), ValueError),
        (dict(thresh_min=0.8, thresh_max=0.2), ValueError),
        (dict(min_text_size=float("inf")), ValueError),
        (dict(shrink_ratio="0.4"), TypeError),
        (dict(out={}), TypeError),
        (dict(out={k: np.zeros((5, 5), np.float64) for k in KEYS}), ValueError),
        (dict(out={k: np.zeros((4, 5), np.float32) for k in KEYS}), ValueError),
    ],
)
def test_bad_parameters(kw, exc):
    with pytest.raises(exc):
        labels.make_targets([np.zeros((4, 2))], [False], (5, 5), **kw)
    shared = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match="distinct"):
        labels.make_targets([], [], (5, 5), out={k: shared for k in KEYS})


def test_randomized_nasty_polygons():
    """Degenerate, self-touching, tiny, huge, outside: never crash, outputs well-formed."""
    rng = np.random.default_rng(5)
    for _trial in range(60):
        h, w = int(rng.integers(1, 120)), int(rng.integers(1, 120))
        polys, tags = [], []
        for _ in range(int(rng.integers(0, 25))):
            kind = rng.integers(0, 7)
            n = int(rng.integers(3, 20))
            if kind == 0:  # random (often self-intersecting)
                p = rng.uniform(-30, 150, (n, 2))
            elif kind == 1:  # collinear / zero area
                t = rng.uniform(0, 1, n)[:, None]
                p = rng.uniform(0, 100, 2) + t * rng.uniform(-80, 80, 2)
            elif kind == 2:  # all points equal
                p = np.repeat(rng.uniform(-10, 130, (1, 2)), n, 0)
            elif kind == 3:  # tiny
                p = rng.uniform(0, 100, 2) + rng.uniform(0, 0.8, (n, 2))
            elif kind == 4:  # huge
                p = rng.uniform(-1e7, 1e7, (n, 2))
            elif kind == 5:  # self-touching: a figure with a repeated vertex
                c = rng.uniform(20, 100, 2)
                p = np.array([c, c + [30, 0], c + [30, 20], c, c + [-20, 20], c + [-20, 40]])
            else:  # ordinary quad, partly outside
                p = rng.uniform(-20, 120, 2) + np.array([[0, 0], [40, 3], [41, 20], [1, 18]])
            polys.append(p.astype(rng.choice([np.float64, np.float32, np.int32])))
            tags.append(bool(rng.random() < 0.2))
        kw = dict(shrink_ratio=float(rng.uniform(0, 0.95)), min_text_size=float(rng.uniform(-1, 10)))
        t = labels.make_targets(polys, tags, (h, w), **kw)
        for k in ("shrink_map", "shrink_mask", "thresh_mask"):
            assert set(np.unique(t[k])) <= {0.0, 1.0}
        assert np.all((t["thresh_map"] >= np.float32(0.3)) & (t["thresh_map"] <= np.float32(0.7)))
        # Kernels lie inside the dilated region and never under an ignored polygon's zero mask
        # unless another polygon overlaps there.
        assert np.all(t["thresh_mask"][t["shrink_map"] > 0] == 1)
