"""How a network runs: a torch module, a TorchScript int8 file, an onnxruntime session."""
