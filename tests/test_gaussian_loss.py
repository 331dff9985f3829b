import pytest
import torch

from detectron2.config import get_cfg

from gaussian_retina.config import add_gaussian_retina_config
from gaussian_retina.modeling import gaussian_map_loss


def test_hand_computed_with_mining():
    # One image, 8 pixels: 2 positives, 1 ignored (between the thresholds), 5 negatives.
    target = torch.tensor([[1.0, 0.6, 0.3, 0.0, 0.0, 0.0, 0.05, 0.1]])
    pred = torch.tensor([[0.5, 0.6, 0.9, 0.1, 0.7, 0.0, 0.45, 0.2]])
    # neg_ratio 1 keeps the 2 hardest negatives: errors 0.49 (pixel 4) and 0.16 (pixel 6).
    loss = gaussian_map_loss(pred, target, normalize="batch", pos_thresh=0.5, neg_thresh=0.1,
                             neg_ratio=1.0, min_negatives=0)
    expected = (0.25 + 0.0 + 0.49 + 0.16) / 4
    assert loss.item() == pytest.approx(expected)


def test_mining_picks_the_hardest_negatives():
    target = torch.zeros(1, 100)
    target[0, :2] = 1.0
    pred = torch.zeros(1, 100)
    pred[0, 50] = 0.9  # the one hard negative among 98 easy ones
    loss = gaussian_map_loss(pred, target, neg_ratio=0.5, min_negatives=0, normalize="batch")
    # Positives have error 1 each; the single mined negative is the hard one.
    assert loss.item() == pytest.approx((1 + 1 + 0.81) / 3)


def test_image_without_positives_uses_the_floor():
    target = torch.zeros(1, 1, 4, 4)
    pred = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) / 16
    loss = gaussian_map_loss(pred, target, min_negatives=3, normalize="batch")
    hardest = pred.flatten().sort(descending=True).values[:3]
    assert loss.item() == pytest.approx((hardest**2).mean().item())
    assert gaussian_map_loss(pred, target, normalize="batch", min_negatives=0).item() == 0.0


def test_padding_is_ignored_and_per_image_mining():
    target = torch.tensor([[1.0, 0.0, -1.0, -1.0], [1.0, 0.0, 0.0, 0.0]])
    pred = torch.tensor([[1.0, 0.5, 9.0, 9.0], [0.0, 0.2, 0.3, 0.1]])
    loss = gaussian_map_loss(pred, target, neg_ratio=1.0, min_negatives=0, normalize="batch")
    # Image 0: positive err 0, negative 0.25 (padding never selected). Image 1: 1.0 and 0.09.
    assert loss.item() == pytest.approx((0 + 0.25 + 1.0 + 0.09) / 4)


def test_scale_does_not_depend_on_image_size():
    torch.manual_seed(0)
    target = torch.zeros(1, 32, 32)
    target[0, 8:12, 8:12] = 1.0
    pred = torch.rand(1, 32, 32) * 0.1
    big_target = target.repeat(1, 4, 4)  # the same scene, 16 times
    big_pred = pred.repeat(1, 4, 4)
    small = gaussian_map_loss(pred, target, min_negatives=16, normalize="batch")
    big = gaussian_map_loss(big_pred, big_target, min_negatives=16 * 16, normalize="batch")
    assert big.item() == pytest.approx(small.item(), rel=1e-5)


def test_gradient_flows_and_shapes_must_match():
    pred = torch.zeros(2, 1, 3, 3, requires_grad=True)
    target = torch.ones(2, 1, 3, 3)
    gaussian_map_loss(pred, target, normalize="batch").backward()
    assert torch.all(pred.grad < 0)
    with pytest.raises(ValueError, match="differ"):
        gaussian_map_loss(pred, target[:, :, :2], normalize="batch")


