# Post-processing entry points (csrc/postprocess.hpp).
from libc.stdint cimport int32_t, int64_t, uint8_t
from libcpp cimport bool as cbool
from libcpp.vector cimport vector
from libc.string cimport memcpy

cdef extern from "postprocess.hpp" namespace "dbdetect" nogil:
    cdef cppclass PostprocessParams:
        float thresh
        float box_thresh
        double unclip_ratio
        long max_candidates
        int min_size
        cbool poly
        cbool slow_score
        cbool dilate
        int row_skip

    cdef cppclass PostprocessResult:
        vector[float] xy
        vector[int64_t] offsets
        vector[float] scores

    void c_boxes_from_prob "dbdetect::boxes_from_prob"(
        const float* prob, int h, int w, int dest_h, int dest_w,
        const PostprocessParams& params, PostprocessResult& out) except +
    void c_fill_poly_mask "dbdetect::fill_poly_mask"(
        const int32_t* xy, size_t n, int mh, int mw, uint8_t* mask) except +
    void c_approx_poly_closed "dbdetect::approx_poly_closed"(
        const int32_t* xy, size_t n, double eps, vector[int32_t]& out) except +

cdef extern from "contours.hpp" namespace "dbdetect" nogil:
    cdef cppclass PaddedMap:
        pass
    cdef cppclass ContourList:
        vector[int32_t] xy
        vector[size_t] start
    void c_make_padded_threshold "dbdetect::make_padded_threshold"(
        const float* prob, int h, int w, float thresh, cbool dilate, PaddedMap& out) except +
    void c_trace_contours "dbdetect::trace_contours"(PaddedMap& m, ContourList& out) except +

cdef extern from "offset.hpp" namespace "dbdetect" nogil:
    cbool c_offset_round_raw "dbdetect::offset_round_raw"(
        const int64_t* xy, size_t n, double delta, vector[int64_t]& out) except +
    void c_union_positive "dbdetect::union_positive"(
        const vector[int64_t]& path, vector[vector[double]]& loops) except +

cdef extern from "minrect.hpp" namespace "dbdetect" nogil:
    cdef cppclass RotRect:
        float cx, cy, width, height, angle_deg
    RotRect c_min_area_rect_i32 "dbdetect::min_area_rect_i32"(
        const int32_t* xy, size_t n, vector[int32_t]& hull, vector[int64_t]& scratch) except +
    float c_mini_box "dbdetect::mini_box"(const RotRect& r, float* out) except +


cdef _unpack_result(PostprocessResult& res):
    # Runs once per map, so it stays cheap next to the C++ work: one copy
    # per array and views for the polygons.
    import numpy as np
    cdef size_t n = res.scores.size(), m = res.xy.size() // 2, i
    xy = np.empty((m, 2), dtype=np.float32)
    scores = np.empty(n, dtype=np.float32)
    cdef float[:, ::1] xyv = xy
    cdef float[::1] sv = scores
    if m:
        memcpy(&xyv[0, 0], res.xy.data(), m * 2 * sizeof(float))
    if n:
        memcpy(&sv[0], res.scores.data(), n * sizeof(float))
    if n and m == 4 * n:  # all quads
        return list(xy.reshape(n, 4, 2)), scores
    return [xy[res.offsets[i]:res.offsets[i + 1]] for i in range(n)], scores


cdef PostprocessParams _params(float thresh, float box_thresh, double unclip_ratio,
                               long max_candidates, int min_size, bint poly, bint slow,
                               bint dilate):
    cdef PostprocessParams p
    p.thresh = thresh
    p.box_thresh = box_thresh
    p.unclip_ratio = unclip_ratio
    p.max_candidates = max_candidates
    p.min_size = min_size
    p.poly = poly
    p.slow_score = slow
    p.dilate = dilate
    return p


def postprocess_boxes(const float[:, ::1] prob, int dest_h, int dest_w, float thresh,
                      float box_thresh, double unclip_ratio, long max_candidates,
                      int min_size, bint poly, bint slow, bint dilate, int row_skip=0):
    """DB post-processing of one (H, W) map; see dbdetect.postprocess.

    row_skip: 0 = skip the regions that cannot become boxes (the default),
    1 = read every row (tests compare the two).
    """
    cdef PostprocessParams p = _params(thresh, box_thresh, unclip_ratio, max_candidates,
                                       min_size, poly, slow, dilate)
    if row_skip < 0:
        raise ValueError("row_skip must be >= 0")
    p.row_skip = row_skip
    cdef PostprocessResult res
    cdef int h = prob.shape[0], w = prob.shape[1]
    cdef const float* ptr = &prob[0, 0] if h > 0 and w > 0 else NULL
    with nogil:
        c_boxes_from_prob(ptr, h, w, dest_h, dest_w, p, res)
    return _unpack_result(res)


