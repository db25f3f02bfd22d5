"""curation: the curation stages (seeds, CoT generation, expansion, specialty, five-strike) and the expert review app."""
