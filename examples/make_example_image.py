"""Render examples/sample.jpg: a synthetic poster with text at several sizes and angles.

The example image is generated rather than taken from a dataset, so it carries
no licence of its own. Run once; the result is committed.
"""

from pathlib import Path

import cv2
import numpy as np

H, W = 480, 720
rng = np.random.default_rng(7)
yy, xx = np.mgrid[0:H, 0:W]
img = np.dstack([120 + 60 * xx / W, 140 + 50 * yy / H, 170 - 40 * xx / W]).astype(np.uint8)
img = cv2.GaussianBlur((img + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8), (3, 3), 0)

cv2.rectangle(img, (40, 40), (680, 150), (245, 240, 230), -1)
cv2.putText(img, "GRAND OPENING", (70, 118), cv2.FONT_HERSHEY_DUPLEX, 2.0, (30, 30, 160), 4, cv2.LINE_AA)
cv2.putText(
    img, "Fresh bread  Coffee  Pastries", (60, 210), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (20, 20, 20), 2, cv2.LINE_AA
)
cv2.putText(img, "Open daily 7am - 9pm", (60, 265), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (250, 250, 250), 2, cv2.LINE_AA)

# A rotated price tag: draw on its own canvas, then warp into place.
tag = np.full((90, 300, 3), (40, 170, 240), np.uint8)
cv2.putText(tag, "SALE 30%", (18, 62), cv2.FONT_HERSHEY_TRIPLEX, 1.5, (255, 255, 255), 3, cv2.LINE_AA)
M = cv2.getRotationMatrix2D((150, 45), 12, 1.0)
M[:, 2] += (380, 330)
cv2.warpAffine(tag, M, (W, H), dst=img, borderMode=cv2.BORDER_TRANSPARENT)
cv2.putText(img, "www.example-bakery.com", (60, 440), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (10, 60, 10), 2, cv2.LINE_AA)

out = Path(__file__).with_name("sample.jpg")
cv2.imwrite(str(out), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
print("wrote", out)
