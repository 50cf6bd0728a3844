"""Topics: the stage that scores spans against the user's topics.

`topic` (Topic, the topics file), `late_interaction` (LateInteractionCrossEncoder: MaxSim +
prototype scoring, calibration), `self_training` (score, curate, fine-tune, re-score).
"""
