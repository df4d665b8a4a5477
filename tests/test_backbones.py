"""ResNet encoders: documented widths, both stems, both input sizes, synchronized BN reload."""
import keras
import numpy as np
import pytest

from keras_simclr import ProjectionHead, build_simclr, losses
from keras_simclr.networks import backbones
from toy_backbone import tiny_convnet

backbones.register_family("toy_convnet", tiny_convnet)  # the one line that adds a family


@pytest.mark.parametrize("name,width,expected", [
    ("resnet10", 0.5, 256), ("resnet18", 0.25, 128), ("resnet34", 0.125, 64), ("resnet50", 0.125, 256),
])
@pytest.mark.parametrize("stem", backbones.STEMS)
@pytest.mark.parametrize("size", [32, 64])
def test_builds_with_documented_width(name, width, expected, stem, size):
    encoder = backbones.build_backbone(name, stem=stem, width_multiplier=width)
    h = encoder(np.zeros((2, size, size, 3), np.float32))
    assert h.shape == (2, expected)
    assert backbones.output_width(encoder) == expected


def test_full_width_resnet18_and_50_sizes():
    # Width 1x: 512 (basic blocks) and 2048 (bottlenecks), as in the paper.
    assert backbones.output_width(backbones.resnet(18)) == 512
    assert backbones.output_width(backbones.resnet(50, width_multiplier=2)) == 4096


def test_stage_widths_set_each_stage_and_the_stem_keeps_the_width_multiplier():
    encoder = backbones.resnet(18, width_multiplier=0.25, stage_widths=(0.25, 0.25, 0.5, 2),
                               input_shape=(32, 32, 3))
    channels = {name: encoder.get_layer(name).output.shape[-1] for name in (
        "stem_conv", "stage1_block2_out", "stage2_block2_out", "stage3_block2_out",
        "stage4_block2_out")}
    assert list(channels.values()) == [16, 16, 32, 128, 1024]
    assert backbones.output_width(encoder) == 1024
    assert encoder(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 1024)


@pytest.mark.parametrize("stage_widths", [(0.5, 0.5, 1), (0.5, 0.5, 0.5, 0)])
def test_stage_widths_must_be_four_positive_multipliers(stage_widths):
    with pytest.raises(ValueError, match="stage_widths must be 4 positive"):
        backbones.resnet(18, stage_widths=stage_widths)


def test_stems_downsample_as_documented():
    cifar = backbones.resnet(18, stem="cifar", width_multiplier=0.125, input_shape=(32, 32, 3))
    imagenet = backbones.resnet(18, stem="imagenet", width_multiplier=0.125, input_shape=(32, 32, 3))
    # CIFAR stem keeps 32x32 into stage 1; the ImageNet stem divides by 4.
    assert cifar.get_layer("stage1_block1_out").output.shape[1:3] == (32, 32)
    assert imagenet.get_layer("stage1_block1_out").output.shape[1:3] == (8, 8)
    assert cifar.get_layer("stage4_block2_out").output.shape[1:3] == (4, 4)
    stride2 = backbones.resnet(18, stem="stride2", width_multiplier=0.125,
                               input_shape=(32, 32, 3))
    # The intermediate stem halves the side: 16x16 into stage 1, 2x2 out of stage 4.
    assert stride2.get_layer("stage1_block1_out").output.shape[1:3] == (16, 16)
    assert stride2.get_layer("stage4_block2_out").output.shape[1:3] == (2, 2)
    assert stride2.output.shape[-1] == 64


def test_synchronized_bn_survives_save_and_load(tmp_path):
    encoder = backbones.resnet(18, stem="cifar", width_multiplier=0.125, synchronized_bn=True)
    head = ProjectionHead(2, output_dim=8, synchronized_bn=True)
    model = keras.Sequential([keras.Input((16, 16, 3)), encoder, head])
    path = str(tmp_path / "sync.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    bn_layers = [layer for layer in loaded._flatten_layers()
                 if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn_layers) > 20
    assert all(layer.synchronized for layer in bn_layers)


