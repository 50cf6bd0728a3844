"""Asset checks: the invariants every materialization must keep, run in the same run as the asset.

Blocking checks (ERROR) stop bad data from flowing on: a failed span or embedding check keeps
the run from materializing anything downstream of that asset. Distribution checks (noise
fraction, cluster-size balance, label balance) warn: a lopsided clustering is worth a look but
is not corrupt data. Bounds are run config of each check (launchpad: `ops: <check op name>`).
The logic is in `emerge.validation`; this module only wires it.
"""

import dagster as dg
import numpy as np
import polars as pl

from emerge import validation
from emerge.label_scheme import CLUSTERS, TOPICS
from emerge_assets.assets.clustering import LAZY_SOURCES
from emerge_assets.metadata import markdown_table
from emerge_assets.partitions import document_source
from emerge_assets.run_config import ClusterBounds, LabelBalanceBounds
from emerge_resources import EmergeStorage

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
SAME_SOURCE = dg.AssetIn()  # the checked partition of another per-source asset


def by_source(context: dg.AssetCheckExecutionContext, **inputs: pl.DataFrame | dict):
    """(source, {name: frame}) per checked partition: single-run backfills hand checks {source: frame}."""
    for source in context.partition_keys:
        yield source, {name: value[source] if isinstance(value, dict) else value for name, value in inputs.items()}


def per_source_problems(context, check, **inputs) -> dict:
    """`check(**frames) -> problems` for each source; problems keyed by source when a run covers many."""
    problems = {source: found for source, frames in by_source(context, **inputs) if (found := check(**frames))}
    return next(iter(problems.values())) if len(context.partition_keys) == 1 and problems else problems


def result(problems: dict | list, severity=ERROR, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=not problems, severity=severity,
                               metadata={"problems": dg.MetadataValue.json(problems or {}), **metadata})


@dg.asset_check(asset="spans", partitions_def=document_source, blocking=True, additional_ins={"raw_texts": SAME_SOURCE},
                description="Every span's text_span equals its document text[start_char:end_char].")
def spans_are_document_substrings(context: dg.AssetCheckExecutionContext, spans, raw_texts) -> dg.AssetCheckResult:
    from emerge.ingest import document_texts

    examples = []

    def check(spans, raw_texts):
        bad = validation.span_substring_violations(spans, document_texts(raw_texts))
        examples.append(bad.head(5))
        return {"violations": bad.height} if bad.height else {}

    problems = per_source_problems(context, check, spans=spans, raw_texts=raw_texts)
    checked = sum(f["spans"].height for _, f in by_source(context, spans=spans))
    return result(problems, spans_checked=checked, examples=markdown_table(pl.concat(examples)))


@dg.asset_check(asset="spans", partitions_def=document_source, blocking=True,
                description="No empty span, no repeated (doc_id, start_char, end_char) row, unique span_idx, "
                            "and at least one span.")
def spans_have_no_empty_or_duplicate_rows(context: dg.AssetCheckExecutionContext, spans) -> dg.AssetCheckResult:
    problems = per_source_problems(
        context, lambda spans: validation.span_row_problems(spans) | ({} if spans.height else {"no_spans": 1}),
        spans=spans)
    return result(problems)


@dg.asset_check(asset="span_embeddings", partitions_def=document_source, blocking=True,
                additional_ins={"spans": SAME_SOURCE},
                description="Span vectors are finite and non-zero, one per span, in the spans' order.")
def embeddings_are_finite_and_nonzero(context: dg.AssetCheckExecutionContext, span_embeddings,
                                      spans) -> dg.AssetCheckResult:
    from emerge.embedding import vectors_of

    def check(span_embeddings, spans):
        problems = validation.embedding_problems(vectors_of(span_embeddings))
        if span_embeddings.height != spans.height or not span_embeddings["span_idx"].equals(spans["span_idx"]):
            problems["rows_not_aligned_with_spans"] = abs(span_embeddings.height - spans.height) or 1
        return problems

    return result(per_source_problems(context, check, span_embeddings=span_embeddings, spans=spans))


@dg.asset_check(asset="topic_scores", partitions_def=document_source, blocking=True,
                additional_ins={"spans": SAME_SOURCE},
                description="Each scored span is a span of the source, scored once, with relevance in [0, 1] and a "
                            "topic name wherever it has a topic.")
