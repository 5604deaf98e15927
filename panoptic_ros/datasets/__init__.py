"""Datasets: the ground-truth frame type and readers/writers for standard panoptic layouts."""
