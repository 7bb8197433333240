"""Task heads on the language models' encoders: the character tagger (segmentation and parts of
speech, :mod:`model.heads.tagger`) and its linear-chain CRF (:mod:`model.heads.crf`)."""
