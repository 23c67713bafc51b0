"""Multi-view diffusion (layer 4): one image -> six views, FaceLift's SD 2.1 unCLIP multi-view model.

- `gausslift.mvdiff.pipeline.MVDiffusionPipeline`: sampling (CLIP image embedding + noise augmentation,
  VAE latents concatenated per view, per-view prompt embeddings, classifier-free guidance, any scheduler);
- `gausslift.mvdiff.loading`: `from_pretrained(PATH)` for FaceLift's `pipeckpts` folder layout (and ours),
  `save_pretrained`;
- `gausslift.mvdiff.embeddings.ViewConditioning`: fixed, learned or camera-derived view embeddings;
- `gausslift.mvdiff.tiny`: a small configuration that trains from scratch on a CPU;
- `gausslift.mvdiff.train`: FaceLift's training recipe (`gausslift mvdiff train`), torchrun DDP;
- `gausslift.mvdiff.data`: six-view samples with mask-aware backgrounds; `evaluate`: unseen-view metrics.
The network itself is `gausslift.models.mvunet.UNetMV2DConditionModel`; it and the pipeline are held
against FaceLift's own code by scripts/reference_mvunet.py and tests/test_mvdiff_*.py.
"""
