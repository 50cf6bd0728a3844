"""One partition per document source (a sub-folder of the input root)."""

import dagster as dg

document_source = dg.DynamicPartitionsDefinition(name="document_source")