def topic_scores_are_one_valid_row_per_span(context: dg.AssetCheckExecutionContext, topic_scores,
                                            spans) -> dg.AssetCheckResult:
    return result(per_source_problems(context, validation.topic_score_problems, topic_scores=topic_scores,
                                      spans=spans))


@dg.asset_check(asset="raw_texts", partitions_def=document_source, blocking=True,
                description="Every file in the source folder has a row in raw_texts (a document or a skip with "
                            "its reason), and doc_ids are unique.")
def raw_texts_account_for_every_file(context: dg.AssetCheckExecutionContext, raw_texts,
                                     storage: EmergeStorage) -> dg.AssetCheckResult:
    problems = {}
    for source, frames in by_source(context, raw_texts=raw_texts):
        inv, folder = frames["raw_texts"], storage.source_dir(source)
        if not folder.is_dir():
            problems[source] = "source folder is gone"
            continue
        missing = validation.unaccounted_files(folder, inv)
        if missing:
            problems[source] = {"files_without_a_row": missing[:20], "count": len(missing)}
        if inv.height != inv["doc_id"].n_unique():
            problems.setdefault(source, {})["duplicate_doc_ids"] = inv.height - inv["doc_id"].n_unique()
    return result(problems)


@dg.asset_check(asset="hdbscan_clusters",
                description="Noise fraction and cluster-size balance of the fit within the configured bounds "
                            "(warns: a lopsided clustering needs a look, e.g. another min_cluster_size).")
def clusters_within_bounds(config: ClusterBounds, hdbscan_clusters: pl.DataFrame) -> dg.AssetCheckResult:
    labels = hdbscan_clusters["cluster_id"]
    noise = float((labels < 0).mean()) if len(labels) else 1.0
    sizes = labels.filter(labels >= 0).value_counts()["count"] if len(labels) else pl.Series([], dtype=pl.UInt32)
    balance = float(sizes.min() / sizes.max()) if len(sizes) else 0.0
    problems = {}
    if noise > config.max_noise_fraction:
        problems["noise_fraction"] = f"{noise:.3f} > {config.max_noise_fraction}"
    if len(sizes) and balance < config.min_size_balance:
        problems["size_balance"] = f"{balance:.3f} < {config.min_size_balance}"
    if len(sizes) < config.min_clusters:
        problems["clusters"] = f"{len(sizes)} < {config.min_clusters}"
    return result(problems, severity=WARN, noise_fraction=round(noise, 4), size_balance=round(balance, 4),
                  clusters=len(sizes))


PROVENANCE_SCHEMA = {"text_span": (pl.String,), "doc_id": (pl.String,), "source": (pl.String,),
                     "start_char": (pl.Int64, pl.Int32), "end_char": (pl.Int64, pl.Int32),
                     "relevance": (pl.Float32, pl.Float64), "quality": (pl.Float32, pl.Float64)}
DATASET_LABELS = {"curated_dataset": CLUSTERS, "curated_topic_dataset": TOPICS}  # each exported dataset's scheme
SCHEMA = "The exported dataset has the documented columns and types, no null text, label or provenance, " \
         "scores within [0, 1], and rows."
BALANCE = "No label dominates the dataset (warns; cap with max_spans_per_cluster)."
ACCOUNTS = "Every input of every source is accounted for: the dataset's outcome table covers all raw_texts " \
           "rows, and every dataset row comes from a kept document."


def dataset_schema(asset: str, df: pl.DataFrame) -> dg.AssetCheckResult:
    scheme = DATASET_LABELS[asset]
    label_col = scheme.label_col
    columns = PROVENANCE_SCHEMA | {label_col: scheme.label_dtypes, scheme.title_col: (pl.String,)}
    problems = validation.schema_problems(df, columns,
                                          unit_interval=("relevance", "quality"),
                                          not_null=("text_span", "doc_id", "source", "start_char", "end_char",
                                                    label_col))
    if df.height == 0:
        problems.append("no rows")
    return result(problems, rows=df.height, columns=", ".join(df.columns))


