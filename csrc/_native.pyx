# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""dbdetect._native: the one door between NumPy arrays and the C++ core in csrc/.

Each concern lives in its own include file (geometry, labels, normalize,
postprocess); this module only declares the C++ entry points, checks buffers,
allocates outputs and calls C++ with the GIL released. Python callers use
``dbdetect.labels``, ``dbdetect.preprocess`` and ``dbdetect.postprocess``,
never this module directly.
"""

COMPILED = True

include "geometry.pxi"
include "labels.pxi"
include "normalize.pxi"
include "postprocess.pxi"
