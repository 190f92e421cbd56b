# Network input from uint8 pixels (csrc/normalize.hpp). Public wrapper: dbdetect.preprocess.

from libc.stdint cimport int64_t, uint8_t

cdef extern from "normalize.hpp" nogil:
    cdef cppclass NormalizeJob "dbdetect::NormalizeJob":
        const uint8_t* src
        Py_ssize_t row_stride
        int64_t height
        int64_t width
        const float* lut
        int src_channel[3]
        float* dst

    void c_normalize_u8 "dbdetect::normalize_u8"(const NormalizeJob& job) except +


def preprocess_normalize_u8(const uint8_t[:, :, :] img, const float[:, ::1] lut, tuple src_channel):
    """(H, W, 3) uint8 -> new (3, H, W) float32, plane c = lut[c][img[..., src_channel[c]]]."""
    if img.shape[2] != 3:
        raise ValueError(f"image must have 3 channels, got {img.shape[2]}")
    if img.strides[1] != 3 or img.strides[2] != 1:
        raise ValueError("image pixels must be contiguous (3 adjacent channel bytes each)")
    if lut.shape[0] != 3 or lut.shape[1] != 256:
        raise ValueError(f"lut must have shape (3, 256), got ({lut.shape[0]}, {lut.shape[1]})")
    if len(src_channel) != 3:
        raise ValueError(f"src_channel must name 3 channels, got {len(src_channel)}")
    import numpy as np
    out = np.empty((3, img.shape[0], img.shape[1]), np.float32)
    cdef float[:, :, ::1] dst = out
    cdef NormalizeJob job
    job.src = &img[0, 0, 0] if img.shape[0] and img.shape[1] else NULL
    job.row_stride = img.strides[0]
    job.height = img.shape[0]
    job.width = img.shape[1]
    job.lut = &lut[0, 0]
    for c in range(3):
        job.src_channel[c] = src_channel[c]
    job.dst = &dst[0, 0, 0] if img.shape[0] and img.shape[1] else NULL
    with nogil:
        c_normalize_u8(job)
    return out
