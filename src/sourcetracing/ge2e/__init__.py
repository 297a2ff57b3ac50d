"""The GE2E embedding baseline: training (:mod:`.train`), evaluation (:mod:`.evaluate`), embeddings (:mod:`.embeddings`)."""
