"""Identity-field parametric Gaussian heads (issue 22, docs/idfield.md): a per-identity code decoded by a
StyleGAN-like generator into Gaussians in the subject's UV space, bound to the posed parametric mesh."""
