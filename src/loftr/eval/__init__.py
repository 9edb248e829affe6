"""Evaluation: one module per benchmark, each a dataset reader, pure per-pair metrics and a ``run``.

``pose`` (ScanNet-1500, MegaDepth-1500), ``homography`` (HPatches), ``wxbs``, ``middlebury`` (rectified stereo;
readers in ``stereo``) and ``synthetic``; ``baselines`` holds the matchers (LoFTR, SIFT, ORB, optional
SuperPoint+LightGlue and ALIKED+LightGlue), ``report`` the shared loop and the JSON / markdown output, ``cli`` the
``loftr eval`` command.
"""
