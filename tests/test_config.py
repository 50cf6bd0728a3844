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


def test_auto_min_cluster_size_grows_with_sample():
    cfg = ClusteringConfig()
    assert cfg.auto_min_cluster_size(100) == 5
    assert cfg.auto_min_cluster_size(10_000) == 50
    assert ClusteringConfig(min_cluster_size=7).auto_min_cluster_size(10_000) == 7
