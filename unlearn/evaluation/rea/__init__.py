"""The Reminiscence Attack's library: relearning curves, their statistics, verdicts, references."""
