"""Objectives: the interface the loop uses, the supervised CE, and the table of loss terms."""
