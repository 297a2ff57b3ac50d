"""Training of the closed-set classifier (AASIST) and its known-system evaluation.

``refd.main`` backs ``train_refd.py``; ``evaluate.main`` backs ``scripts/get_classification_metrics.py``;
``checkpoint`` saves and loads models as plain data (``torch.load(weights_only=True)``).
"""
