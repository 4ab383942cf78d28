"""The addition task: prompts, causal models, counterfactual labels and datasets."""
