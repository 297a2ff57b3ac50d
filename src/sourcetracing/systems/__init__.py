"""Systems: the file contract of their outputs, the handle of a trained system and its kinds, and the
systems made here (the classifier and GE2E exports, statistics systems, hybrid, pooled, fusion)."""
