"""A researcher's own models, as the source of a file the tests write (model specs
``FILE.py:Net``, ``FILE.py:plain``, ``FILE.py:TwoHeads``, ``FILE.py:Heads``)."""

NET_PY = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, width=8):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))

def plain(width=3):  # takes neither in_channels nor num_classes
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(width))

class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        f = self.conv(x).relu().mean((2, 3))
        return {"features": f, "logits": self.fc(f)}


class Heads(Net):
    def forward(self, x):
        return {"features": self.pool(self.relu(self.conv(x))).flatten(1),
                "logits": super().forward(x)}
'''
