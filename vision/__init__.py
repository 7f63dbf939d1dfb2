"""Vision: ONNX defect inspection of parts on the line.

`vision.synthetic` renders procedural part images (brushed metal, woven textile, concrete) with
defects and pixel masks; `vision.models` holds the bundled demo model and its card;
`vision.evaluate` measures a model on a generated test set; `vision.training` (needs the
`train` extra) retrains the demo model.

The runtime: `config` (the `[[inspections]]` section, no heavy imports), `frames` (folder, video,
camera, stream and simulated-camera sources), `preprocess` and `adapters` (pure pre- and
post-processing), `model` (onnxruntime sessions, layout detection), `inspector` (trigger, decode,
inference, verdict events), `triggers`, `archive` (saved images) and `verdicts` (counters, event
payloads), `tiles` (large frames as model-sized tiles, merged), `writeback` (allow-listed, audited
verdict writes to a PLC), `backbone` (ImageNet classifiers cut at their feature layers; `lineside
vision backbone`), `fit` (an anomaly head on a backbone, without PyTorch; its parts `heads`,
`calibration` and `head_graph`), `report` (`lineside vision evaluate`: figures, HTML page, model
card) and `inspect_cli` (`lineside inspect`).
"""
