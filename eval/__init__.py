"""medcot: eval."""
