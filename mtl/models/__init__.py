from mtl.models.architectures import build_model, count_parameters

__all__ = ["build_model", "count_parameters"]
