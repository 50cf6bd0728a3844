"""Training: the stage that turns a curated dataset into a better model, and proves it.

`pairs` (training rows per recipe), `distillation` (pseudo-queries, base+BM25 teacher, mined
negatives), `distill_loss` / `near_label_loss` (losses), `lexical` (BM25), `trainer`
(sentence-transformers fitting), `promotion` (WiSE-FT and the label-free gate), `retrieval`
(metrics, BEIR collections), `finetune` (train -> gate -> evaluate, the asset's loop).
"""
