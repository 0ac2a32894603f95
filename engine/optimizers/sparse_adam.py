import torch
from pydantic import Field

from engine.optimizers import Beta, Optimizer, OptimizerParams


class SparseAdamParams(OptimizerParams):
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first and second moments")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")


class SparseAdam(Optimizer[SparseAdamParams]):
    name = "sparse_adam"
    description = "Adam for sparse gradients (updates only the rows a batch touched): torch.optim.SparseAdam."
    Params = SparseAdamParams
    torch_optimizer = torch.optim.SparseAdam
    unsupported = (
        "takes sparse gradients only (nn.Embedding(sparse=True)); no model here produces them, "
        "and it refuses dense ones"
    )
