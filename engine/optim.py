"""SGD with parameter groups that can exempt norm parameters and biases from weight decay."""
import torch

import norms


def param_groups(model, weight_decay, decay_norm, decay_bias):
    """Two groups: decayed and not decayed; norm parameters include SN's mixing logits."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            exempt = (norms.is_norm(module) and not decay_norm) or (name == "bias" and not decay_bias
                                                                    and not norms.is_norm(module))
            (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model, cfg, lr):
    """SGD for an OptimConfig at the already scaled learning rate `lr`."""
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm, cfg.decay_bias)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
