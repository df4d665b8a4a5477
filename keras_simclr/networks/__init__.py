"""The networks: encoders f(x) = h (ResNets), the layers they are made of, heads g(h) = z.

- `backbones`: ResNet-10 to -152 (CIFAR or ImageNet stem, width multipliers, selective
  kernels) and the backbone-family registry behind `--backbone`.
- `conv`, `batchnorm`, `selective_kernel`: layers the ResNets use where Keras' own are slow
  on the CPU or missing (small-map convolutions as matrix products, BN through the fused
  kernel, SK mixing).
- `heads`: the projection head, an MLP with BatchNormalization.

A new encoder family is one function building a `keras.Model` from images to h, added with
`keras_simclr.register_family(name, builder)`; a new layer goes here when a network uses it.
Imports: `utils` only.
"""
