"""Multi-view diffusion (layer 4): one image -> six views, FaceLift's SD 2.1 unCLIP multi-view model.

- `gausslift.mvdiff.pipeline.MVDiffusionPipeline`: sampling (CLIP image embedding + noise augmentation,
  VAE latents concatenated per view, per-view prompt embeddings, classifier-free guidance, any scheduler);
- `gausslift.mvdiff.loading`: `from_pretrained(PATH)` for FaceLift's `pipeckpts` folder layout (and ours),
  `save_pretrained`;
- `gausslift.mvdiff.embeddings.ViewConditioning`: fixed, learned or camera-derived view embeddings;
- `gausslift.mvdiff.tiny`: a small configuration that trains from scratch on a CPU.
The network itself is `gausslift.models.mvunet.UNetMV2DConditionModel`.
"""
