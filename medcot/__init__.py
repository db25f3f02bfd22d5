"""medcot: the ground floor every package stands on."""
