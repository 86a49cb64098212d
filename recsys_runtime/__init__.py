"""What serving needs of an artefact, and nothing that trains: the artefact layout, manifest and versions, the
fitted workflow's replay (attribute and sequence encoding), the numpy scorers of every model, generator
inference for synthetic data and cold starts, and the Triton contract, python-backend model and serving
links. The services, the launcher's serving commands and Triton's python backend import this package; the
trainer imports it too, to write what it reads.

The rule: numpy, pandas, scipy, faiss and onnxruntime only, never TensorFlow, Keras, matplotlib or onnx (the
graph builder), so a serving process stays small and starts fast. tests/test_runtime_boundary.py holds it.
"""
