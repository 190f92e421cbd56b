# Geometry helpers (csrc/geometry.hpp).

cdef extern from "geometry.hpp" namespace "dbdetect" nogil:
    double polygon_signed_area(const double* xy, size_t n) except +
    double polygon_perimeter(const double* xy, size_t n) except +
    void check_finite(const double* xy, size_t n, const char* what) except +


def polygon_area_perimeter(const double[:, ::1] points):
    """Return (absolute area, perimeter) of a closed (N, 2) float64 polygon."""
    if points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got (N, {points.shape[1]})")
    cdef size_t n = points.shape[0]
    cdef double area = 0.0, perim = 0.0
    if n == 0:
        return 0.0, 0.0
    with nogil:
        check_finite(&points[0, 0], n, b"polygon")
        area = polygon_signed_area(&points[0, 0], n)
        perim = polygon_perimeter(&points[0, 0], n)
    return abs(area), perim
