"""Experiments behind ``distill bench distill`` and ``distill bench consensus``: the
MS-CXR-T-shaped distillation benchmark (the paper's table at small scale) and answer-level
consensus on real teacher outputs. Training code imports torch inside functions only."""
