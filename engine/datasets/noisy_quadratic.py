"""A noisy quadratic of DeepOBS's kind as least squares: with the linear model and mean squared error, the
loss is a quadratic in the weights whose Hessian's spectrum is chosen here, and every mini-batch sees a noisy
estimate of it (Zhang et al. 2019's noisy quadratic model; DeepOBS's quadratic_deep spectrum)."""

from typing import Literal

import torch
from pydantic import Field

from engine.datasets import Data, Dataset, DataShape
from engine.registry import Params


class NoisyQuadraticParams(Params):
    dim: int = Field(100, ge=2, le=100_000, description="dimension of the weights")
    n_samples: int = Field(2000, ge=1, le=10_000_000)
    spectrum: Literal["deepobs", "inverse"] = Field(
        "deepobs",
        description="eigenvalues of E[a a^T]: 'deepobs' 90% uniform in [0, 1] and 10% in [30, 60] (quadratic_deep); "
        "'inverse' 1/k for k = 1..dim",
    )
    noise: float = Field(1.0, ge=0, le=1e3, description="standard deviation of the targets' noise")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the data itself, not of the runs")


def eigenvalues(params: NoisyQuadraticParams, generator: torch.Generator) -> torch.Tensor:
    if params.spectrum == "inverse":
        return 1.0 / torch.arange(1, params.dim + 1, dtype=torch.float64)
    large = max(1, params.dim // 10)
    small = torch.rand(params.dim - large, generator=generator, dtype=torch.float64)
    return torch.cat([30 + 30 * torch.rand(large, generator=generator, dtype=torch.float64), small])


def _generate(params: NoisyQuadraticParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(params.seed)
    spectrum = eigenvalues(params, g)
    rotation, _ = torch.linalg.qr(torch.randn(params.dim, params.dim, generator=g, dtype=torch.float64))
    a = torch.randn(params.n_samples, params.dim, generator=g, dtype=torch.float64) * spectrum.sqrt() @ rotation.T
    optimum = torch.randn(params.dim, generator=g, dtype=torch.float64)
    b = a @ optimum + params.noise * torch.randn(params.n_samples, generator=g, dtype=torch.float64)
    return a, b, optimum


class NoisyQuadratic(Dataset[NoisyQuadraticParams]):
    name = "noisy_quadratic"
    description = (
        "Least squares on Gaussian features a ~ N(0, Q diag(spectrum) Q^T) with targets a.w* + noise: with model "
        "'linear' and loss 'mse_mean' a quadratic with that Hessian (times 2), noisy per mini-batch; w* is "
        "NoisyQuadratic.optimum."
    )
    task = "regression"
    standardize_by_default = False  # standardizing would flatten the chosen spectrum
    Params = NoisyQuadraticParams
    size_param = "n_samples"

    @classmethod
    def load(cls, params: NoisyQuadraticParams) -> Data:
        a, b, _ = _generate(params)
        return Data(x=a.float(), y=b.float().unsqueeze(1), task="regression", n_outputs=1)

    @classmethod
    def shape(cls, params: NoisyQuadraticParams) -> DataShape:
        return DataShape(params.n_samples, (params.dim,), 1)

    @classmethod
    def optimum(cls, params: NoisyQuadraticParams) -> torch.Tensor:
        """w*, the weights the targets were made with (the population minimizer; the bias is 0)."""
        return _generate(params)[2]
