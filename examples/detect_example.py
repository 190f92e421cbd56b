"""Detect text in examples/sample.jpg and write examples/sample_det.jpg.

python examples/detect_example.py [IMAGE] [OUTPUT]
"""

import sys
from pathlib import Path

import cv2

import dbdetect

here = Path(__file__).resolve().parent
src = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "sample.jpg"
dst = Path(sys.argv[2]) if len(sys.argv) > 2 else here / "sample_det.jpg"

dets = dbdetect.detect(src)  # bundled PP-OCRv4 weights, no network
for d in dets:
    print(d)
vis = dbdetect.draw(src, dets, show_scores=True)  # RGB
cv2.imwrite(str(dst), vis[:, :, ::-1])
print(f"{len(dets)} text regions; picture written to {dst}")
