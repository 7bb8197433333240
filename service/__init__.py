"""rnnlm's HTTP service: FastAPI routes over the model library (``service.app.create_app``).

The service adds HTTP, schemas, limits, metrics and a worker thread per model on top of
``model/``; it never trains and computes nothing about the LM itself.
"""
