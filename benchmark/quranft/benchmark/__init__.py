"""Verse-recognition benchmark: transcribe recitations, identify verses, score, compare, decide."""
