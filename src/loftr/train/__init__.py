"""Training LoFTR with the official supervision and losses: homographic pairs of any photo folder (self-supervised),
or ScanNet / MegaDepth with depth and poses; exact resume, data-parallel processes, export with a model card."""
