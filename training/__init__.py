"""medcot: training."""
