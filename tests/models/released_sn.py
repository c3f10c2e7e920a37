"""Independent re-implementation of the SN authors' released PyTorch (0.4-era) model code.

Written from the description of their `SwitchNorm2d` (used as `sn.SwitchNorm`),
`resnet_v1_sn.py` and `resnet_v2_sn.py`; it imports nothing from this repository, so the
released checkpoints' numerics can be checked against the repository's models.

Conventions of the released code kept on purpose:
- SwitchNorm params are (1, C, 1, 1), running buffers (1, C, 1), both buffers start at 0.
- momentum=0.997 means running = momentum * running + (1 - momentum) * batch_statistic.
- IN variance is the *unbiased* variance over H*W.
- Norm layers are named sn1/sn2/sn3 (and sn_out in v2), the dropout is named `drouput`.
Pooling is adaptive (the original used AvgPool2d(7)) so that small inputs work.
"""
import math

import torch
import torch.nn as nn


class SwitchNorm(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.997, using_moving_average=True,
                 using_bn=True, last_gamma=False):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.using_moving_average = using_moving_average
        self.using_bn = using_bn
        self.last_gamma = last_gamma
        self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        if self.using_bn:
            self.mean_weight = nn.Parameter(torch.ones(3))
            self.var_weight = nn.Parameter(torch.ones(3))
            self.register_buffer("running_mean", torch.zeros(1, num_features, 1))
            self.register_buffer("running_var", torch.zeros(1, num_features, 1))
        else:
            self.mean_weight = nn.Parameter(torch.ones(2))
            self.var_weight = nn.Parameter(torch.ones(2))
        self.reset_parameters()

    def reset_parameters(self):
        if self.using_bn:
            self.running_mean.zero_()
            self.running_var.zero_()
        if self.last_gamma:
            self.weight.data.fill_(0)
        else:
            self.weight.data.fill_(1)
        self.bias.data.zero_()

    def forward(self, x):
        N, C, H, W = x.size()
        x = x.view(N, C, -1)
        mean_in = x.mean(-1, keepdim=True)
        var_in = x.var(-1, keepdim=True)  # unbiased, as torch.Tensor.var's default

        mean_ln = mean_in.mean(1, keepdim=True)
        temp = var_in + mean_in ** 2
        var_ln = temp.mean(1, keepdim=True) - mean_ln ** 2

        if self.using_bn:
            if self.training:
                mean_bn = mean_in.mean(0, keepdim=True)
                var_bn = temp.mean(0, keepdim=True) - mean_bn ** 2
                if self.using_moving_average:
                    with torch.no_grad():
                        self.running_mean.mul_(self.momentum)
                        self.running_mean.add_((1 - self.momentum) * mean_bn.detach())
                        self.running_var.mul_(self.momentum)
                        self.running_var.add_((1 - self.momentum) * var_bn.detach())
            else:
                mean_bn = self.running_mean
                var_bn = self.running_var

        softmax = nn.Softmax(0)
        mean_weight = softmax(self.mean_weight)
        var_weight = softmax(self.var_weight)

        if self.using_bn:
            mean = mean_weight[0] * mean_in + mean_weight[1] * mean_ln + mean_weight[2] * mean_bn
            var = var_weight[0] * var_in + var_weight[1] * var_ln + var_weight[2] * var_bn
        else:
            mean = mean_weight[0] * mean_in + mean_weight[1] * mean_ln
            var = var_weight[0] * var_in + var_weight[1] * var_ln

        x = (x - mean) / (var + self.eps).sqrt()
        x = x.view(N, C, H, W)
        return x * self.weight + self.bias


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


# --------------------------------------------------------------------------- ResNet v1 (SN)

class BasicBlockV1(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, using_moving_average=True,
                 using_bn=True, last_gamma=False):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.sn1 = SwitchNorm(planes, using_moving_average=using_moving_average, using_bn=using_bn)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.sn2 = SwitchNorm(planes, using_moving_average=using_moving_average, using_bn=using_bn,
                              last_gamma=last_gamma)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.conv1(x)
        out = self.sn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.sn2(out)
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        out = self.relu(out)
        return out


class BottleneckV1(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, using_moving_average=True,
                 using_bn=True, last_gamma=False):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.sn1 = SwitchNorm(planes, using_moving_average=using_moving_average, using_bn=using_bn)
        self.conv2 = conv3x3(planes, planes, stride)
        self.sn2 = SwitchNorm(planes, using_moving_average=using_moving_average, using_bn=using_bn)
        self.conv3 = conv1x1(planes, planes * 4)
        self.sn3 = SwitchNorm(planes * 4, using_moving_average=using_moving_average, using_bn=using_bn,
                              last_gamma=last_gamma)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.relu(self.sn1(self.conv1(x)))
        out = self.relu(self.sn2(self.conv2(out)))
        out = self.sn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        out = self.relu(out)
        return out


