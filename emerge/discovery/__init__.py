"""Discovery: the stage that finds topics nobody named.

`pipeline` (ClusteringPipeline: UMAP + HDBSCAN, save/load), `fit` (fit on a sample, place and label
every span, title the clusters), `knn` (exact cosine neighbours), `hdbscan_predict` (vectorised
`approximate_predict`), `cluster_ids` (stable ids across refits), `titles` (keyphrase titles),
`title_namer` (the optional local LM namer).
"""
