"""What a run leaves: the model and run files, the model card, plots, the Hub push."""
