"""Vision: ONNX defect inspection (built by the vision issue; the package fixes the layout)."""
