"""Scoring detections: the ICDAR 2015 protocol (:mod:`.protocol`) and the settings search (:mod:`.tune`)."""
