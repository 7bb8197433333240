"""rnnlm's applications: the command line, the benchmarks and the reports that write docs/.

The layers, every import pointing down::

    rnnlm/    command line, speed benchmarks, doc writers   (imports model and service)
    service/  the FastAPI app                                (imports model)
    model/    the language-model library                     (imports neither)
"""
