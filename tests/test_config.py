import pytest

from emerge import AnalyzerConfig, ConfigError, CuratorConfig, EncoderConfig, SelectionConfig, SpanConfig
from emerge.config import ClusteringConfig, IngestConfig


@pytest.mark.parametrize("factory, field", [
    (lambda: SpanConfig(min_len=65, max_len=64), "min_len"),
    (lambda: SpanConfig(stride=0), "stride"),
    (lambda: SpanConfig(min_len=0), "min_len"),
    (lambda: SpanConfig(max_len=2.5), "max_len"),
    (lambda: SelectionConfig(quality_threshold=1.2), "quality_threshold"),
    (lambda: SelectionConfig(quality_threshold=-0.1), "quality_threshold"),
    (lambda: SelectionConfig(near_duplicate_threshold=2), "near_duplicate_threshold"),
    (lambda: EncoderConfig(model_name_or_path="/no/such/model"), "model_name_or_path"),
    (lambda: EncoderConfig(device="tpu"), "device"),
    (lambda: CuratorConfig(min_length=300, max_length=200), "min_length"),
    (lambda: CuratorConfig(stride=0), "stride"),
    (lambda: CuratorConfig(quality_threshold=7), "quality_threshold"),
    (lambda: AnalyzerConfig(min_len=9, max_len=3), "min_len"),
    (lambda: ClusteringConfig(min_cluster_size=1), "min_cluster_size"),
    (lambda: IngestConfig(normalization="NFX"), "normalization"),
])
def test_invalid_config_names_the_field(factory, field):
    with pytest.raises(ConfigError) as info:
        factory()
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def test_missing_model_message_says_no_download():
    with pytest.raises(ConfigError, match="never downloads"):
        EncoderConfig(model_name_or_path="/no/such/model")


def test_valid_defaults_construct():
    cfg = CuratorConfig(min_length=10, max_length=200, quality_threshold=0.6)
    assert cfg.span_config().max_len == 200
    assert cfg.selection_config().quality_threshold == 0.6


def test_curator_config_defaults_are_the_stage_configs_defaults():
    """The seed's curator names map onto the stage configs; unset, they must mean the stages' defaults."""
    assert CuratorConfig().span_config() == SpanConfig()
    assert CuratorConfig().selection_config() == SelectionConfig()


def test_auto_min_cluster_size_grows_with_sample():
    cfg = ClusteringConfig()
    assert cfg.auto_min_cluster_size(100) == 5
    assert cfg.auto_min_cluster_size(10_000) == 50
    assert ClusteringConfig(min_cluster_size=7).auto_min_cluster_size(10_000) == 7


def test_each_dagster_config_defaults_to_its_engine_configs_defaults():
    """The launchpad's defaults are the engine's: a Dagster config built with no values must give
    exactly the engine dataclass built with no values (one source of truth for defaults)."""
    import dataclasses

    from emerge_assets import run_config

    classes = [run_config.RawTextsConfig, run_config.SpansConfig, run_config.UmapConfig, run_config.HdbscanConfig,
               run_config.HdbscanClustersConfig, run_config.CuratedDatasetConfig,
               run_config.CuratedTopicDatasetConfig, run_config.TopicScoresConfig, run_config.FineTuneConfig]
    for cls in classes:
        engine = cls().to_engine()
        assert dataclasses.is_dataclass(engine), cls.__name__
        assert engine == type(engine)(), f"{cls.__name__} defaults differ from {type(engine).__name__}'s"


def test_topic_scores_config_defaults_are_the_scorers_defaults():
    import inspect

    from emerge.topics.late_interaction import LateInteractionCrossEncoder
    from emerge_assets.run_config import TopicScoresConfig

    scorer = inspect.signature(LateInteractionCrossEncoder.__init__).parameters
    config = TopicScoresConfig()
    options = config.scorer_options()
    for name in ("relevance_threshold", "prediction_mode", "direction", "prototype_weight"):
        assert options[name] == scorer[name].default, name
    assert config.relevance_threshold is None  # unset: the model's own threshold, if it has one
    assert config.scorer_options(model_threshold=0.55)["relevance_threshold"] == 0.55
    assert TopicScoresConfig(relevance_threshold=0.3).scorer_options(model_threshold=0.55)["relevance_threshold"] == 0.3


def test_every_engine_field_reaches_the_launchpad_and_back():
    """A field added to an engine config shows up in the Dagster config without a hand copy, and a
    value set in the launchpad is the value the engine gets (lists become the engine's tuples)."""
    import dataclasses

    from emerge.config import ClusteringConfig, IngestConfig, SelectionConfig, SpanConfig, TrainingConfig
    from emerge_assets import run_config as rc

    mirrors = {IngestConfig: [rc.RawTextsConfig], SpanConfig: [rc.SpansConfig],
               ClusteringConfig: [rc.UmapConfig, rc.HdbscanConfig], SelectionConfig: [rc.CuratedDatasetConfig],
               TrainingConfig: [rc.FineTuneConfig]}
    for engine, classes in mirrors.items():
        shown = set().union(*(cls.model_fields for cls in classes))
        missing = {f.name for f in dataclasses.fields(engine)} - shown
        assert not missing, f"{engine.__name__} fields not in the launchpad: {sorted(missing)}"
    tuned = rc.FineTuneConfig(distill_loss="pairwise", interpolation_weights=[1.0], negatives_per_query=2).to_engine()
    assert (tuned.distill_loss, tuned.interpolation_weights, tuned.negatives_per_query) == ("pairwise", (1.0,), 2)
    assert rc.UmapConfig(transform="umap").to_engine().transform == "umap"


def test_fixed_choices_are_refused_by_the_launchpad_with_the_field_named():
    import pydantic

    from emerge_assets import run_config as rc

    for cls, field in [(rc.FineTuneConfig, "distill_loss"), (rc.TopicScoresConfig, "direction"),
                       (rc.UmapConfig, "transform"), (rc.RawTextsConfig, "normalization")]:
        with pytest.raises(pydantic.ValidationError, match=field):
            cls(**{field: "no-such-choice"})
    with pytest.raises(pydantic.ValidationError, match="id_match_min_similarity"):
        rc.HdbscanClustersConfig(id_match_min_similarity=1.5)
    with pytest.raises(pydantic.ValidationError, match="prototype_weight"):
        rc.TopicScoresConfig(prototype_weight=2.0)
