"""The optional local title namer: what it accepts as a title, its bounds, and its wiring."""

import numpy as np
import pytest

from emerge.errors import ConfigError
from emerge.discovery.title_namer import NamerConfig, TitleNamer, clean_title, representative_texts


@pytest.mark.parametrize("generated, title", [
    (" Housing Market\n\nKeywords: car, car", "Housing Market"),
    ('"UK Party Politics".', "UK Party Politics"),
    (" Space Launches and Satellites", "Space Launches and Satellites"),
    (" Politics", None),  # one word: no better than a keyphrase
    (" The Best Title Anyone Has Ever Written Here", None),  # over five words
    (" 2004 Results 12", None),  # digits
    (" Keywords: mortgage, lending", None),  # the prompt echoed
    (" Sports, Sports, Sports", None),  # a generation loop
    (" Music and Music", None),
    (" Housing Market and Lending", "Housing Market and Lending"),
    ("", None),
])
def test_only_short_wordy_first_lines_count_as_titles(generated, title):
    assert clean_title(generated) == title


def test_representative_texts_hold_the_most_keyphrases_and_are_cut_at_a_word():
    texts = ["nothing here at all", "mortgage rates and the housing market " + "x" * 300, "a mortgage deal"]
    picked = representative_texts(texts, ["mortgage", "housing market"], k=2, max_chars=60)
    assert picked[0].startswith("mortgage rates and the housing market") and picked[0].endswith(" ...")
    assert len(picked[0]) <= 60 + 4 and picked[1] == "a mortgage deal"


def test_a_missing_model_folder_or_gguf_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="title_namer.model_dir"):
        NamerConfig(model_dir=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="title_namer.gguf_file"):
        NamerConfig(model_dir=str(tmp_path), gguf_file="model.gguf")


def test_a_real_model_is_asked_at_most_max_clusters_times_and_the_rest_keep_their_titles(tiny_causal_lm,
                                                                                        monkeypatch):
    namer = TitleNamer(NamerConfig(model_dir=str(tiny_causal_lm), max_clusters=2, max_new_tokens=4))
    asked = []
    real = namer.name
    monkeypatch.setattr(namer, "name", lambda k, t: asked.append(k) or real(k, t))
    fallback = {0: "Rocket, Orbit", 1: "Carrot, Garden", 2: "Penalty, Goal"}
    texts = {0: ["the rocket reached orbit"] * 3, 1: ["carrots in the garden"] * 5, 2: ["a late penalty"]}
    keyphrases = {0: ["rocket", "orbit"], 1: ["carrot", "garden"], 2: ["penalty", "goal"]}
    titles = namer.name_clusters(keyphrases, texts, fallback)
    assert asked == [["carrot", "garden"], ["rocket", "orbit"]]  # largest clusters first, two of three
    assert titles[2] == "Penalty, Goal" and set(titles) == set(fallback)
    assert all(t == fallback[c] or clean_title(t) == t for c, t in titles.items())  # nonsense never a title


def test_a_spent_time_budget_keeps_the_keyphrase_titles(tiny_causal_lm):
    namer = TitleNamer(NamerConfig(model_dir=str(tiny_causal_lm), time_budget_s=0.0))
    fallback = {0: "Rocket, Orbit", 1: "Carrot, Garden"}
    assert namer.name_clusters({0: ["rocket"], 1: ["carrot"]}, {0: ["a"], 1: ["b"]}, fallback) == fallback


def test_titling_uses_the_namer_but_not_for_kept_titles_and_user_titles_still_win():
    from emerge.discovery.pipeline import ClusteringPipeline
    from emerge.config import ClusteringConfig
    from emerge.discovery.fit import title_clusters

    class Namer:  # words every cluster it is given
        def name_clusters(self, keyphrases, texts, fallback):
            self.given = dict(fallback)
            return {c: f"Named {keyphrases[c][0]}" for c in fallback}

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2, 16)) * 4
    points = np.concatenate([c + rng.normal(size=(30, 16)) * 0.2 for c in centres])
    pipe = ClusteringPipeline(ClusteringConfig(n_neighbors=10, min_cluster_size=10, random_state=3)).fit(points)
    pipe.assign_stable_ids(None)
    texts = [f"{'rocket' if i < 30 else 'carrot'} text {i}" for i in range(60)]
    namer = Namer()
    title_clusters(pipe, texts, overrides={pipe.cluster_ids[0]: "Mine"}, namer=namer)
    assert set(namer.given) == set(pipe.cluster_ids)
    assert pipe.titles[pipe.cluster_ids[0]] == "Mine" and pipe.titles[pipe.cluster_ids[1]].startswith("Named ")


def test_the_resource_loads_nothing_unless_a_model_is_configured(tiny_causal_lm):
    from emerge_resources import TitleNamerResource

    assert TitleNamerResource().get_namer() is None
    assert isinstance(TitleNamerResource(model_dir=str(tiny_causal_lm)).get_namer(), TitleNamer)