def dataset_balance(asset: str, config: LabelBalanceBounds, df: pl.DataFrame) -> dg.AssetCheckResult:
    share, balance = validation.label_shares(df, DATASET_LABELS[asset].label_col)
    problems = {}
    if share > config.max_label_share:
        problems["largest_label_share"] = f"{share:.3f} > {config.max_label_share}"
    if balance < config.min_label_balance:
        problems["label_balance"] = f"{balance:.3f} < {config.min_label_balance}"
    return result(problems, severity=WARN, largest_label_share=round(share, 4), label_balance=round(balance, 4))


def dataset_accounts(asset: str, context: dg.AssetCheckExecutionContext, df: pl.DataFrame, raw_texts: dict,
                     storage: EmergeStorage) -> dg.AssetCheckResult:
    # two small columns of each source's scan: the check never holds every source's texts
    inventory = (pl.concat([f.lazy().select("doc_id", "status") for f in raw_texts.values()]).collect() if raw_texts
                 else pl.DataFrame({"doc_id": [], "status": []}))
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    reported = meta["inputs"].value if "inputs" in meta else None
    kept = set(inventory.filter(pl.col("status") == "kept")["doc_id"].to_list())
    problems = {}
    if reported != inventory.height:
        problems["inputs"] = f"dataset reports {reported} inputs, raw_texts holds {inventory.height}"
    strays = set(df["doc_id"].to_list()) - kept
    if strays:
        problems["rows_from_unknown_documents"] = len(strays)
    missing_folders = sorted(s for s in raw_texts if not storage.source_dir(s).is_dir())
    return result(problems, inputs=inventory.height, sources=len(raw_texts),
                  sources_whose_folder_is_gone=", ".join(missing_folders) or "none")


@dg.asset_check(asset="curated_dataset", blocking=True, description=SCHEMA)
def curated_dataset_schema(curated_dataset: pl.DataFrame) -> dg.AssetCheckResult:
    return dataset_schema("curated_dataset", curated_dataset)


@dg.asset_check(asset="curated_dataset", description=BALANCE)
def curated_dataset_label_balance(config: LabelBalanceBounds, curated_dataset: pl.DataFrame) -> dg.AssetCheckResult:
    return dataset_balance("curated_dataset", config, curated_dataset)


@dg.asset_check(asset="curated_dataset", blocking=True, additional_ins={"raw_texts": LAZY_SOURCES}, description=ACCOUNTS)
def curated_dataset_accounts_for_every_input(context: dg.AssetCheckExecutionContext, curated_dataset: pl.DataFrame,
                                             raw_texts: dict, storage: EmergeStorage) -> dg.AssetCheckResult:
    return dataset_accounts("curated_dataset", context, curated_dataset, raw_texts, storage)


@dg.asset_check(asset="curated_topic_dataset", blocking=True, description=SCHEMA)
def curated_topic_dataset_schema(curated_topic_dataset: pl.DataFrame) -> dg.AssetCheckResult:
    return dataset_schema("curated_topic_dataset", curated_topic_dataset)


@dg.asset_check(asset="curated_topic_dataset", description=BALANCE)
def curated_topic_dataset_label_balance(config: LabelBalanceBounds,
                                        curated_topic_dataset: pl.DataFrame) -> dg.AssetCheckResult:
    return dataset_balance("curated_topic_dataset", config, curated_topic_dataset)


@dg.asset_check(asset="curated_topic_dataset", blocking=True, additional_ins={"raw_texts": LAZY_SOURCES},
                description=ACCOUNTS)
def curated_topic_dataset_accounts_for_every_input(context: dg.AssetCheckExecutionContext,
                                                   curated_topic_dataset: pl.DataFrame, raw_texts: dict,
                                                   storage: EmergeStorage) -> dg.AssetCheckResult:
    return dataset_accounts("curated_topic_dataset", context, curated_topic_dataset, raw_texts, storage)


CHECKS = [spans_are_document_substrings, spans_have_no_empty_or_duplicate_rows, embeddings_are_finite_and_nonzero,
          raw_texts_account_for_every_file, clusters_within_bounds, topic_scores_are_one_valid_row_per_span,
          curated_dataset_schema, curated_dataset_label_balance, curated_dataset_accounts_for_every_input,
          curated_topic_dataset_schema, curated_topic_dataset_label_balance,
          curated_topic_dataset_accounts_for_every_input]
