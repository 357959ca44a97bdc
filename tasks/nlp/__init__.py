"""Real-text and linguistic tasks: importing this package registers them.

- `text-cls`   long-document classification on bytes (State of the Union party; LRA Text analogue)
- `sentiment`  Rotten Tomatoes review polarity on bytes, split by movie
- `char-lm`    byte-level language modelling of State of the Union addresses (bits per byte)
- `agreement`  subject-verb agreement across attractors (Linzen et al. 2016), generated
- `translation` toy SVO→SOV translation with agreement morphology and gold alignments, generated
"""

from attnbench.tasks.nlp import agreement, char_lm, sentiment, text_cls, translation  # noqa: F401
