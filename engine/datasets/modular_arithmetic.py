import torch
from pydantic import Field

from engine.datasets import IGNORE, Data, Dataset, DataShape
from engine.registry import Params


class ModularArithmeticParams(Params):
    p: int = Field(97, ge=2, le=1000, description="the modulus; the grokking papers use the prime 97")


class ModularArithmetic(Dataset[ModularArithmeticParams]):
    name = "modular_arithmetic"
    description = (
        "Every equation 'a + b =' with a, b in 0..p-1 (p squared samples) as 4 tokens: a, '+', b, '='; only the "
        "answer (a + b) mod p, at the '=', is scored (Power et al. 2022, 'grokking'). Vocabulary p + 2. The train "
        "fraction is 1 - the problem's validation_fraction (the split is split_seed's)."
    )
    task = "sequence"
    validation_metric = "accuracy"
    higher_is_better = True
    standardize_by_default = False
    Params = ModularArithmeticParams
    size_param = "p"

    @classmethod
    def load(cls, params: ModularArithmeticParams) -> Data:
        p = params.p
        a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
        plus, equals = torch.full_like(a, p), torch.full_like(a, p + 1)
        x = torch.stack([a, plus, b, equals], dim=1)
        y = torch.full_like(x, IGNORE)
        y[:, -1] = (a + b) % p
        return Data(x=x, y=y, task="sequence", n_outputs=p + 2)

    @classmethod
    def shape(cls, params: ModularArithmeticParams) -> DataShape:
        return DataShape(params.p**2, (4,), params.p + 2)
