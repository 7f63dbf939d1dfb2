"""Vision: ONNX defect inspection. Built by the vision issue; the package exists so the layout is fixed."""
