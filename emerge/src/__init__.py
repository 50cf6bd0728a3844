"""The import paths of the product description's snippets (`emerge.src...`), re-exporting the
engine so its examples run as written. New code imports from `emerge` directly."""