def test_rejects_unknown_names():
    with pytest.raises(ValueError, match="resnet18"):
        backbones.build_backbone("resnet19")
    with pytest.raises(ValueError, match="stem"):
        backbones.resnet(18, stem="tiny")


def test_a_new_family_is_one_file_and_one_registration_line():
    """tests/toy_backbone.py plus the `register_family` line at the top of this file: built
    by name, given only the arguments it declares (not the ResNet ones)."""
    assert backbones.names()[-1] == "toy_convnet" and "resnet18" in backbones.names()
    encoder = backbones.build_backbone("toy_convnet", stem="cifar", width_multiplier=0.5,
                                       stage_widths=(1, 1, 1, 2), synchronized_bn=True)
    assert encoder.name == "tiny_convnet" and backbones.output_width(encoder) == 16
    model = build_simclr(backbone="toy_convnet", stem="cifar", width_multiplier=0.25,
                         head_depth=2, proj_dim=8, loss=losses.NTXent(0.5),
                         synchronized_bn=True)
    assert backbones.output_width(model.encoder) == 8
    # the ResNet family still receives its own arguments, fixed and forwarded
    resnet = backbones.build_backbone("resnet10", stem="cifar", width_multiplier=0.125,
                                      input_shape=(8, 8, 3))
    assert resnet.name == "resnet10_cifar" and resnet.get_layer("stem_conv").filters == 8


def test_register_family_rejects_taken_names_and_unknown_arguments():
    with pytest.raises(ValueError, match="'resnet' is already registered"):
        backbones.register_family("resnet", tiny_convnet, {"resnet_toy": {}})
    with pytest.raises(ValueError, match=r"\['resnet18'\] already registered"):
        backbones.register_family("other", tiny_convnet, {"resnet18": {}})
    with pytest.raises(TypeError, match="callable"):
        backbones.register_family("other", "tiny_convnet")
    assert "other" not in backbones.FAMILIES and "resnet_toy" not in backbones.names()
    with pytest.raises(TypeError, match=r"no backbone family takes the argument\(s\) \['stemm'\]"):
        backbones.build_backbone("resnet18", stemm="cifar")


def test_official_options_are_checked():
    with pytest.raises(ValueError, match="padding must be one of"):
        backbones.resnet(50, padding="valid")
    with pytest.raises(ValueError, match="bottleneck blocks"):
        backbones.resnet(18, sk_ratio=0.0625)


@pytest.mark.parametrize("depth,last_blocks", [(101, (3, 4, 23, 3)), (152, (3, 8, 36, 3))])
def test_deep_resnets_have_the_official_block_counts(depth, last_blocks):
    encoder = backbones.resnet(depth, width_multiplier=0.0625)
    for stage, count in enumerate(last_blocks):
        encoder.get_layer(f"stage{stage + 1}_block{count}_out")
        with pytest.raises(ValueError):
            encoder.get_layer(f"stage{stage + 1}_block{count + 1}_out")
    assert backbones.output_width(encoder) == 128


def test_selective_kernels_bring_the_resnet_d_stem_and_shortcuts():
    encoder = backbones.resnet(50, width_multiplier=0.125, sk_ratio=0.0625, padding="fixed",
                               input_shape=(64, 64, 3))
    for name in ("stem_a_conv", "stem_b_conv", "stage1_block1_2_mix",
                 "stage2_block1_proj_pool", "stage2_block1_proj_pad", "stage2_block1_2_conv_pad"):
        encoder.get_layer(name)
    # the squeeze has max(filters * sk_ratio, 32) channels; the streams twice the filters
    assert encoder.get_layer("stage4_block1_2_squeeze_conv").output.shape[-1] == 32
    assert encoder.get_layer("stage4_block1_2_conv").output.shape[-1] == 128
    assert encoder(np.zeros((2, 64, 64, 3), np.float32)).shape == (2, 256)