def postprocess_boxes_batch(const float[:, :, ::1] probs, const int64_t[:, ::1] dest_shapes,
                            float thresh, float box_thresh, double unclip_ratio,
                            long max_candidates, int min_size, bint poly, bint slow,
                            bint dilate):
    """DB post-processing of N maps (N, H, W) in one call without the GIL."""
    if dest_shapes.shape[0] != probs.shape[0] or dest_shapes.shape[1] != 2:
        raise ValueError("dest_shapes must have shape (N, 2) matching the maps")
    cdef PostprocessParams p = _params(thresh, box_thresh, unclip_ratio, max_candidates,
                                       min_size, poly, slow, dilate)
    cdef Py_ssize_t n = probs.shape[0], i
    cdef int h = probs.shape[1], w = probs.shape[2]
    cdef vector[PostprocessResult] res
    res.resize(n)
    if h > 0 and w > 0:
        with nogil:
            for i in range(n):
                c_boxes_from_prob(&probs[i, 0, 0], h, w, <int>dest_shapes[i, 0],
                                  <int>dest_shapes[i, 1], p, res[i])
    return [_unpack_result(res[i]) for i in range(n)]


def postprocess_find_contours(const float[:, ::1] prob, float thresh, bint dilate=False):
    """Contours of prob > thresh, as cv2.findContours(RETR_LIST, CHAIN_APPROX_SIMPLE)."""
    import numpy as np
    cdef PaddedMap m
    cdef ContourList cl
    cdef int h = prob.shape[0], w = prob.shape[1]
    cdef const float* ptr = &prob[0, 0] if h > 0 and w > 0 else NULL
    with nogil:
        c_make_padded_threshold(ptr, h, w, thresh, dilate, m)
        c_trace_contours(m, cl)
    xy = np.array([cl.xy[i] for i in range(cl.xy.size())], dtype=np.int32).reshape(-1, 2)
    return [xy[cl.start[i]:cl.start[i + 1]] for i in range(cl.start.size() - 1)]


def postprocess_min_area_box(const int32_t[:, ::1] points):
    """(4, 2) float32 get_mini_boxes corners and the short side, cv2-compatible."""
    import numpy as np
    if points.shape[1] != 2 or points.shape[0] == 0:
        raise ValueError("points must have shape (N>0, 2)")
    cdef vector[int32_t] hull
    cdef vector[int64_t] scratch
    cdef float box[8]
    cdef RotRect r
    cdef float side
    with nogil:
        r = c_min_area_rect_i32(&points[0, 0], points.shape[0], hull, scratch)
        side = c_mini_box(r, box)
    return np.array([box[i] for i in range(8)], dtype=np.float32).reshape(4, 2), side


def postprocess_fill_poly(const int32_t[:, ::1] points, int mh, int mw):
    """cv2.fillPoly(zeros((mh, mw)), [points], 1) as uint8."""
    import numpy as np
    if points.shape[1] != 2 or mh < 0 or mw < 0:
        raise ValueError("points must be (N, 2) and the mask size non-negative")
    out = np.zeros((mh, mw), dtype=np.uint8)
    cdef uint8_t[:, ::1] o = out
    if points.shape[0] and mh and mw:
        with nogil:
            c_fill_poly_mask(&points[0, 0], points.shape[0], mh, mw, &o[0, 0])
    return out


def postprocess_unclip(const int64_t[:, ::1] points, double delta):
    """Round-join offset of a closed integer polygon: list of (K, 2) float64 loops."""
    import numpy as np
    if points.shape[1] != 2:
        raise ValueError("points must have shape (N, 2)")
    cdef vector[int64_t] raw
    cdef vector[vector[double]] loops
    if points.shape[0] == 0:
        return []
    with nogil:
        if c_offset_round_raw(&points[0, 0], points.shape[0], delta, raw):
            c_union_positive(raw, loops)
    return [np.array(l, dtype=np.float64).reshape(-1, 2) for l in loops]


def postprocess_approx(const int32_t[:, ::1] points, double eps):
    """Closed Douglas-Peucker approximation (cv2.approxPolyDP(closed=True) twin)."""
    import numpy as np
    if points.shape[1] != 2:
        raise ValueError("points must have shape (N, 2)")
    cdef vector[int32_t] out
    if points.shape[0]:
        with nogil:
            c_approx_poly_closed(&points[0, 0], points.shape[0], eps, out)
    return np.array([out[i] for i in range(out.size())], dtype=np.int32).reshape(-1, 2)
