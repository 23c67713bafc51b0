"""Stylised parametric heads from one example pair (issue 23; ``docs/stylize.md``): procedural
styles, the pretrained latent <-> mesh networks, fine-tuning on one pair, apply and evaluation."""
