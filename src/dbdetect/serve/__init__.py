"""``dbdetect serve``: the detector as an HTTP service (``pip install "dbdetect[serve]"``).

>>> from dbdetect.serve import ServeSettings, create_app          # doctest: +SKIP
>>> app = create_app(ServeSettings(model="ppocrv4_ic15"))         # doctest: +SKIP
>>> # uvicorn.run(app, host="127.0.0.1", port=8000)

Concurrent requests share forward passes (:mod:`.batcher`), a bounded queue answers
503 when full, and every limit answers with a JSON ``{"detail": ...}`` naming the
problem (:mod:`.uploads`). :mod:`.ray_serve` runs the same API on Ray Serve.
"""

from .app import create_app
from .settings import ServeSettings, read_api_keys

__all__ = ["ServeSettings", "create_app", "read_api_keys"]
