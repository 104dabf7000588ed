"""The training loop and what it needs: checkpoints, evaluation and metrics, the launch, the batch-size search."""
