"""rnnlm's model library: tokenizers, networks, training, evaluation, baselines and sampling.

Nothing here imports the web stack; the service and the CLI are two front doors on these
functions.
"""

__version__ = "0.1.0"
