"""Per-source stages: raw_texts -> spans -> span_embeddings, one partition per document source."""

import time

import dagster as dg
import polars as pl

from emerge.ingest import IngestResult, inventory, kept_documents, read_source
from emerge_assets.metadata import counts_table, markdown_table
from emerge_assets.partitions import document_source
from emerge_assets.pools import GPU_POOL
from emerge_assets.run_config import RawTextsConfig, SpansConfig
from emerge_resources import EmbeddingModelResource, EmergeStorage


@dg.asset(partitions_def=document_source, group_name="curation", kinds={"polars"},
          description="Every input file/record of one source folder: kept documents and skips with reasons.")
def raw_texts(context: dg.AssetExecutionContext, config: RawTextsConfig, storage: EmergeStorage) -> dg.Output:
    source = context.partition_key
    result: IngestResult = read_source(storage.source_dir(source), source=source, config=config.to_engine())
    table = inventory(result)
    docs = result.documents
    context.log.info(f"{source}: {docs.height} documents kept, {result.skipped.height} inputs skipped")
    return dg.Output(table, metadata={
        "dagster/row_count": table.height,
        "documents": docs.height,
        "skipped": result.skipped.height,
        "skipped_by_reason": counts_table(result.skip_counts),
        "skipped_inputs": markdown_table(result.skipped.select("path", "record", "reason", "detail")),
        "total_chars": int(docs["n_chars"].sum()),
        "folder": dg.MetadataValue.path(str(storage.source_dir(source))),
    })


@dg.asset(partitions_def=document_source, group_name="curation", kinds={"polars"},
          description="Dense overlapping spans snapped to word boundaries; text_span == text[start_char:end_char].")
def spans(context: dg.AssetExecutionContext, config: SpansConfig, raw_texts: pl.DataFrame,
          embedding_model: EmbeddingModelResource) -> dg.Output:
    span_cfg = config.to_engine()
    from emerge.spans import build_spans

    docs = kept_documents(raw_texts)
    result, too_short = build_spans(docs, embedding_model.get_tokenizer(), span_cfg)
    per_doc = result.group_by("doc_id").len()["len"] if result.height else pl.Series([0])
    context.log.info(f"{result.height} spans from {docs.height - too_short.height} documents; "
                     f"{too_short.height} documents shorter than min_len")
    return dg.Output(result, metadata={
        "dagster/row_count": result.height,
        "documents_with_spans": docs.height - too_short.height,
        "documents_shorter_than_min_len": too_short.height,
        "spans_per_document_mean": float(per_doc.mean()),
        "span_tokens_mean": float(result["n_tokens"].mean()) if result.height else 0.0,
        "short_documents": markdown_table(too_short.select("doc_id", "detail")),
        "preview": markdown_table(result.select("doc_id", "n_tokens", "text_span").head(8)),
    })


@dg.asset(partitions_def=document_source, group_name="curation", kinds={"pytorch", "polars"}, pool=GPU_POOL,
          description="Late-chunked span vectors: one transformer pass per document, spans mean-pooled "
                      "from token embeddings via prefix sums. The token embeddings are kept (float16) for "
                      "topic scoring.")
def span_embeddings(context: dg.AssetExecutionContext, raw_texts: pl.DataFrame, spans: pl.DataFrame,
                    embedding_model: EmbeddingModelResource, storage: EmergeStorage) -> dg.Output:
    from emerge.embedding import TokenStore, embed_spans, embeddings_frame

    encoder = embedding_model.get_encoder()
    docs = kept_documents(raw_texts)
    store = TokenStore()
    t0 = time.perf_counter()
    vectors = embed_spans(docs.filter(pl.col("doc_id").is_in(spans["doc_id"].unique().implode())), spans,
                          encoder, progress=True, on_document=store.add)
    wall = time.perf_counter() - t0
    token_path = storage.token_store_path(context.partition_key)
    store.save(token_path)  # reused by topic_scores: no second transformer pass
    frame = embeddings_frame(spans, vectors)
    return dg.Output(frame, metadata={
        "dagster/row_count": frame.height,
        "dimension": int(vectors.shape[1]),
        "model": encoder.name,
        "device": encoder.device,
        "window_tokens": encoder.max_seq_length,
        "wall_seconds": round(wall, 3),
        "spans_per_second": round(frame.height / wall, 1) if wall > 0 else 0.0,
        "token_embeddings_path": dg.MetadataValue.path(str(token_path)),
    })
