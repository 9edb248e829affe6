"""Training LoFTR on homographic pairs of real photos (self-supervised), with the official losses."""
