"""Making deployable files: ONNX export, onnxruntime and torch int8, calibration, gate folding."""
