"""The shapes world: a procedural dataset and a small unCLIP system trained on it.

``world`` renders labeled images and captions; ``train`` trains the CLIP,
prior, autoencoder, decoder and inpainting decoder in the Kandinsky 2.2
layout, so the product's own backend loads the result unchanged
(``--model shapes-demo``).
"""
