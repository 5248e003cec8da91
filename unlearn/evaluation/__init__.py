"""Measuring an unlearned model: metrics, output-space distribution, the Reminiscence Attack (rea/)."""
