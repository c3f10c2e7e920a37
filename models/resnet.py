"""ResNet-18/34/50/101/152: v1 (torchvision layout) and v2 (pre-activation), any norm layer."""
import torch.nn as nn

from norms import check_norms

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


def conv(cin, cout, kernel, stride=1):
    """Bias-free conv with "same" padding and He (fan-out) init, as torchvision and the SN authors."""
    layer = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return layer


def conv3x3(cin, cout, stride=1):
    return conv(cin, cout, 3, stride)


def conv1x1(cin, cout, stride=1):
    return conv(cin, cout, 1, stride)


class BasicBlock(nn.Module):
    """v1 basic block: conv-norm-relu-conv-norm, add, relu."""
    expansion = 1

    def __init__(self, cin, planes, stride, norm, zero_init_last):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes, zero_init=zero_init_last)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(conv1x1(cin, planes, stride), norm(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """v1 bottleneck (stride in the 3x3 conv, as torchvision): 1x1-3x3-1x1 convs, each followed by a norm."""
    expansion = 4

    def __init__(self, cin, planes, stride, norm, zero_init_last):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = norm(planes)
        self.conv3 = conv1x1(planes, cout)
        self.bn3 = norm(cout, zero_init=zero_init_last)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv1x1(cin, cout, stride), norm(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class PreActBasicBlock(nn.Module):
    """v2 basic block: norm-relu-conv twice; the projection shortcut sees the pre-activated input."""
    expansion = 1

    def __init__(self, cin, planes, stride, norm, zero_init_last):
        super().__init__()
        self.bn1 = norm(cin)
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn2 = norm(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = conv1x1(cin, planes, stride) if stride != 1 or cin != planes else None
        if zero_init_last:
            nn.init.zeros_(self.conv2.weight)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.downsample is None else self.downsample(pre))


class PreActBottleneck(nn.Module):
    """v2 bottleneck: norm-relu-conv three times (stride in the 3x3 conv)."""
    expansion = 4

    def __init__(self, cin, planes, stride, norm, zero_init_last):
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = norm(cin)
        self.conv1 = conv1x1(cin, planes)
        self.bn2 = norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = norm(planes)
        self.conv3 = conv1x1(planes, cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = conv1x1(cin, cout, stride) if stride != 1 or cin != cout else None
        if zero_init_last:
            nn.init.zeros_(self.conv3.weight)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + (x if self.downsample is None else self.downsample(pre))


BLOCKS = {("v1", "basic"): BasicBlock, ("v1", "bottleneck"): Bottleneck,
          ("v2", "basic"): PreActBasicBlock, ("v2", "bottleneck"): PreActBottleneck}


class ResNet(nn.Module):
    """ResNet whose every norm layer comes from `norm(num_channels, zero_init=False)`.

    v1 with BN has exactly torchvision's state_dict keys. v2 is pre-activation with a final
    norm (`bn_out`) before pooling. zero_init_last makes every residual branch start as zero:
    v1 zeroes the gamma of the branch's last norm; v2 zeroes the branch's last conv (zeroing a
    pre-activation gamma would feed relu(0) to that conv and freeze it). small_stem replaces the
    7x7/2 conv and max-pool by a 3x3/1 conv, for 28-64 px images; width scales every stage
    (64 is the standard network). Pooling is adaptive, so any input size works.
    """

    def __init__(self, depth=50, variant="v1", num_classes=1000, norm=None, dropout=0.0,
                 zero_init_last=False, small_stem=False, width=64, in_channels=3):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if variant not in ("v1", "v2"):
            raise ValueError(f"ResNet variant must be 'v1' or 'v2', got {variant!r}")
        if norm is None:
            raise ValueError("ResNet needs a norm factory: pass norm=norms.build_norm(...)")
        kind, layers = DEPTHS[depth]
        block = BLOCKS[(variant, kind)]
        self.variant = variant
        if small_stem:
            self.conv1 = conv3x3(in_channels, width)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = conv(in_channels, width, 7, stride=2)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        cin = width
        for i, (planes, blocks) in enumerate(zip((width, 2 * width, 4 * width, 8 * width), layers)):
            stages = []
            for j in range(blocks):
                stages.append(block(cin, planes, 2 if i > 0 and j == 0 else 1, norm, zero_init_last))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stages))
        self.bn_out = norm(cin) if variant == "v2" else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)
        check_norms(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.bn_out is not None:
            x = self.relu(self.bn_out(x))
        x = self.avgpool(x).flatten(1)
        return self.fc(self.dropout(x))