def test_per_image_normalisation_weighs_positives_negatives_and_images_equally():
    # Image 0: 2 positives (errors 0.25, 0), 2 mined negatives (0.49, 0.16), 1 ignored pixel.
    # Image 1: 1 positive (error 1.0), 1 mined negative (0.04).
    target = torch.tensor([[1.0, 0.6, 0.3, 0.0, 0.0, 0.05], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    pred = torch.tensor([[0.5, 0.6, 0.9, 0.7, 0.0, 0.45], [0.0, 0.2, 0.1, 0.0, 0.0, 0.0]])
    kwargs = dict(neg_ratio=1.0, min_negatives=0)
    image0 = (0.25 + 0.0) / 2 + (0.49 + 0.16) / 2
    image1 = 1.0 / 1 + 0.04 / 1
    per_image = gaussian_map_loss(pred, target, normalize="image", **kwargs)
    assert per_image.item() == pytest.approx((image0 + image1) / 2)
    pooled = gaussian_map_loss(pred, target, normalize="batch", **kwargs)
    assert pooled.item() == pytest.approx((0.25 + 0.49 + 0.16 + 1.0 + 0.04) / 6)
    # An image with no positives contributes its negatives' mean alone; an empty batch gives 0.
    empty = gaussian_map_loss(pred[:1], torch.zeros(1, 6), normalize="image", neg_ratio=1.0,
                              min_negatives=2)
    assert empty.item() == pytest.approx((0.81 + 0.49) / 2)
    with pytest.raises(ValueError, match="normalize"):
        gaussian_map_loss(pred, target, normalize="pixels")


def test_loss_is_float32_for_half_precision_maps():
    target = torch.zeros(1, 16)
    target[0, :4] = 1.0
    pred = torch.rand(1, 16).to(torch.bfloat16)
    for normalize in ("batch", "image"):
        loss = gaussian_map_loss(pred, target, normalize=normalize, min_negatives=4)
        assert loss.dtype == torch.float32
        expected = gaussian_map_loss(pred.float(), target, normalize=normalize, min_negatives=4)
        assert loss.item() == expected.item()


def test_thresholds_are_inclusive():
    # The docstring's bounds: positives target >= pos_thresh, negatives 0 <= target <= neg_thresh.
    target = torch.tensor([[0.5, 0.1, 0.0, 0.3, -1.0]])
    pred = torch.tensor([[0.0, 0.7, 0.4, 0.9, 0.9]])
    loss = gaussian_map_loss(pred, target, pos_thresh=0.5, neg_thresh=0.1, neg_ratio=2.0,
                             min_negatives=0, normalize="batch")
    # Positive 0.5 (error 0.25); both negatives mined (0.36 and 0.16); 0.3 and -1 ignored.
    assert loss.item() == pytest.approx((0.25 + 0.36 + 0.16) / 3)


def test_defaults_are_the_configs():
    cfg = get_cfg()
    add_gaussian_retina_config(cfg)
    g = cfg.MODEL.GAUSSIAN
    torch.manual_seed(0)
    target = torch.zeros(2, 40, 40)
    target[0, :10, :10] = 1.0  # 100 positives: the ratio decides (300 negatives)
    target[0, 10, :10] = 0.5
    target[1, 20, 20] = 0.75  # one positive: the floor decides
    target[1, 21, 20:30] = 0.1
    pred = torch.rand(2, 40, 40)
    configured = gaussian_map_loss(pred, target, pos_thresh=g.POS_THRESH, neg_thresh=g.NEG_THRESH,
                                   neg_ratio=g.NEG_RATIO, min_negatives=g.MIN_NEGATIVES,
                                   normalize="batch")
    assert gaussian_map_loss(pred, target, normalize="batch").item() == configured.item()


def test_an_image_with_few_negatives_takes_only_its_own():
    # Image 0 has two negatives and six ignored pixels, image 1 has six negatives: a floor of 4
    # takes 2 and 4, never an ignored pixel of image 0.
    target = torch.tensor([[0.0, 0.0, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
                           [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3]])
    pred = torch.tensor([[0.5, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                         [0.0, 0.9, 0.8, 0.7, 0.6, 0.1, 0.0, 0.0]])
    loss = gaussian_map_loss(pred, target, neg_ratio=0.0, min_negatives=4, normalize="batch")
    # Image 0: negatives 0.25 and 0.01. Image 1: positive 1.0, the 4 hardest negatives.
    errors = [0.25, 0.01, 1.0, 0.81, 0.64, 0.49, 0.36]
    assert loss.item() == pytest.approx(sum(errors) / len(errors))


def test_per_image_mean_leaves_out_images_with_nothing_selected():
    # Image 1 is all padding, image 2 has one positive pixel and nothing else: the mean is over
    # images 0 and 2.
    target = torch.tensor([[1.0, 0.0, 0.0], [-1.0, -1.0, -1.0], [0.9, 0.3, -1.0]])
    pred = torch.tensor([[0.5, 0.2, 0.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]])
    loss = gaussian_map_loss(pred, target, neg_ratio=1.0, min_negatives=0, normalize="image")
    assert loss.item() == pytest.approx(((0.25 + 0.04) + 0.81) / 2)


@pytest.mark.parametrize("normalize", ["batch", "image"])
def test_nothing_selected_gives_zero_with_a_gradient(normalize):
    pred = torch.full((2, 4), 0.7, requires_grad=True)
    loss = gaussian_map_loss(pred, torch.full((2, 4), -1.0), normalize=normalize)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(2, 4))
