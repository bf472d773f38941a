"""Mixup: one lambda and one pairing for inputs and targets, Beta-distributed lambda."""

import pytest
import torch
import torch.nn.functional as F

from gradwise.regularize import Mixup


def mix_identity(mixup, size):
    """Mix the rows of the identity: row i of the result reads lambda and pi(i) off directly."""
    x = torch.eye(size, dtype=torch.float64)
    return mixup(x, torch.arange(size))


def read_lambda(mixed):
    """lambda is the weight on the diagonal of any row paired with another row."""
    paired = (mixed > 0).sum(dim=1) == 2
    return float(mixed.diagonal()[paired][0]) if paired.any() else None


def test_inputs_and_targets_share_lambda_and_the_pairing():
    mixup = Mixup(alpha=0.4, num_classes=6, seed=0)
    for _ in range(5):
        mixed, targets = mix_identity(mixup, 6)
        # one-hot targets of the identity's rows are the rows: equal iff same lambda and pi
        assert torch.equal(targets, mixed)
        lam = read_lambda(mixed)
        assert lam is not None
        eye = torch.eye(6, dtype=torch.float64)
        partners = (mixed - lam * eye).argmax(dim=1)
        torch.testing.assert_close(mixed, lam * eye + (1 - lam) * eye[partners])
        assert sorted(partners.tolist()) == list(range(6))  # a permutation


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lambda_follows_beta_alpha_alpha(alpha):
    mixup = Mixup(alpha=alpha, num_classes=8, seed=1)
    lambdas = [read_lambda(mix_identity(mixup, 8)[0]) for _ in range(3000)]
    lambdas = torch.tensor([lam for lam in lambdas if lam is not None], dtype=torch.float64)
    beta = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha))
    standard_error = float(beta.variance.sqrt()) / len(lambdas) ** 0.5
    assert abs(float(lambdas.mean()) - 0.5) < 4 * standard_error
    torch.testing.assert_close(float(lambdas.var()), float(beta.variance), rtol=0.08, atol=0)


def test_soft_target_cross_entropy_is_the_papers_mixed_loss():
    mixup = Mixup(alpha=1.0, num_classes=5, seed=2)
    features = torch.eye(5, dtype=torch.float64)
    labels = torch.tensor([3, 0, 4, 1, 2])
    mixed, targets = mixup(features, labels)
    lam = read_lambda(mixed)
    partner = (mixed - lam * features).argmax(dim=1)
    logits = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(
        logits, labels[partner]
    )
    torch.testing.assert_close(F.cross_entropy(logits, targets), expected)


def test_floating_targets_are_mixed_as_they_are():
    mixup = Mixup(alpha=0.5, seed=4)
    x = torch.eye(4)
    y = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    mixed, targets = mixup(x, y)
    torch.testing.assert_close(targets, mixed @ y)


def test_eval_mode_returns_the_inputs_and_one_hot_targets():
    mixup = Mixup(alpha=0.5, num_classes=3, seed=5).eval()
    x = torch.rand(4, 2, 6)
    mixed, targets = mixup(x, torch.tensor([2, 0, 1, 2]))
    assert mixed is x
    assert torch.equal(targets, torch.eye(3)[[2, 0, 1, 2]])


def test_the_same_seed_gives_the_same_mixes():
    x, y = torch.rand(16, 3, 4, 4), torch.randint(10, (16,))
    first, second = Mixup(0.3, 10, seed=6), Mixup(0.3, 10, seed=6)
    for _ in range(3):
        (a, ta), (b, tb) = first(x, y), second(x, y)
        assert torch.equal(a, b)
        assert torch.equal(ta, tb)
    assert not torch.equal(first(x, y)[0], first(x, y)[0])


@pytest.mark.parametrize(
    ("mixup", "y", "error", "message"),
    [
        (
            Mixup(0.2),
            torch.tensor([0, 1]),
            ValueError,
            r"^The 'num_classes' parameter of Mixup must be an int >= 1 to mix integer class "
            r"labels\. Got None instead\.$",
        ),
        (
            Mixup(0.2, 3),
            torch.tensor([0, 3]),
            ValueError,
            r"^The 'y' parameter of Mixup must hold class labels in \[0, 3\)\. Got labels from "
            r"0 to 3 instead\.$",
        ),
        (
            Mixup(0.2, 3),
            torch.tensor([0, 1, 2]),
            ValueError,
            r"^The 'y' parameter of Mixup must be a tensor with one row per example \(2\)\. "
            r"Got a tensor of shape \(3,\) instead\.$",
        ),
        (
            Mixup(0.2, 3),
            torch.tensor([[0], [1]]),
            ValueError,
            r"must be integer class labels of shape \(N,\) or floating-point targets",
        ),
    ],
)
def test_bad_targets_are_refused_clearly(mixup, y, error, message):
    with pytest.raises(error, match=message):
        mixup(torch.rand(2, 4), y)


def test_bad_arguments_raise_in_the_one_format():
    with pytest.raises(
        ValueError,
        match=r"^The 'alpha' parameter of Mixup must be a finite float > 0\. Got 0 instead\.$",
    ):
        Mixup(0)
    with pytest.raises(TypeError, match="must be a floating-point tensor"):
        Mixup(1.0, 3)(torch.ones(2, 2, dtype=torch.long), torch.tensor([0, 1]))
