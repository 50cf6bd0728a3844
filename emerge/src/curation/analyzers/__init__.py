"""`emerge.src.curation.analyzers` (product-description paths): see `emerge.src`."""
