"""Transfer methods: the strategies (which parameters train), layer-wise learning rates, the cached-feature
probe and its regularisation search, LogME."""
