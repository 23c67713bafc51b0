"""Network definitions (layer 3): GS-LRM (`gausslift.models.gslrm`) and the multi-view UNet.

Import the submodule you need; this package imports nothing itself, so loading one network never
pulls in the other's dependencies.
"""
