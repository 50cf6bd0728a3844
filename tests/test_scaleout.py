"""Scale-out profile: the same assets on Dagster's celery executor, Redis and PostgreSQL.

The `scaleout` test starts a real Redis (loopback), a private PostgreSQL cluster and two
dagster-celery workers, points DAGSTER_HOME at deploy/production/dagster.yaml, and launches two
`embed_sources` runs (one per source partition) at the same time with the documented CLI
commands. It skips, naming the reason, only when the services cannot be started here; with
EMERGE_REQUIRE_SCALEOUT=1 (set by .ci/run) that is a failure instead.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

from tests.conftest import REPO

PROFILE = REPO / "deploy" / "production"
SOURCES = ["alpha", "beta"]
PER_SOURCE_ASSETS = ["raw_texts", "spans", "span_embeddings"]
MODEL_ASSETS = ["span_embeddings", "topic_scores", "fine_tuned_model", "fine_tuned_topic_model"]  # run the model
CPU_ASSETS = ["raw_texts", "spans", "umap_projection", "hdbscan_clusters", "span_clusters", "curated_dataset",
              "curated_topic_dataset"]  # tokenizer at most: never wait for the GPU
REQUIRE = os.environ.get("EMERGE_REQUIRE_SCALEOUT") == "1"
HOLDER = "scaleout-test-holds-the-gpu"

TOPICS = {
    "alpha": ["sourdough starter feeding schedule and hydration", "braising short ribs in red wine",
              "tempering chocolate on a marble slab", "pickling cucumbers with dill and garlic",
              "folding laminated dough for croissants", "roasting root vegetables at high heat"],
    "beta": ["replacing the chain on a road bicycle", "truing a wheel with a spoke wrench",
             "bleeding hydraulic disc brakes", "setting saddle height and setback",
             "patching a tubeless tyre on the trail", "indexing a rear derailleur"],
}


def write_corpus(root: Path) -> dict[str, int]:
    """Two small sources of plain-text documents; returns documents per source."""
    counts = {}
    for source, topics in TOPICS.items():
        folder = root / source
        folder.mkdir(parents=True)
        for i, topic in enumerate(topics):
            text = (f"Notes on {topic}. The first step matters more than people think, so take it slowly. "
                    f"After that, {topic} becomes a matter of patience and repetition. "
                    f"Document {i} of the {source} source ends with a short checklist for {topic}.")
            (folder / f"doc_{i:02d}.txt").write_text(text)
        counts[source] = len(topics)
    return counts


def unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"EMERGE_REQUIRE_SCALEOUT=1 but {reason}")
    pytest.skip(reason)


# --- fast checks of the profile's wiring (no services) ---------------------------------------------

def test_model_using_assets_are_in_the_gpu_pool():
    from emerge_assets.definitions import defs
    from emerge_assets.pools import GPU_POOL

    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    present = [name for name in MODEL_ASSETS if name in keys]
    assert {"span_embeddings", "topic_scores"} <= set(present)
    for name in present:
        assert defs.resolve_assets_def(name).op.pool == GPU_POOL, name
    for name in CPU_ASSETS:
        assert defs.resolve_assets_def(name).op.pool is None, name


def test_scaleout_defs_are_the_same_assets_with_another_executor(monkeypatch):
    try:
        import dagster_celery  # noqa: F401
    except ImportError:
        unavailable("the scaleout extra (dagster-celery) is not installed")
    from emerge_assets import definitions as local
    from emerge_assets import scaleout

    defs = scaleout.build_defs(scaleout.build_executor("celery"), assets_url="s3://bucket/emerge/assets")
    assert set(defs.resolve_all_asset_keys()) == set(local.defs.resolve_all_asset_keys())
    assert ({j.name for j in defs.resolve_all_job_defs()} >= {j.name for j in local.defs.resolve_all_job_defs()})
    assert defs.resolve_job_def("embed_sources").executor_def.name == "emerge_celery"
    assert defs.resources["io_manager"].base_path == "s3://bucket/emerge/assets"
    assert set(defs.resources) == set(local.defs.resources)
    assert scaleout.build_defs(scaleout.build_executor("multiprocess")).resolve_job_def(
        "fit_clusters").executor_def.name == "multiprocess"
    with pytest.raises(ValueError, match="EMERGE_EXECUTOR"):
        scaleout.build_executor("dask")


def test_parquet_io_manager_writes_to_an_fsspec_url(tmp_path, tiny_model_dir):
    """Asset values on a non-local fsspec filesystem (memory://, the same code path as s3://)."""
    from upath import UPath

    from emerge_assets.assets.documents import raw_texts, spans
    from emerge_assets.definitions import build_resources
    from emerge_resources import ParquetIOManager

    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    resources = build_resources(str(tmp_path / "home"), str(corpus), str(tiny_model_dir), device="cpu")
    resources["io_manager"] = ParquetIOManager(base_path="memory://emerge-test/assets")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("document_source", ["alpha"])
        assert dg.materialize([raw_texts, spans], partition_key="alpha", instance=instance,
                              resources=resources).success
    with UPath("memory://emerge-test/assets/spans/alpha.parquet").open("rb") as fh:
        assert pl.read_parquet(fh).height > 0
    assert not (tmp_path / "home" / "assets").exists()


def test_k8s_example_parses_and_puts_model_steps_on_gpu_nodes():
    values = yaml.safe_load((REPO / "deploy" / "k8s" / "values.yaml").read_text())
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"][-1] == "emerge_assets.scaleout"
    gpu = yaml.safe_load((REPO / "deploy" / "k8s" / "gpu-steps.yaml").read_text())
    config = gpu["execution"]["config"]["per_step_k8s_config"]["span_embeddings"]
    assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert config["pod_spec_config"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    instance = yaml.safe_load((PROFILE / "dagster.yaml").read_text())
    assert instance["concurrency"]["pools"]["default_limit"] == values["concurrency"]["pools"]["defaultLimit"] == 1


# --- the real thing: Postgres + Redis + two celery workers, two concurrent runs ---------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_model_dir):
    try:
        import dagster_celery  # noqa: F401
        import dagster_postgres  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        unavailable(f"the scaleout extra is not installed (pip install -e '.[scaleout]'): {exc}")
    from tests import scaleout_services as svc

    t0 = time.monotonic()
    try:
        svc.ensure_installed()
    except svc.ServiceUnavailable as exc:
        unavailable(str(exc))
    installed = time.monotonic() - t0

    work = tmp_path_factory.mktemp("scaleout")
    home, dagster_home, corpus = work / "emerge_home", work / "dagster_home", work / "corpus"
    dagster_home.mkdir()
    shutil.copy(PROFILE / "dagster.yaml", dagster_home / "dagster.yaml")
    docs = write_corpus(corpus)
    run_config = work / "run_config.yaml"
    run_config.write_text(yaml.safe_dump(
        {"resources": {"embedding_model": {"config": {"model_name_or_path": str(tiny_model_dir), "device": "cpu"}}}}))

    redis_server = svc.Redis(work)
    postgres = svc.Postgres()
    workers = []
    try:
        try:
            redis_server.start()
            postgres.start()
        except svc.ServiceUnavailable as exc:
            unavailable(str(exc))
        env = {**os.environ, **postgres.env,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "DAGSTER_HOME": str(dagster_home), "EMERGE_HOME": str(home), "EMERGE_INPUT_ROOT": str(corpus),
               "EMERGE_EXECUTOR": "celery", "EMERGE_CELERY_BROKER": f"{redis_server.url}/0",
               "EMERGE_CELERY_BACKEND": f"{redis_server.url}/1", "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
        env.pop("EMERGE_ASSETS_URL", None)
        # As the README says: create the schema once, before the two workers each open the instance
        # at the same moment and race on CREATE TABLE (one of them then dies with DuplicateObject).
        migrate = subprocess.run(dagster_cli("instance", "migrate"), env=env, capture_output=True, text=True,
                                 timeout=180)
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        started = time.monotonic()
        workers = [svc.CeleryWorker(name, PROFILE / "celery-worker.yaml", env, work).start() for name in ("w1", "w2")]
        for w in workers:
            svc.wait_for(w.ready, 120, f"celery worker {w.name}", w.log)
        services_ready = time.monotonic() - started
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            yield {"work": work, "home": home, "corpus": corpus, "env": env, "docs": docs, "run_config": run_config,
                   "workers": workers, "timings": {"install_s": installed, "workers_ready_s": services_ready}}
    finally:
        for w in workers:
            w.stop()
        redis_server.stop()
        postgres.stop()


def dagster_cli(*args) -> list[str]:
    return [str(Path(sys.executable).with_name("dagster")), *args]


@pytest.mark.scaleout
@pytest.mark.timeout(600)
def test_two_partitions_in_parallel_runs_on_celery_and_postgres(cluster):
    env, work = cluster["env"], cluster["work"]
    register = subprocess.run([sys.executable, "-m", "emerge_assets.demo", "--register-only",
                               "--input-root", str(cluster["corpus"])],
                              env=env, capture_output=True, text=True, timeout=120)
    assert register.returncode == 0, register.stderr[-3000:]

    # Hold the only "gpu" slot (limit 1 from the profile's pools.default_limit) so that both runs
    # must reach span_embeddings and wait for it: the pool is exercised, not just trivially met.
    instance = dg.DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    pool_storage = instance.event_log_storage
    pool_storage.initialize_concurrency_limit_to_default("gpu")
    assert pool_storage.claim_concurrency_slot("gpu", HOLDER, "hold").is_claimed

    # The documented command, twice at once: each run's steps go to the celery workers via Redis.
    t0 = time.monotonic()
    procs = {}
    for source in SOURCES:
        log = (work / f"run-{source}.log").open("w")
        procs[source] = subprocess.Popen(
            dagster_cli("job", "execute", "-m", "emerge_assets.scaleout", "-j", "embed_sources",
                        "--tags", json.dumps({"dagster/partition": source}), "-c", str(cluster["run_config"])),
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def waiting_runs() -> set[str]:  # runs whose span_embeddings step waits for a gpu slot
            for proc in procs.values():
                assert proc.poll() is None, "a run ended while the gpu slot was held"
            pending = pool_storage.get_concurrency_info("gpu").pending_steps
            return {p.run_id for p in pending if p.run_id != HOLDER and p.step_key == "span_embeddings"}
        deadline = time.monotonic() + 240
        while len(waiting := waiting_runs()) < 2:
            assert time.monotonic() < deadline, f"runs never reached the gpu pool (waiting: {waiting})"
            time.sleep(0.5)
        held_s = time.monotonic() - t0
        info = pool_storage.get_concurrency_info("gpu")
        assert [c.run_id for c in info.claimed_slots] == [HOLDER]
        for run_id in waiting:  # upstream steps done, the model step not started
            started = {r.dagster_event.step_key for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}
            assert {"raw_texts", "spans"} <= started and "span_embeddings" not in started, started
    finally:
        pool_storage.free_concurrency_slots_for_run(HOLDER)
    for source, proc in procs.items():
        proc.wait(timeout=420)
    wall = time.monotonic() - t0
    outputs = {s: (work / f"run-{s}.log").read_text(errors="replace") for s in SOURCES}
    for source, proc in procs.items():
        assert proc.returncode == 0, outputs[source][-4000:]

    runs = instance.get_runs(filters=dg.RunsFilter(job_name="embed_sources"))
    assert sorted(r.tags["dagster/partition"] for r in runs) == SOURCES
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [r.status for r in runs]

    # Parallel: both runs were in progress at the same time, and steps ran in both celery workers.
    windows, steps, workers = {}, {}, set()
    for run in runs:
        source = run.tags["dagster/partition"]
        stats = instance.get_run_stats(run.run_id)
        windows[source] = (stats.start_time, stats.end_time)
        starts = {}
        for record in instance.all_logs(run.run_id):
            ev = record.dagster_event
            if ev is None:
                continue
            if ev.event_type == dg.DagsterEventType.STEP_START:
                starts[ev.step_key] = record.timestamp
            elif ev.event_type == dg.DagsterEventType.STEP_SUCCESS:
                steps[(source, ev.step_key)] = (starts[ev.step_key], record.timestamp)
            elif ev.event_type == dg.DagsterEventType.ENGINE_EVENT:
                meta = ev.engine_event_data.metadata if ev.engine_event_data else {}
                if "Celery worker" in meta:
                    workers.add(meta["Celery worker"].value.split("@")[0])
    (a0, a1), (b0, b1) = windows["alpha"], windows["beta"]
    assert a0 < b1 and b0 < a1, f"runs did not overlap: {windows}"
    assert workers == {"w1", "w2"}, workers
    assert all((s, a) in steps for s in SOURCES for a in PER_SOURCE_ASSETS), steps  # (+ asset check steps)

    # Pool "gpu" (limit 1 in the profile): the two span_embeddings steps never ran at the same time.
    (e0, e1), (f0, f1) = steps[("alpha", "span_embeddings")], steps[("beta", "span_embeddings")]
    assert e1 <= f0 or f1 <= e0, f"span_embeddings steps overlapped despite the gpu pool: {steps}"
    slots = instance.event_log_storage.get_concurrency_info("gpu")
    assert slots.limit == 1 and not slots.claimed_slots and not slots.pending_steps, slots

    # Nothing lost: every document, span and vector of both partitions, matching a local recomputation.
    from emerge.config import SpanConfig
    from emerge.encoder import load_tokenizer
    from emerge.ingest import inventory, kept_documents, read_source
    from emerge.spans import build_spans

    tokenizer = load_tokenizer(None)
    for asset in PER_SOURCE_ASSETS:
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(SOURCES), asset
    for source in SOURCES:
        docs = kept_documents(pl.read_parquet(cluster["home"] / "assets" / "raw_texts" / f"{source}.parquet"))
        assert docs.height == cluster["docs"][source]
        expected, _ = build_spans(kept_documents(inventory(read_source(cluster["corpus"] / source, source=source))),
                                  tokenizer, SpanConfig())
        spans = pl.read_parquet(cluster["home"] / "assets" / "spans" / f"{source}.parquet")
        emb = pl.read_parquet(cluster["home"] / "assets" / "span_embeddings" / f"{source}.parquet")
        key = ["span_idx", "doc_id", "start_char", "end_char"]
        assert spans.height == emb.height == expected.height > 0
        assert spans.select(key).sort(key).equals(expected.select(key).sort(key))
        assert emb.select("span_idx", "doc_id").sort(key[:2]).equals(spans.select(key[:2]).sort(key[:2]))
        assert np.isfinite(emb["embedding"].to_numpy()).all()
        assert set(emb["doc_id"]) == set(docs["doc_id"])
        assert (cluster["home"] / "token_embeddings" / f"{source}.npz").exists()

    logs = "\n".join([*outputs.values(), *(w.log.read_text(errors="replace") for w in cluster["workers"])])
    assert "database is locked" not in logs.lower()
    assert "Traceback" not in logs, logs[-4000:]
    print(f"\n[scaleout] two runs in {wall:.1f}s; services installed in {cluster['timings']['install_s']:.1f}s, "
          f"workers ready in {cluster['timings']['workers_ready_s']:.1f}s; workers used {sorted(workers)}; "
          f"gpu slot held {held_s:.1f}s until both runs waited for it; steps "
          + ", ".join(f"{s}/{k} {b - a:.1f}s" for (s, k), (a, b) in sorted(steps.items()) if k in PER_SOURCE_ASSETS))


@pytest.mark.parametrize("base", ["local", "memory://emerge-lazy/assets"])
def test_lazy_inputs_arrive_as_scans_one_per_materialized_partition(tmp_path, base):
    """`lazy: True` input metadata: each partition a LazyFrame (a scan on local disk), missing ones
    skipped, so the global assets read only what they ask for."""
    from emerge_assets.assets.clustering import LAZY_SOURCES
    from emerge_resources import ParquetIOManager

    parts = dg.DynamicPartitionsDefinition(name="lazy_test_source")

    @dg.asset(partitions_def=parts)
    def per_source(context) -> pl.DataFrame:
        return pl.DataFrame({"source": [context.partition_key] * 3, "x": [1, 2, 3]})

    seen = {}

    @dg.asset(ins={"per_source": LAZY_SOURCES})
    def combined(per_source: dict) -> pl.DataFrame:
        seen.update({k: type(v) for k, v in per_source.items()})
        return pl.concat([f.filter(pl.col("x") > 1).collect() for f in per_source.values()])

    io = ParquetIOManager(base_path=str(tmp_path / "assets") if base == "local" else base)
    with dg.instance_for_test() as instance:
        def materialize_combined():
            seen.clear()
            return dg.materialize([per_source.to_source_asset(), combined], instance=instance,
                                  resources={"io_manager": io}, selection=[combined])

        instance.add_dynamic_partitions("lazy_test_source", ["a"])
        assert dg.materialize([per_source], partition_key="a", instance=instance, resources={"io_manager": io}).success
        one = materialize_combined()  # the only source is still {source: frame}, not a bare frame
        assert one.success and seen == {"a": pl.LazyFrame}
        instance.add_dynamic_partitions("lazy_test_source", ["b", "c"])
        assert dg.materialize([per_source], partition_key="c", instance=instance, resources={"io_manager": io}).success
        result = materialize_combined()  # "b" never materialized: skipped
    assert result.success
    assert seen == {"a": pl.LazyFrame, "c": pl.LazyFrame}
    assert sorted(result.output_for_node("combined")["source"].to_list()) == ["a", "a", "c", "c"]


@pytest.mark.parametrize("base", ["local", "memory://emerge-spill/assets"])
def test_a_step_over_many_sources_reads_and_keeps_one_source_at_a_time(tmp_path, base, monkeypatch):
    """Single-run backfill: the per-source inputs arrive as scans, each source's body gets its own
    collected frame, each output is spilled when computed and becomes its partition's file (moved
    on local disk, written from its scan elsewhere); the spill folder is gone afterwards."""
    import tempfile

    from emerge_assets.partitions import SINGLE_RUN, SOURCE_IN, for_each_source
    from emerge_resources import ParquetIOManager

    spill_root = tmp_path / "tmp"
    spill_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_root))
    parts = dg.DynamicPartitionsDefinition(name="spill_test_source")

    @dg.asset(partitions_def=parts, backfill_policy=SINGLE_RUN)
    def upstream(context) -> dg.Output:
        return for_each_source(context, lambda s: dg.Output(pl.DataFrame({"source": [s] * 3, "x": [1, 2, 3]})))

    handed, bodies = {}, {}

    @dg.asset(partitions_def=parts, backfill_policy=SINGLE_RUN, ins={"upstream": SOURCE_IN})
    def downstream(context, upstream) -> dg.Output:
        if isinstance(upstream, dict):  # several partitions; one arrives bare, as a DataFrame
            handed.update({k: type(v) for k, v in upstream.items()})
        else:
            handed["one partition"] = type(upstream)

        this_step = []

        def one(source, upstream):
            bodies[source] = type(upstream)
            this_step.append(source)
            # every source before this one is already out of memory, in its spill file
            assert len(list(spill_root.rglob("*.parquet"))) == len(this_step) - 1
            return dg.Output(upstream.with_columns(y=pl.col("x") * 10), metadata={"rows": upstream.height})
        return for_each_source(context, one, upstream=upstream)

    from emerge_resources import io_manager

    encoded = []  # frames the IO manager encodes to Parquet itself (a spill moved into place is not one)
    write = io_manager.write_parquet
    monkeypatch.setattr(io_manager, "write_parquet", lambda frame, dest: (encoded.append(frame.height),
                                                                          write(frame, dest)))
    io = ParquetIOManager(base_path=str(tmp_path / "assets") if base == "local" else base)
    keys = ["a", "b c", "d"]
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("spill_test_source", keys)
        result = dg.materialize([upstream, downstream], instance=instance, resources={"io_manager": io}, tags=tags)
        assert result.success
        single = dg.materialize([upstream.to_source_asset(), downstream], selection=[downstream], partition_key="d",
                                instance=instance, resources={"io_manager": io})
        assert single.success
    assert handed == {k: pl.LazyFrame for k in keys} | {"one partition": pl.DataFrame}
    assert bodies == {k: pl.DataFrame for k in keys}
    mats = result.asset_materializations_for_node("downstream")
    assert {m.partition: m.metadata["rows"].value for m in mats} == {k: 3 for k in keys}
    loader = io.create_io_manager(None)
    for key in keys:
        path = loader._base_path / "downstream" / f"{key}.parquet"
        with path.open("rb") as fh:
            frame = pl.read_parquet(fh)
        assert frame["source"].to_list() == [key] * 3 and frame["y"].to_list() == [10, 20, 30]
    assert list(spill_root.iterdir()) == [], "the spill folder is removed once the partitions are written"
    # on local disk each spilled file is moved into place; only the one-partition run encodes its output
    assert len(encoded) == (1 if base == "local" else 2 * len(keys) + 1)
