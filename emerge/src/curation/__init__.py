"""`emerge.src.curation` (product-description paths): see `emerge.src`."""
