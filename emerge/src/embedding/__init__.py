"""`emerge.src.embedding` (product-description paths): see `emerge.src`."""
