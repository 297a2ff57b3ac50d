"""Training of the closed-set classifier (AASIST) and of the GE2E encoder, with one training loop.

``classifier.train_classifier`` backs ``train_refd.py``; ``ge2e.train_ge2e`` backs ``train_ge2e.py``;
``loop`` is the loop both use; ``checkpoint`` saves and loads models as plain data
(``torch.load(weights_only=True)``).
"""
