"""Per-source stages: raw_texts -> spans -> span_embeddings, one partition per document source."""

import time

import dagster as dg
import polars as pl

from emerge.ingest import IngestResult, inventory, kept_documents, read_source
from emerge_assets.automation import FOLLOW_INPUTS
from emerge_assets.metadata import counts_table, markdown_table
from emerge_assets.partitions import (SINGLE_RUN, SOURCE_IN, document_source, for_each_source,
                                     latest_partition_metadata)
from emerge_assets.pools import GPU_POOL
from emerge_assets.run_config import RawTextsConfig, SpansConfig
from emerge_resources import EmbeddingModelResource, EmergeStorage


@dg.asset(partitions_def=document_source, group_name="curation", kinds={"polars"}, backfill_policy=SINGLE_RUN,
          description="Every input file/record of one source folder: kept documents and skips with reasons. "
                      "Requested by the source_inbox sensor when the folder's files change.")
def raw_texts(context: dg.AssetExecutionContext, config: RawTextsConfig, storage: EmergeStorage) -> dg.Output:
    from emerge_assets.definitions import ASSETS
    from emerge_assets.run_file import check_run_before_work

    check_run_before_work(context, ASSETS)  # the first step: every later step's config, checked now
    return for_each_source(context, lambda source: read_raw_texts(context, config, storage, source))


def read_raw_texts(context, config: RawTextsConfig, storage: EmergeStorage, source: str) -> dg.Output:
    from emerge.inbox import source_fingerprint

    folder = storage.source_dir(source)
    # taken before reading: files changed during the read make the sensor request another run
    fingerprint = source_fingerprint(folder) if folder.is_dir() else ""
    result: IngestResult = read_source(folder, source=source, config=config.to_engine())
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
        "folder": dg.MetadataValue.path(str(folder)),
        "source_fingerprint": fingerprint,
    })


@dg.asset(partitions_def=document_source, group_name="curation", kinds={"polars"}, backfill_policy=SINGLE_RUN,
          automation_condition=FOLLOW_INPUTS, ins={"raw_texts": SOURCE_IN},
          description="Dense overlapping spans snapped to word boundaries; text_span == text[start_char:end_char].")
def spans(context: dg.AssetExecutionContext, config: SpansConfig, raw_texts: pl.DataFrame | dict,
          embedding_model: EmbeddingModelResource) -> dg.Output:
    span_cfg = config.to_engine()
    tokenizer = embedding_model.get_tokenizer()
    return for_each_source(context, lambda source, raw_texts: span_source(context, span_cfg, tokenizer, raw_texts),
                           raw_texts=raw_texts)


SPAN_CONFIG_KEYS = ("min_len", "max_len", "stride", "length_step")


def span_config_metadata(span_cfg) -> dict[str, int]:
    """The span settings a `spans` partition was cut with, kept in its materialization so the dataset
    stage scores length fit against what the user asked for, not against what it happens to see."""
    effective = {"length_step": span_cfg.length_step or span_cfg.stride}
    return {f"span_{k}": int(effective.get(k, getattr(span_cfg, k))) for k in SPAN_CONFIG_KEYS}


def recorded_span_config(instance, sources: list[str]):
    """The SpanConfig every source's latest `spans` materialization recorded, or None when a source
    recorded none (materialized before it was recorded) or the sources were cut differently."""
    from emerge.config import SpanConfig

    seen = set()
    for source in sources:
        metadata = latest_partition_metadata(instance, "spans", source)
        if not all(f"span_{k}" in metadata for k in SPAN_CONFIG_KEYS):
            return None
        seen.add(tuple(int(metadata[f"span_{k}"].value) for k in SPAN_CONFIG_KEYS))
    if len(seen) != 1:
        return None
    values = dict(zip(SPAN_CONFIG_KEYS, seen.pop()))
    if values["length_step"] == values["stride"]:
        values["length_step"] = None  # the default: lengths step with the stride
    return SpanConfig(**values)


def span_source(context, span_cfg, tokenizer, raw_texts: pl.DataFrame) -> dg.Output:
    from emerge.spans import build_spans

    docs = kept_documents(raw_texts)
    result, too_short = build_spans(docs, tokenizer, span_cfg)
    per_doc = result.group_by("doc_id").len()["len"] if result.height else pl.Series([0])
    context.log.info(f"{result.height} spans from {docs.height - too_short.height} documents; "
                     f"{too_short.height} documents shorter than min_len")
    return dg.Output(result, metadata={
        "dagster/row_count": result.height,
        **span_config_metadata(span_cfg),
        "documents_with_spans": docs.height - too_short.height,
        "documents_shorter_than_min_len": too_short.height,
        "spans_per_document_mean": float(per_doc.mean()),
        "span_tokens_mean": float(result["n_tokens"].mean()) if result.height else 0.0,
        "short_documents": markdown_table(too_short.select("doc_id", "detail")),
        "preview": markdown_table(result.select("doc_id", "n_tokens", "text_span").head(8)),
    })


@dg.asset(partitions_def=document_source, group_name="curation", kinds={"pytorch", "polars"}, pool=GPU_POOL,
          backfill_policy=SINGLE_RUN, automation_condition=FOLLOW_INPUTS,
          ins={"raw_texts": SOURCE_IN, "spans": SOURCE_IN},
          description="Late-chunked span vectors: one transformer pass per document, spans mean-pooled "
                      "from token embeddings via prefix sums. The token embeddings are kept (float16) for "
                      "topic scoring.")
def span_embeddings(context: dg.AssetExecutionContext, raw_texts: pl.DataFrame | dict, spans: pl.DataFrame | dict,
                    embedding_model: EmbeddingModelResource, storage: EmergeStorage) -> dg.Output:
    encoder = embedding_model.get_encoder()  # once per step, however many sources it covers
    return for_each_source(context, lambda source, raw_texts, spans: embed_source(
        encoder, storage, source, raw_texts, spans), raw_texts=raw_texts, spans=spans)


def embed_source(encoder, storage: EmergeStorage, source: str, raw_texts: pl.DataFrame,
                 spans: pl.DataFrame) -> dg.Output:
    from emerge.embedding import TokenStore, embed_spans, embeddings_frame

    docs = kept_documents(raw_texts)
    store = TokenStore()
    t0 = time.perf_counter()
    vectors = embed_spans(docs.filter(pl.col("doc_id").is_in(spans["doc_id"].unique().implode())), spans,
                          encoder, progress=True, on_document=store.add)
    wall = time.perf_counter() - t0
    token_path = storage.token_store_path(source)
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
