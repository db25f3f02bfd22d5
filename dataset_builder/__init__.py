"""medcot: dataset_builder."""