class ResNetV1SN(nn.Module):
    def __init__(self, block, layers, num_classes=1000, using_moving_average=True, using_bn=True,
                 last_gamma=False):
        self.inplanes = 64
        self.using_moving_average = using_moving_average
        self.using_bn = using_bn
        self.last_gamma = last_gamma
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.sn1 = SwitchNorm(64, using_moving_average=using_moving_average, using_bn=using_bn)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.drouput = nn.Dropout(0.5)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                SwitchNorm(planes * block.expansion, using_moving_average=self.using_moving_average,
                           using_bn=self.using_bn),
            )
        layers = [block(self.inplanes, planes, stride, downsample, using_moving_average=self.using_moving_average,
                        using_bn=self.using_bn, last_gamma=self.last_gamma)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, using_moving_average=self.using_moving_average,
                                using_bn=self.using_bn, last_gamma=self.last_gamma))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.sn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        x = self.drouput(x)
        x = self.fc(x)
        return x


# --------------------------------------------------------------------------- ResNet v2 (SN, pre-activation)

class BasicBlockV2(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, using_moving_average=True,
                 using_bn=True):
        super().__init__()
        self.sn1 = SwitchNorm(inplanes, using_moving_average=using_moving_average, using_bn=using_bn)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.sn2 = SwitchNorm(planes, using_moving_average=using_moving_average, using_bn=using_bn)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out_preact = self.relu(self.sn1(x))
        out = self.conv1(out_preact)
        out = self.sn2(out)
        out = self.relu(out)
        out = self.conv2(out)
        if self.downsample is not None:
            residual = self.downsample(out_preact)
        out += residual
        return out


class BottleneckV2(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, using_moving_average=True,
                 using_bn=True):
        super().__init__()
        self.sn1 = SwitchNorm(inplanes, using_moving_average=using_moving_average, using_bn=using_bn)
        self.conv1 = conv1x1(inplanes, planes)
        self.sn2 = SwitchNorm(planes, using_moving_average=using_moving_average, using_bn=using_bn)
        self.conv2 = conv3x3(planes, planes, stride)
        self.sn3 = SwitchNorm(planes, using_moving_average=using_moving_average, using_bn=using_bn)
        self.conv3 = conv1x1(planes, planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out_preact = self.relu(self.sn1(x))
        out = self.conv1(out_preact)
        out = self.relu(self.sn2(out))
        out = self.conv2(out)
        out = self.relu(self.sn3(out))
        out = self.conv3(out)
        if self.downsample is not None:
            residual = self.downsample(out_preact)
        out += residual
        return out


class ResNetV2SN(nn.Module):
    def __init__(self, block, layers, num_classes=1000, using_moving_average=True, using_bn=True):
        self.inplanes = 64
        self.using_moving_average = using_moving_average
        self.using_bn = using_bn
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.sn1 = SwitchNorm(64, using_moving_average=using_moving_average, using_bn=using_bn)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.sn_out = SwitchNorm(512 * block.expansion, using_moving_average=using_moving_average,
                                 using_bn=using_bn)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.drouput = nn.Dropout(0.5)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride,
                                   bias=False)
        layers = [block(self.inplanes, planes, stride, downsample, using_moving_average=self.using_moving_average,
                        using_bn=self.using_bn)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, using_moving_average=self.using_moving_average,
                                using_bn=self.using_bn))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.sn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.sn_out(x)
        x = self.relu(x)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        x = self.drouput(x)
        x = self.fc(x)
        return x


_LAYERS = {18: (BasicBlockV1, BasicBlockV2, [2, 2, 2, 2]), 34: (BasicBlockV1, BasicBlockV2, [3, 4, 6, 3]),
           50: (BottleneckV1, BottleneckV2, [3, 4, 6, 3]), 101: (BottleneckV1, BottleneckV2, [3, 4, 23, 3]),
           152: (BottleneckV1, BottleneckV2, [3, 8, 36, 3])}


def released_resnet(variant, depth, num_classes=1000, using_moving_average=True, using_bn=True):
    """resnet{depth}v1sn / resnet{depth}v2sn as in the released code."""
    v1_block, v2_block, layers = _LAYERS[depth]
    if variant == "v1":
        return ResNetV1SN(v1_block, layers, num_classes, using_moving_average, using_bn)
    if variant == "v2":
        return ResNetV2SN(v2_block, layers, num_classes, using_moving_average, using_bn)
    raise ValueError(variant)
