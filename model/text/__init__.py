"""Text and corpora: tokenizers, corpus files and splits, the prepared domains, padded batches.

The bottom layer of the library: it imports nothing else from ``model``.
"""
