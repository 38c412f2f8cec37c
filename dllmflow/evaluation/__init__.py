"""Evaluation harness: run question sets under several policies and report paper-style metrics."""
