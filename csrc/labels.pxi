# DBNet training targets (csrc/labels.hpp). Public wrapper: dbdetect.labels.

from libc.stdint cimport int64_t, uint8_t
from libcpp.vector cimport vector

cdef extern from "labels.hpp" nogil:
    cdef cppclass TargetParams "dbdetect::TargetParams":
        double shrink_ratio
        double thresh_min
        double thresh_max
        double min_text_size

    cdef cppclass TargetJob "dbdetect::TargetJob":
        const double* xy
        const int64_t* offsets
        const uint8_t* ignore
        size_t n_polys
        int64_t height
        int64_t width
        float* shrink_map
        float* shrink_mask
        float* thresh_map
        float* thresh_mask

    void c_make_targets "dbdetect::make_targets"(const TargetJob& job, const TargetParams& params) except +
    void c_make_targets_batch "dbdetect::make_targets_batch"(
        const TargetJob* jobs, size_t n_jobs, const TargetParams& params, int threads) except +


cdef TargetParams _target_params(double shrink_ratio, double thresh_min, double thresh_max,
                                 double min_text_size):
    cdef TargetParams p
    p.shrink_ratio = shrink_ratio
    p.thresh_min = thresh_min
    p.thresh_max = thresh_max
    p.min_text_size = min_text_size
    return p


cdef TargetJob _target_job(const double[:, ::1] xy, const int64_t[::1] offsets,
                           const uint8_t[::1] ignore, float[:, ::1] shrink_map,
                           float[:, ::1] shrink_mask, float[:, ::1] thresh_map,
                           float[:, ::1] thresh_mask) except *:
    # boundscheck is off module-wide: every size the C++ side relies on is checked here.
    if xy.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got (N, {xy.shape[1]})")
    if offsets.shape[0] < 1:
        raise ValueError("offsets must hold at least one entry")
    cdef size_t n_polys = offsets.shape[0] - 1
    if <size_t>ignore.shape[0] != n_polys:
        raise ValueError(f"{ignore.shape[0]} ignore tags for {n_polys} polygons")
    cdef int64_t h = shrink_map.shape[0], w = shrink_map.shape[1]
    if (shrink_mask.shape[0] != h or shrink_mask.shape[1] != w or thresh_map.shape[0] != h
            or thresh_map.shape[1] != w or thresh_mask.shape[0] != h or thresh_mask.shape[1] != w):
        raise ValueError("all output maps must have the same shape")
    if h <= 0 or w <= 0:
        raise ValueError(f"shape must be positive, got ({h}, {w})")
    cdef size_t i
    cdef int64_t prev = 0
    for i in range(n_polys + 1):
        if offsets[i] < prev or (i == 0 and offsets[0] != 0):
            raise ValueError("offsets must start at 0 and never decrease")
        prev = offsets[i]
    if prev != xy.shape[0]:
        raise ValueError(f"offsets end at {prev} but there are {xy.shape[0]} points")
    cdef TargetJob job
    job.xy = &xy[0, 0] if xy.shape[0] > 0 else NULL
    job.offsets = &offsets[0]
    job.ignore = &ignore[0] if n_polys > 0 else NULL
    job.n_polys = n_polys
    job.height = h
    job.width = w
    job.shrink_map = &shrink_map[0, 0]
    job.shrink_mask = &shrink_mask[0, 0]
    job.thresh_map = &thresh_map[0, 0]
    job.thresh_mask = &thresh_mask[0, 0]
    return job


def labels_make_targets(const double[:, ::1] xy, const int64_t[::1] offsets,
                        const uint8_t[::1] ignore, float[:, ::1] shrink_map,
                        float[:, ::1] shrink_mask, float[:, ::1] thresh_map,
                        float[:, ::1] thresh_mask, double shrink_ratio, double thresh_min,
                        double thresh_max, double min_text_size):
    """Fill the four (H, W) float32 maps from packed polygons (see csrc/labels.hpp)."""
    cdef TargetJob job = _target_job(xy, offsets, ignore, shrink_map, shrink_mask,
                                     thresh_map, thresh_mask)
    cdef TargetParams p = _target_params(shrink_ratio, thresh_min, thresh_max, min_text_size)
    with nogil:
        c_make_targets(job, p)


def labels_make_targets_batch(list jobs, double shrink_ratio, double thresh_min,
                              double thresh_max, double min_text_size, int threads):
    """Run several images on std::threads; jobs holds tuples of the 7 arrays of labels_make_targets."""
    cdef vector[TargetJob] cjobs
    cjobs.reserve(len(jobs))
    # `jobs` keeps every buffer alive while the threads run.
    for j in jobs:
        if len(j) != 7:
            raise ValueError("each job must hold (xy, offsets, ignore, 4 maps)")
        cjobs.push_back(_target_job(j[0], j[1], j[2], j[3], j[4], j[5], j[6]))
    cdef TargetParams p = _target_params(shrink_ratio, thresh_min, thresh_max, min_text_size)
    with nogil:
        c_make_targets_batch(cjobs.data(), cjobs.size(), p, threads)
