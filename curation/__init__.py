"""medcot: curation."""
