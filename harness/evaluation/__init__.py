"""Evaluating a trained trial on evaluation sets (OOD, corruptions, shifts): the kinds of sets and the per-trial
evaluation."""
