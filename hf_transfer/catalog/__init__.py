"""What a model, weights or data string points at: packaged weights, sample data sets, local weight files."""
